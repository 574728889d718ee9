"""A registered version's README.md: a Hugging Face model card, so that the Hub's card viewer and
`huggingface_hub.ModelCard.load` read a pulled version, with its lineage in prose.

The metadata holds what Hugging Face tools read: `base_model`, `datasets` (each data path with its
dvc.lock md5), `model-index` results (overall and per modality accuracy on the test split), tags
and the recipe. The license is left for the user to set before sharing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CARD = "README.md"
TASK = "visual-question-answering"


def _results(metrics: dict) -> list:
    """model-index results: the accuracy on the test split, overall and per modality."""
    from huggingface_hub import EvalResult

    split = metrics.get("split", "test split")

    def result(value, metric_name: str):
        return EvalResult(task_type=TASK, task_name="Medical VQA", dataset_type="medical-vqa", dataset_name=split,
                          dataset_split="test", metric_type="accuracy", metric_value=value, metric_name=metric_name)

    overall = [result(metrics["accuracy"], "accuracy")] if "accuracy" in metrics else []
    return overall + [result(value, f"accuracy {modality}")
                      for modality, value in sorted(metrics.get("per_modality", {}).items())]


def _results_prose(metrics: dict) -> str:
    if "accuracy" not in metrics:
        return "No evaluation was recorded."
    text = f"Accuracy {metrics['accuracy']:.4f}"
    if "accuracy_ci95" in metrics:
        low, high = metrics["accuracy_ci95"]
        text += f" (95% interval {low:.4f}-{high:.4f})"
    if "base_accuracy" in metrics:
        gain = metrics["accuracy"] - metrics["base_accuracy"]
        text += f"; the base model {metrics['base_accuracy']:.4f}, a gain of {gain:+.4f}"
    where = f"`{metrics['split']}`" if "split" in metrics else "the test split"
    count = f", {metrics['count']} questions" if "count" in metrics else ""
    return f"On {where}{count}: {text}. Per modality: the metadata above (`model-index`)."


def model_card(name: str, lineage: dict) -> str:
    """The card text for a version of `name` registered with `lineage` (see stages/register.py)."""
    from huggingface_hub import ModelCard, ModelCardData

    metrics, base, params = lineage.get("metrics", {}), lineage["base_model"], lineage["params"]
    train, git = params.get("train", {}), lineage.get("git", {})
    recipe = lineage.get("recipe") or {"name": params.get("recipe"), "changed": None}
    changed = recipe.get("changed")
    as_applied = ("as applied" if changed == [] else f"then changed: {', '.join(changed)}" if changed
                  else "its file is not in this checkout")
    card_data = ModelCardData(
        model_name=name,
        base_model=base.get("path"),
        datasets=[f"{entry['path']}@md5:{entry['md5']}" for entry in lineage.get("data", [])],
        tags=["medical-vqa", "grpo", "med-r1", "vision-language"],
        pipeline_tag="image-text-to-text",
        library_name="transformers",
        eval_results=_results(metrics) or None,
        recipe=recipe.get("name"),
        recipe_changes=recipe.get("changed"),
    )
    data_lines = "\n".join(f"  - `{entry['path']}` md5 `{entry['md5']}` (stage {entry['stage']})"
                           for entry in lineage.get("data", []))
    dirty = " (with uncommitted changes)" if git.get("dirty") else ""
    text = f"""---
{card_data.to_yaml()}
# license: set the license of your model here before sharing it
---

# {name}

A vision-language model trained for medical visual question answering with GRPO and rule-based
rewards (answer format and correctness), as Med-R1 does, by the Med-R1 pipeline.

## Lineage

- Base model: {base.get("kind")} `{base.get("path")}`, sha256 `{base.get("sha256")}`.
- Recipe: `{recipe.get("name")}`, {as_applied}.
- Reasoning layout `{train.get("reasoning")}`, prompts `{train.get("prompts")}`, rewards `{train.get("rewards")}`;
  every param is in the version's manifest (`medr1 audit model`).
- Code: git commit `{git.get("commit")}`{dirty}.
- Data (dvc.lock):
{data_lines}

## Results

{_results_prose(metrics)}
"""
    ModelCard(text)  # parses the metadata as the Hub does: a card that would not load is not registered
    return text


@contextmanager
def with_card(model_dir: Path, text: str):
    """A folder holding `model_dir`'s files (hard links where the file system allows) and the card,
    beside `model_dir` and removed afterwards; `model_dir` itself, a DVC output, stays as it is."""
    with tempfile.TemporaryDirectory(dir=model_dir.parent, prefix=f".{model_dir.name}-card-") as folder:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file() and path.relative_to(model_dir).as_posix() != CARD:
                target = Path(folder) / path.relative_to(model_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, target)
                except OSError:
                    shutil.copy2(path, target)
        (Path(folder) / CARD).write_text(text)
        yield Path(folder)
