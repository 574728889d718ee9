"""Leakage-safe train/test splits: stratified by modality, grouped by image content hash."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from medr1.data.records import MODALITIES, QUESTION_TYPES, UNKNOWN, Record, family_of, write_jsonl
from medr1.errors import PipelineError


def split_by_image(records: list[Record], test_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Every question about one image lands on the same side; each modality keeps the same test share."""
    rng = np.random.default_rng(seed)
    images_by_modality: dict[str, list[str]] = defaultdict(list)
    for record in records:
        if record.image_sha256 not in images_by_modality[record.modality]:
            images_by_modality[record.modality].append(record.image_sha256)
    test_images: set[str] = set()
    for modality in sorted(images_by_modality):
        images = sorted(images_by_modality[modality])
        rng.shuffle(images)
        count = round(len(images) * test_fraction) if len(images) > 1 else 0
        test_images.update(images[:count])
    train = [r for r in records if r.image_sha256 not in test_images]
    test = [r for r in records if r.image_sha256 in test_images]
    return train, test


def write_splits(train: list[Record], test: list[Record], out: Path) -> dict:
    """train/test JSONL overall, per modality and per question type (Med-R1 trains per modality and per task).

    Records whose modality or question type is UNKNOWN are in train/test.jsonl and counted under
    "unknown" (only when there are any, so a source without them keeps its counts as they were), but
    get no per-group file: unknown is no group to train or test a model on.
    """
    counts: dict = {"train": len(train), "test": len(test), "modality": {}, "question_type": {}}
    for side, records in (("train", train), ("test", test)):
        write_jsonl(records, out / f"{side}.jsonl")
        for key, names in (("modality", MODALITIES), ("question_type", QUESTION_TYPES)):
            for name in names:
                subset = [r for r in records if getattr(r, key) == name]
                if subset:
                    write_jsonl(subset, out / "splits" / key / side / f"{name}.jsonl")
                counts[key].setdefault(name, {})[side] = len(subset)
    for key in ("modality", "question_type"):
        unknown = {"train": sum(getattr(r, key) == UNKNOWN for r in train),
                   "test": sum(getattr(r, key) == UNKNOWN for r in test)}
        if any(unknown.values()):
            counts[key][UNKNOWN] = unknown
    return counts


def group_split(data: Path, family: str, side: str, group: str, param: str, check: bool = True) -> Path:
    """`write_splits`' file of one group's `side` questions; with `check`, refused when the data has none,
    naming `param` (the setting that asked for the group)."""
    path = data / "splits" / family / side / f"{group}.jsonl"
    if check and not path.is_file():
        raise PipelineError(f"no {side} questions for {family} {group!r} ({path} is missing): "
                            f"check {param} in params.yaml against the data")
    return path


def train_split(data: Path, group: str | None, check: bool = True) -> Path:
    """The main run's train questions (stages train and sft): every train question pooled when `group` is
    None (train.group: null), else that modality's or question type's file, as Med-R1 trains on one."""
    if group is None:
        return data / "train.jsonl"
    return group_split(data, family_of(group), "train", group, "train.group", check)
