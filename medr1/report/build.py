"""The evaluation report's content from metrics/*.json: the headline, per-group tables, the study's
matrices, the answer-letter confusion and the figures (rendered by medr1/report/render.py).

Every number in a table is a `Sourced` value: read from a metrics file by its key path and
printed as stored, so the report cannot drift from metrics/*.json.
"""

from __future__ import annotations

from pathlib import Path

from medr1.data.records import MODALITIES, QUESTION_TYPES, UNKNOWN
from medr1.errors import PipelineError
from medr1.report.content import Cell, Figure, Metrics, Report, Table
from medr1.report.figures import heatmap, heatmaps
from medr1.study.generalization import METHODS

MODEL_PREFIXES = {"base": "base_", "SFT": "sft_", "GRPO": ""}  # row label -> key prefix in eval.json
METHOD_LABELS = {"grpo": "GRPO", "sft": "SFT"}
REQUIRED = ("accuracy", "base_accuracy", "per_modality", "per_question_type", "per_modality_question_type",
            "gain_over_base", "letter_confusion", "per_dataset", "chance_accuracy")


def _ordered(names, vocabulary: tuple[str, ...]) -> list[str]:
    """The vocabulary's order, then any other name, then UNKNOWN last."""
    return ([name for name in vocabulary if name in names] + sorted(set(names) - set(vocabulary) - {UNKNOWN})
            + [UNKNOWN] * (UNKNOWN in names))


def _models(metrics: Metrics) -> list[tuple[str, str]]:
    return [(label, prefix) for label, prefix in MODEL_PREFIXES.items()
            if metrics.has("eval.json", f"{prefix}accuracy")]


def _format_rate(metrics: Metrics, prefix: str):
    """The model's format rate, or "-" for a model asked with Med-R1's zero-shot prompt (no format)."""
    return metrics("eval.json", f"{prefix}format_rate") if metrics.number("eval.json", f"{prefix}format_rate") else "-"


def headline(metrics: Metrics, mode: str) -> Table:
    rows = []
    for label, prefix in _models(metrics):
        gain = metrics("eval.json", f"{prefix}gain_over_base", "accuracy") if prefix != "base_" else "-"
        rows.append([label if label == "base" else f"{label} ({mode})", metrics("eval.json", f"{prefix}accuracy"),
                     metrics("eval.json", f"{prefix}accuracy_ci95", "0"),
                     metrics("eval.json", f"{prefix}accuracy_ci95", "1"),
                     _format_rate(metrics, prefix), gain])
    rows.append(["chance (uniform guess)", metrics("eval.json", "chance_accuracy"), "-", "-", "-", "-"])
    return Table("Accuracy on the held-out test split", ["model", "accuracy", "95% CI low", "95% CI high",
                                                          "format rate", "gain over base"], rows,
                 "95% intervals: percentile bootstrap over questions, 1,000 resamples.")


def per_group(metrics: Metrics, key: str, vocabulary: tuple[str, ...], title: str, average: str | None) -> Table:
    groups = _ordered(metrics.files["eval.json"][key], vocabulary)
    rows = []
    for label, prefix in _models(metrics):
        row: list[Cell] = [label] + [metrics("eval.json", f"{prefix}{key}", group) for group in groups]
        if average:
            row.append(metrics("eval.json", f"{prefix}{average}"))
        rows.append(row)
    note = (f"{UNKNOWN}: test questions whose {key.removeprefix('per_').replace('_', ' ')} Med-R1's split files do "
            "not give (in no file of that family); counted in the accuracy"
            + (", not in the average." if average else ".")) if vocabulary and UNKNOWN in groups else ""
    return Table(title, ["model", *groups] + (["average"] if average else []), rows, note)


def matrix_table(metrics: Metrics, family: str, title: str) -> Table:
    """GRPO's and SFT's matrices side by side: one row per training group, each method's test groups."""
    groups = metrics.files["generalization.json"][family]["groups"]
    rows: list[list[Cell]] = [["base (no training)"]
                              + [metrics("generalization.json", family, "base", g) for g in groups] * len(METHODS)]
    for trained_on in groups:
        rows.append([f"trained on {trained_on}"]
                    + [metrics("generalization.json", family, method, "accuracy", trained_on, g)
                       for method in METHODS for g in groups])
    columns = [f"{METHOD_LABELS[method]}: {g}" for method in METHODS for g in groups]
    return Table(title, ["trained on \\ tested on", *columns], rows,
                 "Rows: the group the models were trained on; columns: each method's model on each group's test "
                 "questions.")


def _averages_table(metrics: Metrics) -> Table:
    study = metrics.files["generalization.json"]
    rows = [[family.replace("_", " "), METHOD_LABELS[method],
             metrics("generalization.json", family, method, "in_domain_average"),
             metrics("generalization.json", family, method, "cross_domain_average"),
             metrics("generalization.json", family, "base_average")]
            for family in ("modality", "question_type") for method in METHODS]
    return Table("Generalization at a glance: GRPO against SFT", ["family", "method", "in-domain", "cross-domain",
                                                                  "base"], rows,
                 f"Each model trained on one group ({study['steps_per_model']} GRPO steps, or "
                 f"{study['sft_steps_per_model']} SFT steps on as many questions), tested on its own group "
                 "(in-domain) and on the others (cross-domain): the paper's claim is that GRPO's cross-domain "
                 "accuracy holds up where SFT's does not.")


def confusion_table(metrics: Metrics) -> Table:
    confusion = metrics.files["eval.json"]["letter_confusion"]
    predicted = sorted({p for row in confusion.values() for p in row}, key=lambda p: (p == "none", p))
    rows = [[gold] + [metrics("eval.json", "letter_confusion", gold, p) if p in confusion[gold] else "-"
                      for p in predicted]
            for gold in sorted(confusion)]
    return Table("Answer letters of the GRPO model (rows: gold, columns: predicted)", ["gold \\ predicted", *predicted],
                 rows, "\"none\": no readable letter in the first answer tag; \"-\": never.")


def build_report(files: dict[str, dict], mode: str, figures: Path, train_curve: Path | None) -> Report:
    """The report's content from the metrics files (eval.json, and generalization.json when present)."""
    metrics = Metrics(files)
    evaluation = files["eval.json"]
    missing = [key for key in REQUIRED if key not in evaluation]
    if missing:
        raise PipelineError(f"metrics/eval.json has no {', '.join(missing)}: rerun `dvc repro evaluate` "
                            "(the report needs the base, SFT and GRPO models' metrics)")
    report = Report("Med-R1 evaluation report", [
        f"Reasoning layout: {mode}. Test split: {evaluation.get('split', '?')}.",
        "Every number below is read from metrics/*.json (the file and key are on each cell in the HTML).",
    ])
    modalities = _ordered(evaluation["per_modality"], MODALITIES)
    question_types = _ordered(evaluation["per_question_type"], QUESTION_TYPES)
    report.sections += [
        headline(metrics, mode),
        per_group(metrics, "per_modality", MODALITIES, "Accuracy per modality (the paper's comparison table)",
                  "modality_average"),
        per_group(metrics, "per_question_type", QUESTION_TYPES, "Accuracy per question type", None),
        Figure("GRPO accuracy by modality and question type",
               heatmap(evaluation["per_modality_question_type"], modalities, question_types, "GRPO accuracy",
                       figures / "modality_by_question_type.png", "modality", "question type")),
        Figure("Gain of GRPO over the base model",
               heatmap(evaluation["gain_over_base"]["per_modality_question_type"], modalities, question_types,
                       "GRPO - base (accuracy)", figures / "gain_over_base.png", "modality", "question type",
                       diverging=True)),
    ]
    if "generalization.json" in files:
        study = files["generalization.json"]
        for family, name, title in (("modality", "cross_modality", "Cross-modality generalization"),
                                    ("question_type", "cross_task", "Cross-task generalization")):
            matrix = study[family]
            report.sections += [
                Figure(f"{title}: GRPO beside SFT",
                       heatmaps({f"{METHOD_LABELS[method]}, {steps} steps per model": matrix[method]["accuracy"]
                                 for method, steps in (("grpo", study["steps_per_model"]),
                                                       ("sft", study["sft_steps_per_model"]))},
                                matrix["groups"], matrix["groups"], figures / f"{name}.png", "trained on",
                                "tested on")),
                matrix_table(metrics, family, f"{title} (accuracy)"),
            ]
        report.sections.append(_averages_table(metrics))
    if train_curve is not None and train_curve.is_file():
        report.sections.append(Figure("GRPO training curves (rewards, completion length, KL)", train_curve))
    report.sections += [
        per_group(metrics, "per_dataset", (), "Accuracy per source dataset", None),
        confusion_table(metrics),
    ]
    return report


