"""The train split as TRL's trainers read it: conversational prompts with their image."""

from __future__ import annotations

from pathlib import Path

from medr1.data.records import Record
from medr1.task.prompts import target_completion
from medr1.task.spec import TaskSpec
from medr1.train.image_copies import uncompressed_copies


def grpo_dataset(records: list[Record], image_root: Path, task: TaskSpec, fast_copies: Path | None = None):
    """Conversational prompts (asked as `task` says) with their image and gold letter, as GRPOTrainer reads them.

    The trainer decodes a row's image each time it samples the row, num_generations times a
    step. With `fast_copies`, a folder, and a split whose distinct images take at most 1 GiB as
    raw pixels, the images are read from uncompressed TIFF copies written there: the same pixels,
    decoded about 6x faster than the PNGs.
    """
    from datasets import Dataset, Image

    paths = [str(image_root / r.image) for r in records]
    if fast_copies is not None:
        paths = uncompressed_copies(paths, fast_copies)
    rows = {
        "prompt": [task.messages(r.question, r.options) for r in records],
        "image": paths,
        "answer": [r.answer for r in records],
        "letters": ["".join(r.options) for r in records],
    }
    dataset = Dataset.from_dict(rows)
    return dataset.cast_column("image", Image())


def sft_dataset(records: list[Record], image_root: Path, task: TaskSpec):
    """Prompt-completion pairs (asked as `task` says) with their image, as SFTTrainer reads them (loss on the
    completion only)."""
    from datasets import Dataset, Image

    rows = {
        "prompt": [task.messages(r.question, r.options) for r in records],
        "completion": [[{"role": "assistant", "content": target_completion(r.answer, task.mode)}] for r in records],
        "image": [str(image_root / r.image) for r in records],
    }
    return Dataset.from_dict(rows).cast_column("image", Image())
