"""The study's cells assembled into cross-modality and cross-task matrices for GRPO and for SFT, with
gains over the base and the in-domain and cross-domain averages the paper compares the methods by."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.errors import PipelineError
from medr1.evaluate.metrics import difference

METHODS = ("grpo", "sft")  # a cell's models, each in models/study/<family>/<group>/<method>
BASE_KEYS = {"modality": "base_per_modality", "question_type": "base_per_question_type"}


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def _cells(cells_dir: Path, family: str, groups: list[str], steps: int) -> dict[str, dict]:
    cells = {}
    for trained_on in groups:
        path = cells_dir / family / f"{trained_on}.json"
        if not path.is_file():
            raise PipelineError(f"{path} is missing: run `dvc repro` to train the study's {family} cells")
        cell = json.loads(path.read_text())
        if cell.get("steps") != steps or not set(METHODS) <= set(cell.get("accuracy", {})):
            raise PipelineError(f"{path} is from another version of the study ({cell.get('steps')} GRPO steps, models "
                                f"{sorted(cell.get('accuracy', {}))}; study.max_steps is {steps}, models "
                                f"{list(METHODS)}): run `dvc repro` to retrain the study")
        cells[trained_on] = cell
    return cells


def method_matrix(accuracy: dict[str, dict[str, float]], groups: list[str], base: dict[str, float]) -> dict:
    """One method's accuracy[trained_on][tested_on], its gain over the base, and its averages."""
    return {
        "accuracy": accuracy,
        "gain_over_base": {trained_on: difference(row, base) for trained_on, row in accuracy.items()},
        "in_domain_average": _mean([accuracy[g][g] for g in groups]),
        "cross_domain_average": _mean([accuracy[a][b] for a in groups for b in groups if a != b]),
    }


def family_matrix(cells_dir: Path, family: str, groups: list[str], evaluation: dict, steps: int) -> dict:
    """Both methods' matrices for one family, and the base's accuracy per group."""
    cells = _cells(cells_dir, family, groups, steps)
    base = {group: evaluation[BASE_KEYS[family]][group] for group in groups}
    matrices = {method: method_matrix({trained_on: {tested_on: cells[trained_on]["accuracy"][method][tested_on]
                                                    for tested_on in groups} for trained_on in groups}, groups, base)
                for method in METHODS}
    return {"groups": groups, "base": base, "base_average": _mean(list(base.values())),
            "sft_steps": sorted({cell.get("sft_steps") for cell in cells.values()}, key=str), **matrices}


def generalization(cells_dir: Path, study, evaluation: dict) -> dict:
    """Both families' matrices; every cell must come from the current study settings."""
    families = {family: family_matrix(cells_dir, family, list(getattr(study, groups)), evaluation, study.max_steps)
                for family, groups in (("modality", "modalities"), ("question_type", "question_types"))}
    sft_steps = {steps for matrix in families.values() for steps in matrix.pop("sft_steps")}
    if len(sft_steps) != 1:
        raise PipelineError("the study's cells trained SFT for different numbers of steps "
                            f"({sorted(sft_steps, key=str)})"
                            ": run `dvc repro` to retrain the study")
    return {"steps_per_model": study.max_steps, "sft_steps_per_model": sft_steps.pop(), **families}
