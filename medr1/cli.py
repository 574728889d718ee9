"""`medr1`: the registry and the lineage audit from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medr1.errors import EXPECTED

app = typer.Typer(help="Med-R1 pipeline: data checks, model registry and lineage audit.", no_args_is_help=True)
registry_app = typer.Typer(help="Registered model versions: list them, pull one with its checksums verified.", no_args_is_help=True)
audit_app = typer.Typer(help="Lineage: what produced a model, which models a piece of data produced.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
app.add_typer(audit_app, name="audit")
console = Console()

StoreOption = typer.Option(None, "--store", help="Store URL (file://<folder>); default: register.store in params.yaml.")
JsonOption = typer.Option(False, "--json", help="Print JSON for machines instead of a table.")


def _store(url: str | None):
    from medr1.config import load_params
    from medr1.store import open_store

    if url is None:
        url = load_params(Path("params.yaml")).register_.store
    return open_store(url, base=Path.cwd())


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {error}")
    raise typer.Exit(1)


@registry_app.command("list")
def registry_list(store: str | None = StoreOption, as_json: bool = JsonOption) -> None:
    """List every registered version, oldest first, with its accuracy and gain over the base model."""
    from medr1.registry import list_versions

    try:
        versions = list_versions(_store(store))
    except EXPECTED as error:
        _fail(error)
    rows = [
        {
            "name": m["name"],
            "version": m["version"],
            "created_at": m["created_at"],
            "accuracy": m.get("metrics", {}).get("accuracy"),
            "base_accuracy": m.get("metrics", {}).get("base_accuracy"),
            "git_commit": (m.get("git") or {}).get("commit"),
        }
        for m in versions
    ]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    columns = ("name", "version", "created_at", "accuracy", "base_accuracy", "git_commit")
    table = Table(title=f"{len(rows)} registered version(s)")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(row[column])[:12] if column == "git_commit" else str(row[column]) for column in columns])
    console.print(table)


@registry_app.command("pull")
def registry_pull(
    version: Annotated[str, typer.Argument(help="Version id (a unique prefix is enough).")],
    target: Annotated[Path, typer.Argument(help="Folder to write the model into (from_pretrained loads it).")],
    store: str | None = StoreOption,
) -> None:
    """Download a version and verify every file's sha256 against its manifest."""
    from medr1.registry import pull

    try:
        manifest = pull(_store(store), version, target)
    except EXPECTED as error:
        _fail(error)
    console.print(f"pulled {manifest['name']} {manifest['version']} into {target}: {len(manifest['files'])} files verified")


@audit_app.command("model")
def audit_model(
    version: str = typer.Argument(..., help="Version id (a unique prefix is enough)."),
    store: str | None = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Which data (paths and dvc.lock md5s), params and base model produced this version."""
    from medr1.registry import find_version

    try:
        manifest = find_version(_store(store), version)
    except EXPECTED as error:
        _fail(error)
    report = {
        "name": manifest["name"],
        "version": manifest["version"],
        "created_at": manifest["created_at"],
        "created_by": manifest.get("created_by"),
        "git": manifest.get("git"),
        "base_model": manifest.get("base_model"),
        "data": manifest.get("data"),
        "records": {k: manifest.get("ingest", {}).get(k) for k in ("records", "train", "test", "images", "dropped_total")},
        "validation": manifest.get("validation"),
        "params": manifest.get("params"),
        "metrics": {k: manifest.get("metrics", {}).get(k) for k in ("accuracy", "base_accuracy", "format_rate", "chance_accuracy")},
        "files": manifest.get("files"),
    }
    if as_json:
        print(json.dumps(report, indent=1))
        return
    console.print(f"[bold]{report['name']} {report['version']}[/bold] created {report['created_at']} by {report['created_by']}")
    console.print(f"git {report['git']}")
    console.print(f"base model: {report['base_model'].get('kind')} {report['base_model'].get('path')} sha256 {report['base_model'].get('sha256', '')[:16]}")
    table = Table(title="data it was trained and evaluated on (md5 as dvc.lock records it)")
    for column in ("stage", "path", "md5"):
        table.add_column(column)
    for entry in report["data"] or []:
        table.add_row(entry["stage"], entry["path"], str(entry["md5"]))
    console.print(table)
    console.print(f"records {report['records']}  validation {report['validation']}")
    console.print(f"metrics {report['metrics']}")


@audit_app.command("data")
def audit_data(
    path_or_md5: str = typer.Argument(..., help="A data path as dvc.lock names it (data/processed) or its md5."),
    store: str | None = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Every registered version that was trained or evaluated on this data."""
    from medr1.registry import versions_trained_on

    try:
        found = versions_trained_on(_store(store), path_or_md5)
    except EXPECTED as error:
        _fail(error)
    if as_json:
        print(json.dumps(found, indent=1))
        return
    table = Table(title=f"{len(found)} version(s) used {path_or_md5}")
    for column in ("name", "version", "path", "md5"):
        table.add_column(column)
    for item in found:
        table.add_row(item["name"], item["version"], item["matched"]["path"], str(item["matched"]["md5"]))
    console.print(table)


@app.command("check")
def check(
    kind: Annotated[str, typer.Argument(help="Source kind: synthetic, omnimedvqa or medr1-splits.")],
    root: Annotated[Path, typer.Argument(help="The source folder (OmniMedVQA layout, or Med-R1's Splits/).")],
    family: str = typer.Option("modality", help="medr1-splits only: read the modality or the question_type files."),
    images: Annotated[Path | None, typer.Option("--images", help="medr1-splits only: the OmniMedVQA folder holding Images/ (default: ROOT).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Keep the processed records, images and dropped.jsonl here (default: a temporary folder).")] = None,
    min_rows_per_modality: int | None = typer.Option(None, help="Fail when a modality present has fewer rows (default: params.yaml validate, else 1)."),
    max_answer_share: float | None = typer.Option(None, help="Fail when an answer letter exceeds this share of a split (default: params.yaml validate, else 1)."),
    max_modality_share: float | None = typer.Option(None, help="Fail when a modality exceeds this share of a split (default: params.yaml validate, else 1)."),
    keep_source_split: bool = typer.Option(False, "--keep-source-split", help="medr1-splits only: keep Med-R1's own train/test sides instead of splitting by image hash."),
    strict: bool = typer.Option(False, "--strict", help="Also fail when any record was dropped."),
    as_json: bool = JsonOption,
) -> None:
    """Ingest and validate a source folder without training. Exit status 0 only when every check passes.

    Every record the readers drop is counted with its reason (all of them in dropped.jsonl).
    """
    import tempfile

    from medr1.checks import describe_failures
    from medr1.config import ValidateParams, load_params
    from medr1.source_check import check_source

    with tempfile.TemporaryDirectory(prefix="medr1-check-") as scratch:
        try:
            thresholds = load_params(Path("params.yaml")).validate_ if Path("params.yaml").is_file() else ValidateParams()
            overrides = {"min_rows_per_modality": min_rows_per_modality, "max_answer_share": max_answer_share,
                         "max_modality_share": max_modality_share}
            thresholds = thresholds.model_copy(update={k: v for k, v in overrides.items() if v is not None})
            report = check_source(kind, root, out or Path(scratch), thresholds, family=family, images_root=images,
                                  keep_source_split=keep_source_split, progress=not as_json)
        except EXPECTED as error:
            _fail(error)
        if out is None:
            report["dropped_list"] = None  # the scratch folder is gone after this command
    passed = report["success"] and not (strict and report["ingest"]["dropped_total"])
    report["success"] = passed
    if as_json:
        print(json.dumps(report, indent=1))
        raise typer.Exit(0 if passed else 1)
    summary = report["ingest"]
    files = Table(title=f"{kind} source {root}: records read per file")
    for column in ("file", "records"):
        files.add_column(column)
    for name, count in summary["records_per_file"].items():
        files.add_row(name, str(count))
    console.print(files)
    console.print(f"kept {summary['records']} records on {summary['images']} images; dropped {summary['dropped_total']}")
    if summary["dropped"]:
        drops = Table(title="dropped records, by reason" + (f" (every one in {report['dropped_list']})" if report["dropped_list"] else " (--out keeps the full list)"))
        for column in ("reason", "count", "examples"):
            drops.add_column(column)
        for reason, entry in sorted(summary["dropped"].items(), key=lambda item: -item[1]["count"]):
            drops.add_row(reason, str(entry["count"]), "\n".join(entry["examples"][:3]))
        console.print(drops)
    validation = report["validation"]
    if validation is None:
        console.print("[red]no usable records: nothing to validate[/red]")
    elif validation["success"]:
        console.print(f"[green]{validation['evaluated_expectations']} expectations passed over {validation['rows']} rows[/green]")
    else:
        console.print(f"[red]{describe_failures(validation)}[/red]")
    if strict and summary["dropped_total"]:
        console.print("[red]--strict: records were dropped[/red]")
    raise typer.Exit(0 if passed else 1)


if __name__ == "__main__":
    app()
