"""params.yaml keys that an earlier version of the pipeline wrote elsewhere: the one table that
`medr1 recipe apply` migrates an old params.yaml by, and that loading an unmigrated one names.

Every TRL-named setting now lives in the typed pass-through (train.trl for GRPOConfig, sft.trl for
SFTConfig) under its TRL name; study.gpus went away when the study's placement became Prefect's.
"""

from __future__ import annotations

_TRAIN_TRL = ("max_steps", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
              "num_generations", "temperature", "beta", "num_iterations", "epsilon", "max_completion_length",
              "reward_weights", "logging_steps", "seed", "use_vllm", "vllm_mode")
_SFT_TRL = ("max_steps", "learning_rate", "per_device_train_batch_size", "logging_steps", "seed")

# old dotted key -> its new dotted key, or None where the setting is gone (the reason in REMOVED)
MOVED: dict[str, str | None] = {
    **{f"train.{name}": f"train.trl.{name}" for name in _TRAIN_TRL},
    "train.checkpoint_steps": "train.trl.save_steps",
    "train.gradient_checkpointing": "train.trl.activation_checkpointing",  # transformers 5's name (the old one warns)
    **{f"sft.{name}": f"sft.trl.{name}" for name in _SFT_TRL},
    "study.gpus": None,
}
REMOVED = {"study.gpus": "placement is now one Prefect worker per GPU (README, The study on many GPUs)"}


def _node(tree: dict, dotted: str) -> tuple[dict | None, str]:
    """The mapping that holds `dotted`'s last part (None where a parent is missing), and that part."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None, leaf
    return (node if isinstance(node, dict) else None), leaf


def old_keys(tree: dict) -> list[str]:
    """The keys of `tree` (a params mapping) that MOVED lists."""
    found = []
    for old in MOVED:
        node, leaf = _node(tree, old)
        if node is not None and leaf in node:
            found.append(old)
    return found


def describe(old: str) -> str:
    """One line of what became of `old`: "train.learning_rate -> train.trl.learning_rate"."""
    new = MOVED[old]
    return f"{old} -> {new}" if new is not None else f"{old} removed: {REMOVED[old]}"


def migrate(tree: dict) -> list[str]:
    """Move every old key of `tree` (a params mapping, a ruamel round-trip document included: the end-of-line
    comment goes along) to its new place, in place; return one line per key (`describe`). A key set at both
    places is refused, naming both: which value is meant cannot be told."""
    lines = []
    for old in old_keys(tree):
        node, leaf = _node(tree, old)
        new = MOVED[old]
        if new is not None:
            *parents, new_leaf = new.split(".")
            target = tree
            for part in parents:
                if not isinstance(target.get(part), dict):
                    target[part] = {}
                target = target[part]
            if new_leaf in target:
                raise ValueError(f"{old} and {new} are both set: {new} is the setting now; remove {old}")
            target[new_leaf] = node[leaf]
            comment = getattr(node, "ca", None) and node.ca.items.get(leaf)
            if comment is not None and hasattr(target, "ca"):
                target.ca.items[new_leaf] = comment
        if hasattr(node, "ca"):
            node.ca.items.pop(leaf, None)
        del node[leaf]
        lines.append(describe(old))
    return lines
