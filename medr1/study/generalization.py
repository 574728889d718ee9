"""The study's cells assembled into cross-modality and cross-task matrices for GRPO and for SFT, with
gains over the base, the in-domain and cross-domain averages the paper compares the methods by, and the
question budget each cell's model trained on."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.errors import PipelineError
from medr1.evaluate.metrics import difference

METHODS = ("grpo", "sft")  # a cell's model is models/study/<family>/<group>/<method>
BASE_KEYS = {"modality": "base_per_modality", "question_type": "base_per_question_type"}
FAMILIES = {"modality": "modalities", "question_type": "question_types"}  # family -> its list in params.study


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def study_settings(study) -> dict:
    """The study params every cell records, so that a cell from other settings is not mixed in."""
    return {"max_steps": study.max_steps, "num_train_epochs": study.num_train_epochs}


def _cells(cells_dir: Path, family: str, groups: list[str], settings: dict) -> dict[str, dict[str, dict]]:
    """cells[trained_on][method], each from metrics/study/<family>/<group>/<method>.json."""
    cells: dict[str, dict[str, dict]] = {}
    for trained_on in groups:
        for method in METHODS:
            path = cells_dir / family / trained_on / f"{method}.json"
            if not path.is_file():
                raise PipelineError(f"{path} is missing: run `dvc repro` to train the study's {family} cells")
            cell = json.loads(path.read_text())
            if cell.get("study") != settings or "budget" not in cell or cell.get("method") != method \
                    or "unreadable_share" not in cell:
                raise PipelineError(f"{path} is from another version of the study (settings {cell.get('study')}; "
                                    f"study params now {settings}): run `dvc repro` to retrain the study")
            cells.setdefault(trained_on, {})[method] = cell
    return cells


def method_matrix(accuracy: dict[str, dict[str, float]], groups: list[str], base: dict[str, float]) -> dict:
    """One method's accuracy[trained_on][tested_on], its gain over the base, and its averages."""
    return {
        "accuracy": accuracy,
        "gain_over_base": {trained_on: difference(row, base) for trained_on, row in accuracy.items()},
        "in_domain_average": _mean([accuracy[g][g] for g in groups]),
        "cross_domain_average": _mean([accuracy[a][b] for a in groups for b in groups if a != b]),
    }


def family_matrix(cells_dir: Path, family: str, groups: list[str], evaluation: dict, settings: dict) -> dict:
    """Both methods' matrices for one family, the base's accuracy per group, and each cell's budget."""
    cells = _cells(cells_dir, family, groups, settings)
    base = {group: evaluation[BASE_KEYS[family]][group] for group in groups}
    matrices = {method: method_matrix({trained_on: {tested_on: cells[trained_on][method]["accuracy"][tested_on]
                                                    for tested_on in groups} for trained_on in groups}, groups, base)
                for method in METHODS}
    budget = {trained_on: {method: cells[trained_on][method]["budget"] for method in METHODS} for trained_on in groups}
    unreadable = {trained_on: {method: cells[trained_on][method]["unreadable_share"] for method in METHODS}
                  for trained_on in groups}
    return {"groups": groups, "base": base, "base_average": _mean(list(base.values())), **matrices, "budget": budget,
            "unreadable_share": unreadable,
            "mostly_unreadable": sorted(f"{method} trained on {trained_on}" for trained_on in groups
                                        for method in METHODS if cells[trained_on][method]["mostly_unreadable"])}


def schedule(families: dict[str, dict], settings: dict) -> dict[str, str]:
    """Each method's training per model in words: "40 steps" (one number for every cell) or "1 epoch"."""
    if settings["max_steps"] == -1:
        epochs = settings["num_train_epochs"]
        return dict.fromkeys(METHODS, f"{epochs} epoch{'s' if epochs > 1 else ''}")
    words = {}
    for method in METHODS:
        steps = {cell[method]["steps"] for matrix in families.values() for cell in matrix["budget"].values()}
        if len(steps) != 1:
            raise PipelineError(f"the study's {method} cells trained for different numbers of steps ({sorted(steps)})"
                                ": run `dvc repro` to retrain the study")
        count = steps.pop()
        words[method] = f"{count} step{'s' if count != 1 else ''}"
    return words


def generalization(cells_dir: Path, study, evaluation: dict) -> dict:
    """The matrices of each family the study lists groups of (the paper's cross-modality study lists no
    question type, its cross-task study no modality); every cell must come from the current study settings."""
    settings = study_settings(study)
    families = {family: family_matrix(cells_dir, family, list(getattr(study, groups)), evaluation, settings)
                for family, groups in FAMILIES.items() if getattr(study, groups)}
    return {"study": settings, "schedule": schedule(families, settings) if families else {}, **families}
