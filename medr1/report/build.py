"""The evaluation report's content from metrics/*.json: the headline, per-group tables, the study's
matrices, what the run can tell apart, the answer-letter confusion and the figures (rendered by
medr1/report/render.py).

Every number in a table is a `Sourced` value: read from a metrics file by its key path and
printed as stored, so the report cannot drift from metrics/*.json. Every gain over the base and every
GRPO-against-SFT difference is an `Interval`: the difference with its 95% paired interval
(medr1/evaluate/paired.py), three Sourced numbers.
"""

from __future__ import annotations

from pathlib import Path

from medr1.data.records import MODALITIES, QUESTION_TYPES, UNKNOWN
from medr1.errors import PipelineError
from medr1.evaluate.metrics import UNREADABLE_FLAG_SHARE, unreadable_note
from medr1.report.content import Cell, Figure, Interval, Metrics, Report, Table
from medr1.report.figures import heatmap, heatmaps
from medr1.study.generalization import METHODS

MODEL_PREFIXES = {"base": "base_", "SFT": "sft_", "GRPO": ""}  # row label -> key prefix in eval.json
METHOD_LABELS = {"grpo": "GRPO", "sft": "SFT"}
REQUIRED = ("accuracy", "base_accuracy", "per_modality", "per_question_type", "per_modality_question_type",
            "gain_over_base", "paired_gain_over_base", "letter_confusion", "per_dataset", "chance_accuracy",
            "unreadable_share")
PAIRED_NOTE = ("Gains and differences: the same test questions answered by both models; [low, high] is the 95% "
               "paired bootstrap interval (questions resampled with replacement, 2,000 resamples; "
               "docs/paired-statistics.md).")
VERDICTS = {"above 0": "supported", "below 0": "contradicted", "holds 0": "undecided"}
FLAG = "format, not answers (see note)"  # beside the accuracy of a model whose outputs the protocol could not read


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


def _flagged(metrics: Metrics, prefix: str) -> bool:
    """The model's outputs were (almost) never in the form the grading reads (evaluate/metrics.py)."""
    return metrics.files["eval.json"].get(f"{prefix}mostly_unreadable") is True


def headline(metrics: Metrics, mode: str) -> Table:
    """Each model's accuracy with the share of outputs the grading could not read; a model whose
    outputs it (almost) never could is flagged beside its accuracy, and the note says why."""
    models = _models(metrics)
    flags = [label for label, prefix in models if _flagged(metrics, prefix)]
    rows = []
    for label, prefix in models:
        gain = metrics.interval("eval.json", f"{prefix}paired_gain_over_base", "overall") if prefix != "base_" else "-"
        flag = [FLAG if label in flags else ""] if flags else []
        rows.append([label if label == "base" else f"{label} ({mode})", metrics("eval.json", f"{prefix}accuracy"),
                     *flag, metrics("eval.json", f"{prefix}unreadable_share"),
                     metrics("eval.json", f"{prefix}accuracy_ci95", "0"),
                     metrics("eval.json", f"{prefix}accuracy_ci95", "1"),
                     _format_rate(metrics, prefix), gain])
    rows.append(["chance (uniform guess)", metrics("eval.json", "chance_accuracy"), *(["-"] if flags else []),
                 "-", "-", "-", "-", "-"])
    protocol = metrics.files["eval.json"].get("protocol")
    notes = ["95% CI of the accuracy: percentile bootstrap over questions, 1,000 resamples.", PAIRED_NOTE,
             "Unreadable outputs: the share in which the grading protocol read no answer (medr1/task/grading.py)."]
    notes += [unreadable_note(label, protocol, mode) for label in flags]
    return Table("Accuracy on the held-out test split",
                 ["model", "accuracy", *(["flag"] if flags else []), "unreadable outputs", "95% CI low",
                  "95% CI high", "format rate", "gain over base [95% paired interval]"], rows, " ".join(notes))


def per_group(metrics: Metrics, key: str, vocabulary: tuple[str, ...], title: str, average: str | None) -> Table:
    groups = _ordered(metrics.files["eval.json"][key], vocabulary)
    rows = []
    for label, prefix in _models(metrics):
        row: list[Cell] = [label] + [metrics("eval.json", f"{prefix}{key}", group) for group in groups]
        if average:
            row.append(metrics("eval.json", f"{prefix}{average}"))
        rows.append(row)
    paired = [(label, prefix) for label, prefix in _models(metrics)
              if prefix != "base_" and metrics.has("eval.json", f"{prefix}paired_gain_over_base", key)]
    for label, prefix in paired:  # a slice compare_predictions gives (modality, question type)
        rows.append([f"{label} gain over base"]
                    + [metrics.interval("eval.json", f"{prefix}paired_gain_over_base", key, group)
                       if metrics.has("eval.json", f"{prefix}paired_gain_over_base", key, group) else "-"
                       for group in groups] + (["-"] if average else []))
    note = (f"{UNKNOWN}: test questions whose {key.removeprefix('per_').replace('_', ' ')} Med-R1's split files do "
            "not give (in no file of that family); counted in the accuracy"
            + (", not in the average." if average else ".")) if vocabulary and UNKNOWN in groups else ""
    if paired:
        note = f"{note} {PAIRED_NOTE}".strip()
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


def gain_table(metrics: Metrics, family: str, title: str) -> Table:
    """Each study cell's gain over the base model with its paired interval: the cell's model against the
    base on the tested-on group's questions (generalization.json's paired_gain_over_base)."""
    groups = metrics.files["generalization.json"][family]["groups"]
    rows: list[list[Cell]] = [[f"trained on {trained_on}"]
                              + [metrics.interval("generalization.json", family, method, "paired_gain_over_base",
                                                  trained_on, g) for method in METHODS for g in groups]
                              for trained_on in groups]
    columns = [f"{METHOD_LABELS[method]}: {g}" for method in METHODS for g in groups]
    return Table(title, ["trained on \\ tested on", *columns], rows,
                 "Each cell: the model trained on the row's group minus the base model, on the column group's test "
                 f"questions. {PAIRED_NOTE}")


def _claim(claim: str, interval: Interval, questions) -> list[Cell]:
    """A row of the tell-apart table: the claim, the difference with its interval, the questions, the
    verdict, which the interval decides (never the point estimate)."""
    return [claim, interval, questions, VERDICTS[interval.verdict()]]


def tell_apart_table(metrics: Metrics) -> Table:
    """The paper's claims as this run's intervals decide them: GRPO beats the base model; GRPO generalizes
    better than SFT across domains (the cross-domain average), per study family; GRPO against SFT on the
    main run and in-domain beside them."""
    rows = [_claim("GRPO beats the base model (test split)",
                   metrics.interval("eval.json", "paired_gain_over_base", "overall"),
                   metrics("eval.json", "paired_gain_over_base", "overall", "n"))]
    if metrics.has("eval.json", "paired_grpo_vs_sft", "overall"):
        rows.append(_claim("GRPO beats SFT (test split)",
                           metrics.interval("eval.json", "paired_grpo_vs_sft", "overall"),
                           metrics("eval.json", "paired_grpo_vs_sft", "overall", "n")))
    study = metrics.files.get("generalization.json", {})
    for family in ("modality", "question_type"):
        if family not in study:
            continue
        words = family.replace("_", " ")
        others = {"modality": "modalities", "question_type": "question types"}[family]
        claims = {"cross_domain": f"GRPO generalizes better than SFT to other {others} (cross-domain average)",
                  "in_domain": f"GRPO beats SFT on the {words} it trained on (in-domain average)"}
        for kind, claim in claims.items():
            if kind in study[family].get("grpo_vs_sft", {}):
                rows.append(_claim(claim, metrics.interval("generalization.json", family, "grpo_vs_sft", kind),
                                   metrics("generalization.json", family, "grpo_vs_sft", kind, "questions")))
            elif kind == "cross_domain":
                rows.append([claim, "-", "-", f"undecided (one {words}: no cross-domain cell)"])
    return Table("What this run can tell apart", ["claim", "difference [95% paired interval]", "test questions",
                                                  "this run"], rows,
                 "A claim is supported when its whole 95% paired interval lies above 0, contradicted when it lies "
                 "below 0, and undecided when it holds 0, whatever the point estimate. GRPO against SFT in- and "
                 "cross-domain is the difference of the averages in the table above (every cell weighing alike); "
                 "its interval resamples test questions, each drawn question bringing every study model's answer to "
                 "it (docs/paired-statistics.md).")


def resolution_table(metrics: Metrics) -> Table:
    """How many test questions each study group holds and how wide its cells' gain intervals came out."""
    study = metrics.files["generalization.json"]
    rows = []
    for family in ("modality", "question_type"):
        if family not in study:
            continue
        counts = study[family]["questions"]
        fewest, most = min(counts, key=counts.get), max(counts, key=counts.get)
        rows.append([family.replace("_", " "), f"{fewest}", metrics("generalization.json", family, "questions", fewest),
                     f"{most}", metrics("generalization.json", family, "questions", most),
                     metrics("generalization.json", family, "interval_half_width", "smallest"),
                     metrics("generalization.json", family, "interval_half_width", "largest")])
    return Table("How wide the study's intervals are", ["family", "fewest questions in", "questions", "most in",
                                                        "questions", "narrowest cell (±)", "widest cell (±)"], rows,
                 "Half the width of the study cells' gain intervals: a gain smaller than that cannot be told from no "
                 "gain on that many questions. The width shrinks as one over the square root of the question count "
                 "(four times the questions, half the width), and grows the more often the two models disagree.")


def _averages_table(metrics: Metrics) -> Table:
    study = metrics.files["generalization.json"]
    families = [family for family in ("modality", "question_type") if family in study]
    rows = [[family.replace("_", " "), METHOD_LABELS[method],
             metrics("generalization.json", family, method, "in_domain_average"),
             metrics("generalization.json", family, method, "cross_domain_average"),
             metrics("generalization.json", family, "base_average")]
            for family in families for method in METHODS]
    return Table("Generalization at a glance: GRPO against SFT", ["family", "method", "in-domain", "cross-domain",
                                                                  "base"], rows,
                 f"Each model trained on one group (GRPO {study['schedule']['grpo']}, SFT {study['schedule']['sft']}; "
                 "the questions each saw are in the budget tables), tested on its own group (in-domain) and on the "
                 "others (cross-domain): the paper's claim is that GRPO's cross-domain accuracy holds up where "
                 "SFT's does not; whether this run's intervals tell the two apart is in 'What this run can tell "
                 "apart'." + _unreadable_cells(study, families))


def _unreadable_cells(study: dict, families: list[str]) -> str:
    """A sentence naming the study models whose outputs the grading protocol could (almost) never read."""
    flagged = [f"{family.replace('_', ' ')}: {cell}" for family in families
               for cell in study[family].get("mostly_unreadable", [])]
    if not flagged:
        return ""
    return (f" The grading protocol could not read at least {UNREADABLE_FLAG_SHARE:.0%} of the outputs of "
            f"{'; '.join(flagged)}: their accuracies measure the format, not the answers (docs/fidelity.md, "
            "'SFT under no-think').")


def budget_table(metrics: Metrics, family: str, title: str) -> Table:
    """Per training group: the questions, steps and questions per step of its GRPO and its SFT model."""
    rows = [[f"trained on {trained_on}"]
            + [metrics("generalization.json", family, "budget", trained_on, method, key)
               for method in METHODS for key in ("questions", "steps", "questions_per_step")]
            for trained_on in metrics.files["generalization.json"][family]["groups"]]
    columns = [f"{METHOD_LABELS[method]}: {what}" for method in METHODS
               for what in ("questions", "steps", "questions per step")]
    return Table(title, ["cell", *columns], rows,
                 "Questions each model trained on (medr1/train/budget.py): GRPO's and SFT's of a group are equal "
                 "when their steps divide evenly; by epochs both see each of the group's train questions once an "
                 "epoch.")


def training_group_table(metrics: Metrics) -> Table:
    """The main run's models inside the group they were trained on (train.group) and outside it."""
    trained_on = metrics.files["eval.json"]["trained_on"]
    rows = [[label, metrics("eval.json", f"{prefix}in_group_accuracy"),
             metrics("eval.json", f"{prefix}other_groups_accuracy")] for label, prefix in _models(metrics)]
    return Table(f"Inside and outside the training group ({trained_on['family'].replace('_', ' ')} "
                 f"{trained_on['group']})", ["model", f"{trained_on['group']} (trained on)", "every other group"],
                 rows, f"Test questions: {metrics.files['eval.json']['in_group_count']:,} of {trained_on['group']}, "
                       f"{metrics.files['eval.json']['other_groups_count']:,} of the others.")


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
    trained_on = evaluation.get("trained_on")
    report = Report("Med-R1 evaluation report", [
        f"Reasoning layout: {mode}. Test split: {evaluation.get('split', '?')}.",
        "Trained on: every train question pooled (train.group: null)." if not trained_on else
        f"Trained on: {trained_on['group']}'s train questions only (train.group), tested on every group's.",
        "Every number below is read from metrics/*.json (the file and key are on each cell in the HTML).",
    ])
    modalities = _ordered(evaluation["per_modality"], MODALITIES)
    question_types = _ordered(evaluation["per_question_type"], QUESTION_TYPES)
    report.sections.append(headline(metrics, mode))
    if trained_on:
        report.sections.append(training_group_table(metrics))
    report.sections += [
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
            if family not in study:  # the paper's cross-modality study lists no question type, and vice versa
                continue
            matrix = study[family]
            report.sections += [
                Figure(f"{title}: GRPO beside SFT",
                       heatmaps({f"{METHOD_LABELS[method]}, {study['schedule'][method]} per model":
                                 matrix[method]["accuracy"] for method in METHODS},
                                matrix["groups"], matrix["groups"], figures / f"{name}.png", "trained on",
                                "tested on")),
                matrix_table(metrics, family, f"{title} (accuracy)"),
                gain_table(metrics, family, f"{title}: gain over the base model"),
                budget_table(metrics, family, f"{title}: what each model trained on"),
            ]
        if any(family in study for family in ("modality", "question_type")):
            report.sections += [_averages_table(metrics), resolution_table(metrics)]
    report.sections.append(tell_apart_table(metrics))
    if train_curve is not None and train_curve.is_file():
        report.sections.append(Figure("GRPO training curves (rewards, completion length, KL)", train_curve))
    report.sections += [
        per_group(metrics, "per_dataset", (), "Accuracy per source dataset", None),
        confusion_table(metrics),
    ]
    return report


