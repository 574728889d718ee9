"""What a run leaves in the Prefect UI: the data checks' outcome, a summary with metrics and
lineage, per-modality accuracy, and a link to the evaluation report."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.data.checks import describe_failures
from medr1.registry.lineage import data_dependencies, git_state, read_lock
from medr1.registry.redaction import strip_credentials

EVAL = Path("metrics/eval.json")
REGISTERED = Path("metrics/registered.json")
REPORT = Path("reports/index.html")
METRICS = (("accuracy", "GRPO accuracy"), ("sft_accuracy", "SFT accuracy"), ("base_accuracy", "base accuracy"),
           ("chance_accuracy", "chance"), ("format_rate", "GRPO format rate"))


def _rate(value) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "–"


def data_checks_markdown(summary: dict) -> str:
    """The checkpoint's outcome; when it failed, each failed expectation with its count and examples."""
    if summary["success"]:
        return f"# Data checks passed\n\n{summary['evaluated_expectations']} expectations over {summary['rows']} rows."
    rows = "\n".join(
        f"| {failure['expectation']} | {failure['column'] or ''} | {failure['unexpected_count']} | "
        f"{', '.join(failure['examples'])} |"
        for failure in summary["failed"]
    )
    return ("# Data checks failed\n\nNo training ran.\n\n```\n" + describe_failures(summary) + "\n```\n\n"
            "| expectation | column | offending rows | examples |\n|---|---|---|---|\n" + rows)


def drift_markdown(summary: dict) -> str:
    """Every drift check: its statistic, threshold, action, outcome and both distributions."""
    from medr1.data.drift import describe, distribution_text

    reference = summary["reference"]
    label = f"{reference['name']} {reference['version']}" + (f" ({reference['alias']})" if reference["alias"] else "")
    title = "Drift checks passed" if summary["success"] else "Drift checks failed"
    lines = [f"# {title}", "", (f"New data against the training data of **{label}** "
                                f"({reference['rows']} train rows; new data {summary['data']['rows']} train rows)."),
             ""]
    if not summary["success"]:
        lines += ["No training ran.", ""]
    if summary["failed"] or summary["reported"]:
        lines += ["```", describe(summary), "```", ""]
    lines += ["| check | statistic | threshold | action | outcome | reference | new |", "|---|---|---|---|---|---|---|"]
    for check in summary["checks"]:
        outcome = {True: "pass", None: "skipped"}.get(check["passed"], "fail" if check["action"] == "fail"
                                                      else "drifted (reported)")
        statistic = "–" if check["statistic"] is None else f"{check['statistic']:.4g}"
        lines.append(f"| {check['check']} | {statistic} | {check['threshold']} | {check['action']} | {outcome} | "
                     f"{distribution_text(check['reference'])} | {distribution_text(check['new'])} |")
    return "\n".join(lines)


def run_summary_markdown(root: Path, ran: list[str], skipped: list[str], overrides: list[str]) -> str:
    metrics = json.loads((root / EVAL).read_text())
    registered = json.loads((root / REGISTERED).read_text()) if (root / REGISTERED).is_file() else None
    lock = read_lock(root / "dvc.lock")
    git = git_state(root)
    lines = ["# Med-R1 pipeline run", "",
             f"- stages run: {', '.join(ran) or 'none'}",
             f"- unchanged, skipped by DVC: {', '.join(skipped) or 'none'}",
             f"- params overrides: {', '.join(f'`{item}`' for item in overrides) or 'none'}", "",
             "## Metrics (test split)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {label} | {_rate(metrics.get(key))} |" for key, label in METRICS]
    lines += ["", "## Lineage", ""]
    if registered:
        lines.append(f"- registered: **{registered['name']} {registered['version']}** in "
                     f"`{strip_credentials(registered['store'])}`")
    lines.append(f"- git commit: `{git['commit']}`" + (" (uncommitted changes)" if git["dirty"] else ""))
    lines += ["", "| data | md5 in dvc.lock | stage |", "|---|---|---|"]
    lines += [f"| {entry['path']} | `{entry['md5']}` | {entry['stage']} |"
              for entry in data_dependencies(lock, tuple(lock))]
    return "\n".join(lines)


def per_modality_rows(root: Path) -> list[dict]:
    metrics = json.loads((root / EVAL).read_text())
    return [
        {"modality": modality, "GRPO": round(accuracy, 4),
         "SFT": _rounded(metrics.get("sft_per_modality", {}).get(modality)),
         "base": _rounded(metrics.get("base_per_modality", {}).get(modality))}
        for modality, accuracy in sorted(metrics.get("per_modality", {}).items())
    ]


def _rounded(value):
    return round(value, 4) if isinstance(value, int | float) else None
