"""`medr1 check`: ingest and validate a source folder without training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medr1.cli.common import PARAMS_FILE, JsonOption, checkout_params, console
from medr1.config import ValidateParams

# Outside a checkout (no params.yaml) and without options, `medr1 check` fails only on what is
# broken, not on balance: no modality minimum, no share limit; no drift checks (--against needs the
# checkout's registry and DVC cache, so its thresholds come from its params.yaml).
NO_THRESHOLDS = ValidateParams.model_construct(min_rows_per_modality=1, max_answer_share=1.0, max_modality_share=1.0,
                                               shared_images="fail", drift=None)


def check(
    kind: Annotated[str, typer.Argument(help="Source kind: synthetic, omnimedvqa or medr1-splits.")],
    root: Annotated[Path, typer.Argument(help="The source folder (OmniMedVQA layout, or Med-R1's Splits/).")],
    family: Annotated[str, typer.Option(
        help="medr1-splits only: read the modality or the question_type files.")] = "modality",
    images: Annotated[Path | None, typer.Option(
        "--images", help="medr1-splits only: the OmniMedVQA folder holding Images/ (default: ROOT).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Keep the processed records, images and dropped.jsonl here "
                      "(default: a temporary folder).")] = None,
    min_rows_per_modality: Annotated[int | None, typer.Option(
        help="Fail when a modality present has fewer rows (default: params.yaml validate, else 1).")] = None,
    max_answer_share: Annotated[float | None, typer.Option(
        help="Fail when an answer letter exceeds this share of a split "
             "(default: params.yaml validate, else 1).")] = None,
    max_modality_share: Annotated[float | None, typer.Option(
        help="Fail when a modality exceeds this share of a split (default: params.yaml validate, else 1).")] = None,
    shared_images: Annotated[str | None, typer.Option(
        help="fail: an image in both splits fails the checks; report: it is only counted (Med-R1's own "
             "sides share images) (default: params.yaml validate, else fail).")] = None,
    keep_source_split: Annotated[bool, typer.Option(
        "--keep-source-split",
        help="medr1-splits only: keep Med-R1's own train/test sides instead of splitting by image hash.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Also fail when any record was dropped.")] = False,
    accept_unreadable_files: Annotated[bool, typer.Option(
        "--accept-unreadable-files",
        help="Pass even when a question file cannot be read at all (its questions count as dropped).")] = False,
    against: Annotated[str | None, typer.Option(
        "--against", help="Also compare the data with the training data of this registered version or alias "
                          "(e.g. production) of register.name, with params.yaml validate.drift's thresholds "
                          "(docs/drift.md); run in the pipeline's checkout.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Ingest and validate a source folder without training. Exit status 0 only when every check passes.

    Every record the readers drop is counted with its reason (all of them in dropped.jsonl).
    """
    import tempfile

    from medr1.data.checks import describe_failures
    from medr1.data.drift import describe as describe_drift
    from medr1.data.source_check import check_source

    if shared_images not in (None, "fail", "report"):
        raise typer.BadParameter(f"{shared_images!r}: choose from fail, report", param_hint="--shared-images")
    with tempfile.TemporaryDirectory(prefix="medr1-check-") as scratch:
        thresholds = checkout_params("validate").validate_ if PARAMS_FILE.is_file() else NO_THRESHOLDS
        overrides = {"min_rows_per_modality": min_rows_per_modality, "max_answer_share": max_answer_share,
                     "max_modality_share": max_modality_share, "shared_images": shared_images}
        thresholds = thresholds.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        report = check_source(kind, root, out or Path(scratch), thresholds, family=family, images_root=images,
                              keep_source_split=keep_source_split, progress=not as_json,
                              accept_unreadable_files=accept_unreadable_files)
        report["drift"] = None
        if against is not None and report["ingest"]["records"]:
            report["drift"] = drift_against(out or Path(scratch), against)
        if out is None:
            report["dropped_list"] = None  # the scratch folder is gone after this command
    drifted = report["drift"] is not None and not report["drift"]["success"]
    passed = report["success"] and not (strict and report["ingest"]["dropped_total"]) and not drifted
    report["success"] = passed
    if as_json:
        print(json.dumps(report, indent=1))
        raise typer.Exit(0 if passed else 1)
    summary = report["ingest"]
    console.print(per_file_table(kind, root, summary))
    console.print(f"kept {summary['records']} records on {summary['images']} images; "
                  f"dropped {summary['dropped_total']}")
    for entry in summary["unreadable_files"]:
        colour = "yellow" if accept_unreadable_files else "red"
        console.print(f"[{colour}]cannot read {entry['file']}: {entry['reason']}; it holds about "
                      f"{entry['questions']} questions[/{colour}]")
    if summary["dropped"]:
        drops = Table(title="dropped records, by reason"
                      + (f" (every one in {report['dropped_list']})" if report["dropped_list"]
                         else " (--out keeps the full list)"))
        for column in ("reason", "count", "examples"):
            drops.add_column(column)
        for reason, entry in sorted(summary["dropped"].items(), key=lambda item: -item[1]["count"]):
            drops.add_row(reason, str(entry["count"]), "\n".join(entry["examples"][:3]))
        console.print(drops)
    validation = report["validation"]
    if validation is None:
        console.print("[red]no usable records: nothing to validate[/red]")
    elif validation["success"]:
        console.print(f"[green]{validation['evaluated_expectations']} expectations passed "
                      f"over {validation['rows']} rows[/green]")
    else:
        console.print(f"[red]{describe_failures(validation)}[/red]")
    if strict and summary["dropped_total"]:
        console.print("[red]--strict: records were dropped[/red]")
    if report["drift"] is not None:
        console.print(drift_table(report["drift"]))
        if drifted:
            console.print(describe_drift(report['drift'], report['drift']['failed']), style="red", markup=False)
    raise typer.Exit(0 if passed else 1)


def drift_against(data: Path, against: str) -> dict:
    """The drift checks of the checkout's params.yaml over `data` against `against`; an alias that points
    at no version yet is an error here: the user asked for that comparison."""
    from medr1.data.drift import DriftError, check_drift

    params = checkout_params("--against (register.store, validate.drift)")
    summary = check_drift(data, params, Path.cwd(), against=against,
                          data_docs=data / "drift_docs" if data.is_dir() else None)
    if summary is None:
        raise DriftError(f"--against {against}: the alias points at no version of {params.register_.name} yet "
                         "(`medr1 registry list` shows the versions)")
    return summary


def drift_table(summary: dict) -> Table:
    """One row per drift check: statistic, threshold, action, outcome, both distributions."""
    from medr1.data.drift import distribution_text

    reference = summary["reference"]
    table = Table(title=f"drift against {reference['name']} {reference['version']}"
                        + (f" ({reference['alias']})" if reference["alias"] else "") + "'s training data")
    for column in ("check", "statistic", "threshold", "action", "outcome", "reference", "new"):
        table.add_column(column)
    for check in summary["checks"]:
        outcome = {True: "[green]pass[/green]", None: "skipped"}.get(
            check["passed"], "[red]fail[/red]" if check["action"] == "fail" else "[yellow]drifted[/yellow]")
        table.add_row(check["check"], "-" if check["statistic"] is None else f"{check['statistic']:.4g}",
                      str(check["threshold"]), check["action"], outcome, distribution_text(check["reference"]),
                      distribution_text(check["new"]))
    return table


def per_file_table(kind: str, root: Path, summary: dict) -> Table:
    """Per question file: records read, kept, and dropped by reason (so kept = records - dropped); a file
    read only for its labels (the other Med-R1 family's) shows its records and "-"."""
    files = Table(title=f"{kind} source {root}: records per file")
    for column, justify in (("file", "left"), ("records", "right"), ("kept", "right"), ("dropped", "right"),
                            ("dropped by reason", "left")):
        files.add_column(column, justify=justify)
    per_file = summary["per_file"]
    for name, count in summary["records_per_file"].items():
        entry = per_file.get(name)
        if entry is None:
            files.add_row(name, str(count), "-", "-", "read for its labels only")
            continue
        reasons = "\n".join(f"{n} {reason}" for reason, n in sorted(entry["dropped"].items(), key=lambda i: -i[1]))
        files.add_row(name, str(entry["records"]), str(entry["kept"]), str(sum(entry["dropped"].values())), reasons)
    return files
