"""The study's cells assembled into cross-modality and cross-task matrices, with gains over the base."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.errors import PipelineError
from medr1.evaluate.metrics import difference

BASE_KEYS = {"modality": "base_per_modality", "question_type": "base_per_question_type"}


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def family_matrix(cells_dir: Path, family: str, groups: list[str], evaluation: dict, steps: int) -> dict:
    """accuracy[trained_on][tested_on] for one family, the base's accuracy per group, and the gains."""
    accuracy = {}
    for trained_on in groups:
        path = cells_dir / family / f"{trained_on}.json"
        if not path.is_file():
            raise PipelineError(f"{path} is missing: run `dvc repro` to train the study's {family} cells")
        cell = json.loads(path.read_text())
        if cell.get("steps") != steps:
            raise PipelineError(f"{path} is from a {cell.get('steps')}-step run, study.max_steps is {steps}: "
                                "run `dvc repro` to retrain the study")
        accuracy[trained_on] = {tested_on: cell["accuracy"][tested_on] for tested_on in groups}
    base = {group: evaluation[BASE_KEYS[family]][group] for group in groups}
    gain = {trained_on: difference(row, base) for trained_on, row in accuracy.items()}
    return {
        "groups": groups,
        "accuracy": accuracy,
        "base": base,
        "gain_over_base": gain,
        "in_domain_average": _mean([accuracy[g][g] for g in groups]),
        "cross_domain_average": _mean([accuracy[a][b] for a in groups for b in groups if a != b]),
        "base_average": _mean(list(base.values())),
    }


def generalization(cells_dir: Path, study, evaluation: dict) -> dict:
    return {
        "steps_per_model": study.max_steps,
        "modality": family_matrix(cells_dir, "modality", list(study.modalities), evaluation, study.max_steps),
        "question_type": family_matrix(cells_dir, "question_type", list(study.question_types), evaluation,
                                       study.max_steps),
    }
