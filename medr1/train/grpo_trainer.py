"""TRL's GRPOTrainer at the cost of its distinct work: each distinct prompt of a step is prepared
once (medr1/train/distinct_prompts.py), each distinct image is encoded once per forward
(medr1/train/distinct_images.py), in the policy, old-policy, reference and generation passes, and
each distinct prompt runs through the language model once per log-probability pass and once in
generation's prefill, its completions continuing from its key-value cache
(medr1/train/shared_prompts.py). On the CPU, the log-probability passes score only the completion
positions, as TRL's fused LM head does where Triton runs (medr1/train/lm_head.py).

Losses, log-probabilities and gradients are TRL's to float tolerance (tests/test_grpo_trainer.py).
The speed-up replaces other libraries' objects (the trainer's processor, the backbone's forward, hooks
on the vision tower, TRL's LM-head switch) only while one of the two overridden methods runs, and puts
every one back when it returns (`DistinctWork`), so nothing is left behind between steps or after
training. In a distributed run every rank makes the same module calls whatever its batch holds (ZeRO-3
gathers parameters at each call; tests/test_collective_calls.py).

The subclass overrides two methods of TRL's and relies on how TRL's own methods call the processor and
the model; `TRL_SOURCES` pins those methods' source. `grpo_trainer_class()` checks the installed TRL and
transformers against what it was built for and, outside that, trains with TRL's own GRPOTrainer.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from contextlib import ExitStack, contextmanager

from trl import GRPOTrainer

from medr1.train.distinct_images import encode_each_image_once
from medr1.train.distinct_prompts import StepPictures, prompts_prepared_once, share_identical_images
from medr1.train.lm_head import TRL_FUNCTIONS, completion_positions_scored
from medr1.train.shared_prompts import share_prompts

# What the subclass was built and checked against; pyproject.toml and constraints.txt pin the same.
TRL_VERSION = "1.16.0"
TRANSFORMERS_VERSION = "5.24.0"
# sha256 of the source of each GRPOTrainer method this subclass overrides or depends on:
#   _generate_and_score_completions: overridden, runs TRL's with prompts_prepared_once
#   _generate: deep-copies the prompts (shared images stay shared) and tokenizes them
#   _tokenize_prompts: processing_class.apply_chat_template(tokenize=True, return_dict=True)
#   _get_per_token_logps_and_entropies: overridden, runs TRL's with the prompt length set; TRL's calls
#     model(input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids), rows = prompt + completion
TRL_SOURCES = {
    "_generate_and_score_completions": "1fa48922792dcd5c72da155cfe99db477771a7c61cde15519fe8c86d0cdc0b65",
    "_generate": "2a27fdf8f5e6f3562508eec3efb9e9dade2e0bf810de5031cdfab429d0a048f2",
    "_tokenize_prompts": "d2d27f7c9bfda85f1c3225785fa2f09466c428803be6afa8a6c46290f7171a15",
    "_get_per_token_logps_and_entropies": "ea73c3909275851d0cd664b1e7694905fdcd9c285e848ae923d7402234f2edce",
}


class DistinctWorkGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose steps prepare each distinct prompt once, encode each distinct image once per
    forward, and run each distinct prompt through the language model once per forward; everything
    else is TRL's. Build it through `grpo_trainer_class()`, which checks the installed libraries."""

    def __init__(self, *args, train_dataset=None, **kwargs):
        super().__init__(*args, train_dataset=_undecoded(train_dataset), **kwargs)
        self.distinct_work = DistinctWork(self)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        with self.distinct_work.active() as work, completion_positions_scored(), \
                work.prompt_length(input_ids.size(1) - logits_to_keep):
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              *args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        pictures = StepPictures()  # which of the step's pictures are the same, decided once
        share_identical_images(inputs, pictures)
        with self.distinct_work.active(), prompts_prepared_once(self, pictures):
            return super()._generate_and_score_completions(inputs)


class DistinctWork:
    """What the trainer's distinct work puts into other libraries' objects: hooks on each model's vision
    tower and a `SharedPrompts` forward on its backbone, installed when the first `active()` block opens
    and removed when the last one closes (the scoring method runs inside the generation method)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.shared_prompts: list = []
        self._open = 0
        self._installed: ExitStack | None = None

    @contextmanager
    def active(self):
        if self._open == 0:
            self._installed = self._install()
        self._open += 1
        try:
            yield self
        finally:
            self._open -= 1
            if self._open == 0:
                self._installed.close()
                self._installed, self.shared_prompts = None, []

    @contextmanager
    def prompt_length(self, length: int):
        """The log-probability rows' prompt part is `length` tokens long during the block. Where the policy
        trains with gradient checkpointing (HF then runs no cache in training), its passes run TRL's full
        rows, and so do the reference's and the old policy's (which TRL runs with checkpointing switched
        off): each pass computed the same way, the KL term of a step where policy and reference are equal
        is exactly 0, as TRL's is. A difference in the last bit would not be small there: Adam scales even
        a 1e-8 gradient to a full step. The setting decides (transformers 5's name for it; TRL's GRPOConfig
        switches it on unless told otherwise, train.trl.activation_checkpointing sets it), the
        same on every rank."""
        with ExitStack() as stack:
            if not self.trainer.args.activation_checkpointing:
                for shared in self.shared_prompts:
                    stack.enter_context(shared.prompt_length(length))
            yield

    def _install(self) -> ExitStack:
        stack = ExitStack()
        try:
            for model in (self.trainer.model, self.trainer.ref_model):
                if model is None:
                    continue
                if (hooks := encode_each_image_once(model)) is not None:
                    stack.callback(hooks.remove)
                if (shared := share_prompts(model, hooks)) is not None:
                    self.shared_prompts.append(stack.enter_context(shared.installed()))
        except BaseException:
            stack.close()
            self.shared_prompts = []
            raise
        return stack


def unsupported_libraries() -> str | None:
    """Why the installed TRL or transformers is not what `DistinctWorkGRPOTrainer` was built for (a
    version, or the source of a method it overrides or relies on), or None when it is."""
    import transformers
    import trl

    if trl.__version__ != TRL_VERSION:
        return f"TRL {trl.__version__} is installed and the distinct-work trainer was built for TRL {TRL_VERSION}"
    if transformers.__version__ != TRANSFORMERS_VERSION:
        return (f"transformers {transformers.__version__} is installed and the distinct-work trainer was built for "
                f"transformers {TRANSFORMERS_VERSION}")
    pinned = {**{f"trl.GRPOTrainer.{name}": digest for name, digest in TRL_SOURCES.items()}, **TRL_FUNCTIONS}
    for dotted, digest in pinned.items():
        if _source_digest(dotted) != digest:
            return f"{dotted} is not the source the distinct-work trainer was checked against"
    return None


def _source_digest(dotted: str) -> str:
    """sha256 of the source of `dotted` (module.function, or trl.Class.method)."""
    module, _, name = dotted.rpartition(".")
    try:
        owner = importlib.import_module(module)
    except ImportError:  # trl.GRPOTrainer.<method>: the class is an attribute of the module above
        parent, _, class_name = module.rpartition(".")
        owner = getattr(importlib.import_module(parent), class_name)
    return hashlib.sha256(inspect.getsource(getattr(owner, name)).encode()).hexdigest()


def grpo_trainer_class() -> type[GRPOTrainer]:
    """`DistinctWorkGRPOTrainer` where the installed libraries are the ones it was built for; else TRL's
    own GRPOTrainer (the same training, without the speed-up), saying so in one line."""
    reason = unsupported_libraries()
    if reason is None:
        return DistinctWorkGRPOTrainer
    if int(os.environ.get("RANK", "0")) == 0:  # one line for the run, not one per process
        print(f"[train] {reason}: training with TRL's own GRPOTrainer (same results, slower; pin trl=={TRL_VERSION} "
              f"and transformers=={TRANSFORMERS_VERSION}, as constraints.txt does, for the faster trainer)", flush=True)
    return GRPOTrainer


def _undecoded(dataset):
    """`dataset` with its image column left undecoded: the dataloader would decode a question's image
    for each of its num_generations copies; `share_identical_images` decodes it once a step."""
    from datasets import Dataset, Image

    if isinstance(dataset, Dataset) and isinstance(dataset.features.get("image"), Image):
        return dataset.cast_column("image", Image(decode=False))
    return dataset
