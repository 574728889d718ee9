"""Graded predictions and what metrics/eval.json reports about them."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from medr1.data.records import UNKNOWN, Record, family_of
from medr1.evaluate.paired import bootstrap_mean_interval
from medr1.task.spec import TaskSpec

NO_ANSWER = "none"  # the confusion matrix's column for completions without a readable letter
# A model whose outputs the protocol cannot read this often is flagged: its accuracy is then at most
# 1 - 0.9 = 0.1, below a uniform guess on any question (six options at most: 1/6), so the number says how
# seldom the model wrote the form the protocol reads, not how well it answers (e.g. Med-R1's SFT target
# "None\n\n<answer> C </answer>" under its no-think grading, which wants the bare letter).
UNREADABLE_FLAG_SHARE = 0.9


@dataclass(frozen=True)
class Prediction:
    question_id: str
    dataset: str
    modality: str
    question_type: str
    answer: str
    predicted: str | None  # what the grading read as the answer (None: nothing readable)
    completion: str
    well_formed: bool | None  # None: a zero-shot prompt, which asks for no format
    correct: bool
    readable: bool  # the protocol could read an answer in it (medr1.task.grading)


def grade(record: Record, completion: str, task: TaskSpec) -> Prediction:
    """One record's completion, graded under the task's protocol, its format judged by the task's rewards."""
    graded = task.grade(completion, record.answer, "".join(record.options))
    return Prediction(
        question_id=record.question_id,
        dataset=record.dataset,
        modality=record.modality,
        question_type=record.question_type,
        answer=record.answer,
        predicted=graded.extracted,
        completion=completion,
        well_formed=graded.well_formed,
        correct=graded.correct,
        readable=graded.readable,
    )


def accuracy(predictions: list[Prediction]) -> float:
    return sum(p.correct for p in predictions) / len(predictions) if predictions else 0.0


def chance_accuracy(records: list[Record]) -> float:
    return sum(1 / len(r.options) for r in records) / len(records) if records else 0.0


def bootstrap_interval(predictions: list[Prediction], resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the accuracy (questions resampled with replacement): the paired
    statistics' one bootstrap (medr1/evaluate/paired.py), over one model's 0/1 answers."""
    return list(bootstrap_mean_interval([1 if p.correct else 0 for p in predictions], resamples, level, seed))


def grouped_accuracy(predictions: list[Prediction], key: str) -> dict[str, float]:
    """Accuracy per value of `key`; questions of unknown modality or question type (Med-R1 split records
    the other family's files do not label) are a group of their own, "unknown", so every question counts."""
    groups: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        groups[getattr(prediction, key)].append(prediction)
    return {name: round(accuracy(group), 4) for name, group in sorted(groups.items())}


def training_group_accuracy(predictions: list[Prediction], group: str) -> dict:
    """Accuracy on the test questions of the group a model was trained on (train.group) and on all the
    others together: how far what it learnt carries beyond its own group."""
    family = family_of(group)
    inside = [p for p in predictions if getattr(p, family) == group]
    outside = [p for p in predictions if getattr(p, family) != group]
    return {"in_group_accuracy": round(accuracy(inside), 4), "in_group_count": len(inside),
            "other_groups_accuracy": round(accuracy(outside), 4), "other_groups_count": len(outside)}


def modality_by_question_type(predictions: list[Prediction]) -> dict[str, dict[str, float]]:
    """Accuracy of every (modality, question type) cell that has questions."""
    cells: dict[str, dict[str, list[Prediction]]] = defaultdict(lambda: defaultdict(list))
    for prediction in predictions:
        cells[prediction.modality][prediction.question_type].append(prediction)
    return {modality: {kind: round(accuracy(group), 4) for kind, group in sorted(row.items())}
            for modality, row in sorted(cells.items())}


def letter_confusion(predictions: list[Prediction]) -> dict[str, dict[str, int]]:
    """Counts of gold letter -> predicted letter (or "none")."""
    counts = Counter((p.answer, p.predicted if p.readable else NO_ANSWER) for p in predictions)
    confusion: dict[str, dict[str, int]] = defaultdict(dict)
    for (gold, predicted), count in sorted(counts.items()):
        confusion[gold][predicted] = count
    return dict(confusion)


def format_rate(predictions: list[Prediction]) -> float | None:
    """Share of well-formed completions; None when no prompt asked for a format (zero-shot)."""
    judged = [p.well_formed for p in predictions if p.well_formed is not None]
    return round(sum(judged) / len(judged), 4) if judged else None


def unreadable_share(predictions: list[Prediction]) -> float:
    """Share of outputs the grading protocol could not read an answer in."""
    return round(sum(not p.readable for p in predictions) / len(predictions), 4) if predictions else 0.0


def unreadable_note(model: str, protocol: str | None, mode: str) -> str:
    """Why a flagged model's accuracy says little about its answers (`model` as the report names it:
    base, SFT, GRPO); for Med-R1's SFT under its no-think grading, where the case is explained."""
    grading = f"the {protocol} grading" if protocol else "the grading protocol"
    note = (f"{model}: {grading} could not read (almost) any of its outputs, so its accuracy measures the "
            "format, not the answers.")
    if model == "SFT" and protocol == "med-r1" and mode == "no_think":
        note += (" Med-R1's SFT target ('None', a blank line, then '<answer> C </answer>') is not the bare letter its "
                 "no-think script compares the output with: see docs/fidelity.md, 'SFT under no-think'.")
    return note


def summarize(predictions: list[Prediction]) -> dict:
    per_modality = grouped_accuracy(predictions, "modality")
    unreadable = unreadable_share(predictions)
    modalities = [value for name, value in per_modality.items() if name != UNKNOWN]  # the paper averages modalities
    return {
        "accuracy": round(accuracy(predictions), 4),
        "unreadable_share": unreadable,
        "mostly_unreadable": bool(predictions) and unreadable >= UNREADABLE_FLAG_SHARE,
        "modality_average": round(sum(modalities) / len(modalities), 4) if modalities else 0.0,
        "accuracy_ci95": bootstrap_interval(predictions),
        "format_rate": format_rate(predictions),
        "per_modality": per_modality,
        "per_question_type": grouped_accuracy(predictions, "question_type"),
        "per_dataset": grouped_accuracy(predictions, "dataset"),
        "per_modality_question_type": modality_by_question_type(predictions),
        "letter_confusion": letter_confusion(predictions),
        "count": len(predictions),
    }


def difference(model: float | dict, base: float | dict) -> float | dict:
    """model - base, key by key through nested accuracy tables (keys missing on one side are left out)."""
    if isinstance(model, dict):
        return {key: difference(model[key], base[key]) for key in model if key in base}
    return round(model - base, 4)


def gain_over_base(model: dict, base: dict) -> dict:
    """How far a model's summary is above the base model's, overall and per group."""
    keys = ("accuracy", "modality_average", "per_modality", "per_question_type", "per_modality_question_type")
    return {key: difference(model[key], base[key]) for key in keys}
