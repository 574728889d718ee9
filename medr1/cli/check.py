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
# broken, not on balance: no modality minimum, no share limit.
NO_THRESHOLDS = ValidateParams(min_rows_per_modality=1, max_answer_share=1.0, max_modality_share=1.0,
                               shared_images="fail")


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
    as_json: JsonOption = False,
) -> None:
    """Ingest and validate a source folder without training. Exit status 0 only when every check passes.

    Every record the readers drop is counted with its reason (all of them in dropped.jsonl).
    """
    import tempfile

    from medr1.data.checks import describe_failures
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
        if out is None:
            report["dropped_list"] = None  # the scratch folder is gone after this command
    passed = report["success"] and not (strict and report["ingest"]["dropped_total"])
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
    raise typer.Exit(0 if passed else 1)


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
