"""The evaluation report: reports/index.html (self-contained) and reports/summary.md.

Every number in a table is a `Sourced` value: read from a metrics file by its key path and
printed as stored, so the report cannot drift from metrics/*.json. The HTML tags each such
cell with its source and path (data-source, data-path), which the tests check.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from medr1.errors import PipelineError
from medr1.figures import heatmap
from medr1.records import MODALITIES, QUESTION_TYPES

MODEL_PREFIXES = {"base": "base_", "SFT": "sft_", "GRPO": ""}  # row label -> key prefix in eval.json
REQUIRED = ("accuracy", "base_accuracy", "per_modality", "per_question_type", "per_modality_question_type",
            "gain_over_base", "letter_confusion", "per_dataset", "chance_accuracy")


@dataclass(frozen=True)
class Sourced:
    value: float | int
    source: str
    path: tuple[str, ...]

    def text(self) -> str:
        return str(self.value)


Cell = str | Sourced


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Cell]]
    note: str = ""


@dataclass
class Figure:
    title: str
    path: Path
    note: str = ""


@dataclass
class Report:
    title: str
    facts: list[str]
    sections: list[Table | Figure] = field(default_factory=list)


class Metrics:
    """The metrics files by name, and the one way to take a number out of them."""

    def __init__(self, files: dict[str, dict]):
        self.files = files

    def _find(self, source: str, path: tuple[str, ...]):
        value = self.files.get(source)
        for key in path:
            if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            elif isinstance(value, dict) and key in value:
                value = value[key]
            else:
                raise PipelineError(f"metrics/{source} has no {'.'.join(path)}: rerun the stage that writes it")
        return value

    def __call__(self, source: str, *path: str) -> Sourced:
        value = self._find(source, path)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PipelineError(f"metrics/{source} {'.'.join(path)} is not a number")
        return Sourced(value, source, tuple(path))

    def has(self, source: str, *path: str) -> bool:
        try:
            self._find(source, path)
        except PipelineError:
            return False
        return True


def _ordered(names, vocabulary: tuple[str, ...]) -> list[str]:
    return [name for name in vocabulary if name in names] + sorted(set(names) - set(vocabulary))


def _models(metrics: Metrics) -> list[tuple[str, str]]:
    return [(label, prefix) for label, prefix in MODEL_PREFIXES.items() if metrics.has("eval.json", f"{prefix}accuracy")]


def headline(metrics: Metrics, mode: str) -> Table:
    rows = []
    for label, prefix in _models(metrics):
        gain = metrics("eval.json", f"{prefix}gain_over_base", "accuracy") if prefix != "base_" else "-"
        rows.append([label if label == "base" else f"{label} ({mode})", metrics("eval.json", f"{prefix}accuracy"),
                     metrics("eval.json", f"{prefix}accuracy_ci95", "0"), metrics("eval.json", f"{prefix}accuracy_ci95", "1"),
                     metrics("eval.json", f"{prefix}format_rate"), gain])
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
    return Table(title, ["model", *groups] + (["average"] if average else []), rows)


def matrix_table(metrics: Metrics, family: str, title: str) -> Table:
    groups = metrics.files["generalization.json"][family]["groups"]
    rows: list[list[Cell]] = [["base (no GRPO)"] + [metrics("generalization.json", family, "base", g) for g in groups]]
    for trained_on in groups:
        rows.append([f"GRPO on {trained_on}"] + [metrics("generalization.json", family, "accuracy", trained_on, g) for g in groups])
    return Table(title, ["trained on \\ tested on", *groups], rows, "Rows: the model; columns: the test questions.")


def _averages_table(metrics: Metrics) -> Table:
    rows = [[family.replace("_", " "), *[metrics("generalization.json", family, name)
                                         for name in ("in_domain_average", "cross_domain_average", "base_average")]]
            for family in ("modality", "question_type")]
    return Table("Generalization at a glance", ["family", "in-domain", "cross-domain", "base"], rows,
                 "GRPO trained on one group, tested on its own group (in-domain) and on the others (cross-domain).")


def confusion_table(metrics: Metrics) -> Table:
    confusion = metrics.files["eval.json"]["letter_confusion"]
    predicted = sorted({p for row in confusion.values() for p in row}, key=lambda p: (p == "none", p))
    rows = [[gold] + [metrics("eval.json", "letter_confusion", gold, p) if p in confusion[gold] else "-" for p in predicted]
            for gold in sorted(confusion)]
    return Table("Answer letters of the GRPO model (rows: gold, columns: predicted)", ["gold \\ predicted", *predicted], rows,
                 "\"none\": no readable letter in the first answer tag; \"-\": never.")


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
        per_group(metrics, "per_modality", MODALITIES, "Accuracy per modality (the paper's comparison table)", "modality_average"),
        per_group(metrics, "per_question_type", QUESTION_TYPES, "Accuracy per question type", None),
        Figure("GRPO accuracy by modality and question type",
               heatmap(evaluation["per_modality_question_type"], modalities, question_types, "GRPO accuracy",
                       figures / "modality_by_question_type.png", "modality", "question type")),
        Figure("Gain of GRPO over the base model",
               heatmap(evaluation["gain_over_base"]["per_modality_question_type"], modalities, question_types,
                       "GRPO - base (accuracy)", figures / "gain_over_base.png", "modality", "question type", diverging=True)),
    ]
    if "generalization.json" in files:
        study = files["generalization.json"]
        for family, name, title in (("modality", "cross_modality", "Cross-modality generalization"),
                                    ("question_type", "cross_task", "Cross-task generalization")):
            matrix = study[family]
            report.sections += [
                Figure(title, heatmap(matrix["accuracy"], matrix["groups"], matrix["groups"],
                                      f"accuracy, GRPO {study['steps_per_model']} steps per model",
                                      figures / f"{name}.png", "trained on", "tested on")),
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


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0} th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left} .note{color:#555;font-size:.9rem}
img{max-width:100%;border:1px solid #eee}
"""

# Marks the page once every image has loaded, so a headless browser (and its test) can tell.
IMAGES_LOADED = """
window.addEventListener('load', () => {
  const images = [...document.images];
  const loaded = images.filter(image => image.complete && image.naturalWidth > 0).length;
  document.body.dataset.images = `loaded ${loaded}/${images.length}`;
});
"""


def _cell_html(cell: Cell) -> str:
    if isinstance(cell, Sourced):
        return (f'<td data-source="{html.escape(cell.source)}" data-path="{html.escape(json.dumps(list(cell.path)))}">'
                f"{html.escape(cell.text())}</td>")
    return f"<td>{html.escape(cell)}</td>"


def render_html(report: Report) -> str:
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
             f"<style>{STYLE}</style><script>{IMAGES_LOADED}</script></head><body data-images='pending'>",
             f"<h1>{html.escape(report.title)}</h1>"]
    parts += [f"<p class='note'>{html.escape(fact)}</p>" for fact in report.facts]
    for section in report.sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if isinstance(section, Table):
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in section.header) + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(_cell_html(cell) for cell in row) + "</tr>" for row in section.rows]
            parts.append("</tbody></table>")
        else:
            data = base64.b64encode(section.path.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(section.title)}' src='data:image/png;base64,{data}'>")
        if section.note:
            parts.append(f"<p class='note'>{html.escape(section.note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(report: Report, relative_to: Path) -> str:
    lines = [f"# {report.title}", "", *[f"{fact}  " for fact in report.facts]]
    for section in report.sections:
        lines += ["", f"## {section.title}", ""]
        if isinstance(section, Table):
            lines.append("| " + " | ".join(section.header) + " |")
            lines.append("|" + "---|" * len(section.header))
            lines += ["| " + " | ".join(c.text() if isinstance(c, Sourced) else c for c in row) + " |" for row in section.rows]
        else:
            lines.append(f"![{section.title}]({section.path.relative_to(relative_to).as_posix()})")
        if section.note:
            lines += ["", section.note]
    return "\n".join(lines) + "\n"


def write_report(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text(render_html(report), encoding="utf-8")
    (out / "summary.md").write_text(render_markdown(report, out), encoding="utf-8")
