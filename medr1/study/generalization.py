"""The study's cells assembled into cross-modality and cross-task matrices for GRPO and for SFT, with
gains over the base, the in-domain and cross-domain averages the paper compares the methods by, and the
question budget each cell's model trained on.

Every gain over the base carries its paired interval (medr1/evaluate/paired.py): the cell's model against
the base model (reports/predictions/base.jsonl) on the same test questions of the tested-on group. GRPO
against SFT, in-domain and cross-domain, is the difference of the averages the paper compares, with a
paired interval that resamples questions (`method_difference`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medr1.errors import PipelineError
from medr1.evaluate.metrics import difference
from medr1.evaluate.paired import LEVEL, RESAMPLES, SEED, bootstrap_mean_interval, compare_predictions

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
                    or "unreadable_share" not in cell or not isinstance(cell.get("answers"), dict):
                raise PipelineError(f"{path} is from another version of the study (settings {cell.get('study')}; "
                                    f"study params now {settings}): run `dvc repro` to retrain the study")
            cells.setdefault(trained_on, {})[method] = cell
    return cells


def base_answers(predictions: Iterable[dict]) -> dict[str, bool]:
    """question_id -> whether the base model answered it right, from its predictions (the evaluate
    stage's reports/predictions/base.jsonl, read as dicts)."""
    return {row["question_id"]: bool(row["correct"]) for row in predictions}


def _answers(cells: dict[str, dict[str, dict]], family: str, groups: list[str]) -> dict[str, list[str]]:
    """Each tested-on group's question ids, the same in every cell of the family (they all test on the
    same questions; a cell that did not is from other data: rerun)."""
    questions: dict[str, list[str]] = {}
    for trained_on, methods in cells.items():
        for method, cell in methods.items():
            for tested_on in groups:
                ids = cell["answers"].get(tested_on, {}).get("question_ids")
                if ids is None or len(ids) != len(cell["answers"][tested_on]["correct"]):
                    raise PipelineError(f"metrics/study/{family}/{trained_on}/{method}.json holds no answers for "
                                        f"{tested_on}: run `dvc repro` to retrain the study")
                if questions.setdefault(tested_on, ids) != ids:
                    raise PipelineError(f"the study's {family} cells tested on different {tested_on} questions "
                                        f"({family}/{trained_on}/{method} differs): run `dvc repro` to retrain "
                                        "the study")
    return questions


def _correct(cell: dict, tested_on: str) -> list[bool]:
    return [flag == "1" for flag in cell["answers"][tested_on]["correct"]]


def paired_gains(cells: dict[str, dict[str, dict]], method: str, groups: list[str], questions: dict[str, list[str]],
                 base: dict[str, bool], family: str) -> dict[str, dict[str, dict]]:
    """[trained_on][tested_on]: the cell's model against the base model on the tested-on group's questions,
    question by question (paired.compare_predictions' overall comparison: the questions in question_id order,
    so the interval is the one the evaluate stage's comparisons would give)."""
    for tested_on in groups:
        missing = [question for question in questions[tested_on] if question not in base]
        if missing:
            raise PipelineError(f"the base model's predictions (reports/predictions/base.jsonl) have no answer to "
                                f"{len(missing)} of the {family} {tested_on} test questions the study cells answered "
                                f"(e.g. {missing[:3]}): run `dvc repro` so both come from the same test split")

    def compare(cell: dict, tested_on: str) -> dict:
        ids = questions[tested_on]
        return compare_predictions([{"question_id": q, "correct": c} for q, c in zip(ids, _correct(cell, tested_on))],
                                   [{"question_id": q, "correct": base[q]} for q in ids], slices=())["overall"]

    return {trained_on: {tested_on: compare(cells[trained_on][method], tested_on) for tested_on in groups}
            for trained_on in groups}


def method_difference(cells: dict[str, dict[str, dict]], groups: list[str], questions: dict[str, list[str]],
                      cross_domain: bool) -> dict | None:
    """GRPO against SFT on the average the paper compares them by, with a paired interval.

    The compared quantity is the in-domain (cross_domain: False) or cross-domain average exactly as
    method_matrix defines it: the mean over cells (trained_on a, tested_on b; b == a in-domain, b != a
    cross-domain) of the cell's accuracy, each cell weighing alike; GRPO's minus SFT's. It is a mean over
    test questions: question q of group b contributes d(q) = the mean over its cells' trained_on a of
    (GRPO_a right on q) - (SFT_a right on q), weighted by N / (G n_b) (N questions in all, n_b in b, G
    groups tested on), so that the mean of the weighted values over all N questions is
    the difference of the averages. The interval resamples questions (paired.bootstrap_mean_interval):
    a drawn question brings every cell's GRPO and SFT answers to it along, so the answers of the models
    trained on different groups to one question stay together, and the groups' sizes vary from draw to
    draw (with the default's equal group sizes the weights are 1). None when no cell is of that kind (a
    family of one group has no cross-domain cell)."""
    tested = [b for b in groups if questions[b] and any((a != b) == cross_domain for a in groups)]
    if not tested:
        return None
    total = sum(len(questions[b]) for b in tested)
    weighted: dict[str, float] = {}
    for b in tested:
        trained = [a for a in groups if (a != b) == cross_domain]
        per_question = np.mean([np.array(_correct(cells[a]["grpo"], b), dtype=float)
                                - np.array(_correct(cells[a]["sft"], b), dtype=float) for a in trained], axis=0)
        weighted.update(zip(questions[b], per_question * total / (len(tested) * len(questions[b]))))
    if len(weighted) != total:
        raise PipelineError("a question is in two of the study's groups: the groups of a family must not overlap")
    values = np.array([weighted[question] for question in sorted(weighted)])  # question_id order, as paired.py's

    def average(method: str) -> float:
        return float(np.mean([np.mean(_correct(cells[a][method], b)) for b in tested
                              for a in groups if (a != b) == cross_domain]))

    low, high = bootstrap_mean_interval(values, RESAMPLES, LEVEL, SEED)
    return {"grpo_average": round(average("grpo"), 4), "sft_average": round(average("sft"), 4),
            "difference": round(float(values.mean()), 4), "interval": [low, high], "questions": int(total),
            "cells": sum((a != b) == cross_domain for a in groups for b in tested),
            "verdict": "GRPO better" if low > 0 else "SFT better" if high < 0 else "undecided"}


def method_matrix(accuracy: dict[str, dict[str, float]], groups: list[str], base: dict[str, float]) -> dict:
    """One method's accuracy[trained_on][tested_on], its gain over the base, and its averages."""
    return {
        "accuracy": accuracy,
        "gain_over_base": {trained_on: difference(row, base) for trained_on, row in accuracy.items()},
        "in_domain_average": _mean([accuracy[g][g] for g in groups]),
        "cross_domain_average": _mean([accuracy[a][b] for a in groups for b in groups if a != b]),
    }


def _half_widths(gains: dict[str, dict]) -> dict[str, float]:
    """The smallest and largest half-width of the cells' gain intervals: what the study can tell apart."""
    widths = [(gain["interval"][1] - gain["interval"][0]) / 2 for matrix in gains.values()
              for row in matrix.values() for gain in row.values()]
    return {"smallest": round(min(widths), 4), "largest": round(max(widths), 4)}


def family_matrix(cells_dir: Path, family: str, groups: list[str], evaluation: dict, settings: dict,
                  base_correct: dict[str, bool]) -> dict:
    """Both methods' matrices for one family with every gain's paired interval, GRPO against SFT in-domain
    and cross-domain, the base's accuracy per group, and each cell's budget."""
    cells = _cells(cells_dir, family, groups, settings)
    questions = _answers(cells, family, groups)
    base = {group: evaluation[BASE_KEYS[family]][group] for group in groups}
    matrices = {method: method_matrix({trained_on: {tested_on: cells[trained_on][method]["accuracy"][tested_on]
                                                    for tested_on in groups} for trained_on in groups}, groups, base)
                for method in METHODS}
    gains = {method: paired_gains(cells, method, groups, questions, base_correct, family) for method in METHODS}
    for method in METHODS:
        matrices[method]["paired_gain_over_base"] = gains[method]
    comparison = {kind: result for kind, cross in (("in_domain", False), ("cross_domain", True))
                  if (result := method_difference(cells, groups, questions, cross)) is not None}
    budget = {trained_on: {method: cells[trained_on][method]["budget"] for method in METHODS} for trained_on in groups}
    unreadable = {trained_on: {method: cells[trained_on][method]["unreadable_share"] for method in METHODS}
                  for trained_on in groups}
    return {"groups": groups, "base": base, "base_average": _mean(list(base.values())), **matrices,
            "grpo_vs_sft": comparison, "questions": {group: len(questions[group]) for group in groups},
            "interval_half_width": _half_widths(gains), "budget": budget, "unreadable_share": unreadable,
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


def generalization(cells_dir: Path, study, evaluation: dict, base_predictions: Iterable[dict]) -> dict:
    """The matrices of each family the study lists groups of (the paper's cross-modality study lists no
    question type, its cross-task study no modality); every cell must come from the current study settings.
    `base_predictions`: the base model's graded answers to the test split (reports/predictions/base.jsonl),
    which every gain is paired with."""
    settings = study_settings(study)
    correct = base_answers(base_predictions)
    families = {family: family_matrix(cells_dir, family, list(getattr(study, groups)), evaluation, settings, correct)
                for family, groups in FAMILIES.items() if getattr(study, groups)}
    return {"study": settings, "schedule": schedule(families, settings) if families else {}, **families}
