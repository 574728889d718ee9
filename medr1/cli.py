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
registry_app = typer.Typer(help="Registered model versions: list, pull (checksums verified), promote, history, gc.",
                           no_args_is_help=True)
audit_app = typer.Typer(help="Lineage: what produced a model, which models a piece of data produced.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
app.add_typer(audit_app, name="audit")
console = Console()

StoreOption = typer.Option(None, "--store", help="Store URL (file://<folder> or s3://<bucket>/<prefix>); "
                           "default: register.store in params.yaml.")
JsonOption = typer.Option(False, "--json", help="Print JSON for machines instead of a table.")


def _store(url: str | None):
    from medr1.config import load_params
    from medr1.store import open_store

    if url is None:
        url = load_params(Path("params.yaml")).register_.store
    return open_store(url, base=Path.cwd())


def _show(data, as_json: bool, title: str, columns: tuple[str, ...], rows: list[list[str]]) -> None:
    """`data` as JSON for machines, else `rows` as a table for people."""
    if as_json:
        print(json.dumps(data, indent=1))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {error}")
    raise typer.Exit(1)


@registry_app.command("list")
def registry_list(store: str | None = StoreOption, as_json: bool = JsonOption) -> None:
    """List every registered version, oldest first, with its accuracy and gain over the base model."""
    from medr1.promotion import aliases_by_version
    from medr1.registry import list_versions

    try:
        opened = _store(store)
        versions, held = list_versions(opened), aliases_by_version(opened)
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
            "aliases": held.get((m["name"], m["version"]), []),
        }
        for m in versions
    ]
    columns = ("name", "version", "created_at", "accuracy", "base_accuracy", "git_commit", "aliases")
    _show(rows, as_json, f"{len(rows)} registered version(s)", columns,
          [[str(row[column])[:12] if column == "git_commit" else ", ".join(row[column]) if column == "aliases"
            else str(row[column]) for column in columns] for row in rows])


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


@registry_app.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="Version id (a unique prefix is enough).")],
    alias: Annotated[str, typer.Argument(help="candidate, staging or production.")],
    store: str | None = StoreOption,
) -> None:
    """Point an alias at a version if it passes that alias's gate (register.gates in params.yaml).

    A refused promotion names every gate it failed. Granted or refused, the attempt is logged
    in the store's audit log (`medr1 registry history`)."""
    from medr1.config import load_params
    from medr1.promotion import promote

    try:
        gates = load_params(Path("params.yaml")).register_.gates
        event = promote(_store(store), version, alias, gates)
    except EXPECTED as error:
        _fail(error)
    console.print(f"{event['name']} {event['version']} is now {alias}" +
                  (f" (was {event['previous']})" if event["previous"] else ""))


@registry_app.command("history")
def registry_history(
    name: str | None = typer.Option(None, "--name", help="Only this model name."),
    store: str | None = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """The audit log: every promotion, granted or refused, oldest first, with who, when and the gates."""
    from medr1.promotion import history

    try:
        events = history(_store(store), name)
    except EXPECTED as error:
        _fail(error)
    _show(events, as_json, f"{len(events)} promotion event(s)",
          ("at", "by", "name", "version", "alias", "previous", "outcome"),
          [[e["at"], e["by"], e["name"], e["version"], e["alias"], str(e["previous"]),
            "granted" if e["granted"] else "refused: " + "; ".join(e["failed_gates"])] for e in events])


@registry_app.command("gc")
def registry_gc(
    older_than: float = typer.Option(3600, "--older-than", help="Only remove uploads whose newest file is older than "
                                     "this many seconds, so that a registration still running is left alone."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would go, remove nothing."),
    store: str | None = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Remove the files of half-written versions (no manifest: a registration died before publishing)."""
    from medr1.registry import collect_garbage

    try:
        removed = collect_garbage(_store(store), older_than, dry_run)
    except EXPECTED as error:
        _fail(error)
    if as_json:
        print(json.dumps(removed, indent=1))
        return
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} {len(removed)} half-written version(s)" +
                  "".join(f"\n  {item['name']} {item['version']}: {item['objects']} object(s)" for item in removed))


@audit_app.command("model")
def audit_model(
    version: str = typer.Argument(..., help="Version id (a unique prefix is enough)."),
    store: str | None = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """What produced this version: data files with their dvc.lock md5s, record counts per split and
    modality, the data checks' result, params, base model, model file hashes, and its promotions."""
    from medr1.lineage import record_counts
    from medr1.promotion import history
    from medr1.registry import find_version

    try:
        opened = _store(store)
        manifest = find_version(opened, version)
        promotions = [e for e in history(opened, manifest["name"]) if e["version"] == manifest["version"]]
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
        "records": manifest.get("records") or record_counts(manifest.get("ingest") or {}),
        "validation": manifest.get("validation"),
        "params": manifest.get("params"),
        "metrics": {k: manifest.get("metrics", {}).get(k) for k in ("accuracy", "base_accuracy", "format_rate", "chance_accuracy")},
        "packages": manifest.get("packages"),
        "files": manifest.get("files"),
        "promotions": promotions,
    }
    if as_json:
        print(json.dumps(report, indent=1))
        return
    base = report["base_model"] or {}
    console.print(f"[bold]{report['name']} {report['version']}[/bold] created {report['created_at']} by {report['created_by']}")
    console.print(f"git {report['git']}")
    console.print(f"base model: {base.get('kind')} {base.get('path')} sha256 {str(base.get('sha256'))[:16]}")
    data = Table(title="data it was trained and evaluated on (md5 as dvc.lock records it)")
    for column in ("stage", "path", "md5"):
        data.add_column(column)
    for entry in report["data"] or []:
        data.add_row(entry.get("stage"), entry.get("path"), str(entry.get("md5")))
    console.print(data)
    records = report["records"]
    counts = Table(title=f"records: {records.get('train')} train / {records.get('test')} test, "
                         f"{records.get('images')} images, {records.get('dropped')} dropped")
    for column in ("modality", "train", "test"):
        counts.add_column(column)
    for modality, sides in (records.get("per_modality") or {}).items():
        counts.add_row(modality, str(sides.get("train")), str(sides.get("test")))
    console.print(counts)
    console.print(f"validation {report['validation']}")
    console.print(f"metrics {report['metrics']}")
    console.print(f"train params {(report['params'] or {}).get('train')}")
    files = Table(title="model files")
    for column in ("file", "sha256", "bytes"):
        files.add_column(column)
    for relative, entry in (report["files"] or {}).items():
        files.add_row(relative, entry["sha256"], str(entry["size"]))
    console.print(files)
    for event in promotions:
        console.print(f"{event['at']} {event['by']}: {event['alias']} " +
                      ("granted" if event["granted"] else "refused: " + "; ".join(event["failed_gates"])))


@audit_app.command("data")
def audit_data(
    path_or_md5: str = typer.Argument(..., help="A data path as dvc.lock names it (data/processed) or its md5."),
    store: str | None = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Every registered version that was trained or evaluated on this data, with the aliases it holds now."""
    from medr1.promotion import aliases_by_version
    from medr1.registry import versions_trained_on

    try:
        opened = _store(store)
        found, held = versions_trained_on(opened, path_or_md5), aliases_by_version(opened)
    except EXPECTED as error:
        _fail(error)
    for item in found:
        item["aliases"] = held.get((item["name"], item["version"]), [])
    _show(found, as_json, f"{len(found)} version(s) used {path_or_md5}",
          ("name", "version", "created_at", "aliases", "stage", "path", "md5"),
          [[item["name"], item["version"], item["created_at"], ", ".join(item["aliases"]),
            *(str(item["matched"].get(key)) for key in ("stage", "path", "md5"))] for item in found])


@app.command("dvc-remote")
def dvc_remote(
    url: Annotated[str | None, typer.Argument(help="s3://<bucket>/<prefix> for DVC's cache (default: $MEDR1_DVC_REMOTE_URL).")] = None,
    name: str = typer.Option("storage", "--name", help="The remote's name."),
) -> None:
    """Make an S3 bucket (AWS or MinIO) the default DVC remote, so `dvc push` / `dvc pull` share data and models.

    The endpoint comes from MEDR1_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL) and the region from AWS_REGION;
    all of it goes to .dvc/config.local, which git ignores. Credentials are never written: DVC reads
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE when it runs."""
    from medr1.dvc_remote import configure_dvc_remote, dvc_remote_settings

    try:
        settings = dvc_remote_settings(url)
        configure_dvc_remote(Path.cwd(), settings, name)
    except EXPECTED as error:
        _fail(error)
    console.print(f"DVC remote {name} (default) = {settings['url']}" +
                  (f" at {settings['endpointurl']}" if "endpointurl" in settings else "") + " in .dvc/config.local")


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



from medr1.evaluate_command import evaluate_command  # its own module: it is long

app.command("evaluate")(evaluate_command)



@app.command("deploy")
def deploy(
    prefect_file: Annotated[Path, typer.Option("--prefect-file", help="The deployments to create or update.")] = Path("prefect.yaml"),
) -> None:
    """Create or update the Prefect deployments (nightly, on-new-data) on the server PREFECT_API_URL names.

    Missing work pools are created as process pools running one flow at a time; then start a worker
    in this checkout: `prefect worker start --pool medr1-process`.
    """
    from medr1.prefect_deploy import DeployError
    from medr1.prefect_deploy import deploy as deploy_all

    try:
        console.print(deploy_all(prefect_file))
    except DeployError as error:
        _fail(error)

if __name__ == "__main__":
    app()
