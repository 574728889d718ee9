"""`medr1 audit`: what produced a model, and which models a piece of data produced."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from medr1.cli.common import JsonOption, StoreOption, console, open_configured_store, show

app = typer.Typer(help="Lineage: what produced a model, which models a piece of data produced.", no_args_is_help=True)


@app.command("model")
def audit_model(
    version: Annotated[str, typer.Argument(help="Version id (a unique prefix is enough).")],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """What produced this version: data files with their dvc.lock md5s, record counts per split and
    modality, the data checks' result, params, base model, model file hashes, and its promotions."""
    from medr1.cli.registry import outcome
    from medr1.registry.lineage import record_counts
    from medr1.registry.promotion import history
    from medr1.registry.versions import find_version

    opened = open_configured_store(store)
    manifest = find_version(opened, version)
    promotions = [e for e in history(opened, manifest["name"]) if e["version"] == manifest["version"]]
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
        "recipe": manifest.get("recipe"),
        "metrics": {k: manifest.get("metrics", {}).get(k)
                    for k in ("accuracy", "base_accuracy", "format_rate", "chance_accuracy")},
        "packages": manifest.get("packages"),
        "files": manifest.get("files"),
        "evaluation": manifest.get("evaluation"),
        "drift": manifest.get("drift"),
        "promotions": promotions,
    }
    if as_json:
        print(json.dumps(report, indent=1))
        return
    base = report["base_model"] or {}
    console.print(f"[bold]{report['name']} {report['version']}[/bold] created {report['created_at']} "
                  f"by {report['created_by']}")
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
    evaluation = report["evaluation"]
    if evaluation:
        console.print(f"tested on {evaluation['split']['path']} (md5 {evaluation['split']['md5']}, "
                      f"{evaluation['questions']} questions), predictions sha256 {evaluation['predictions_sha256']}")
    drift = report["drift"]
    if drift:
        reference = drift["reference"]
        console.print(f"drift against {reference['version']} ({reference.get('alias') or 'version'}): "
                      + ("passed" if drift["success"] else f"failed {', '.join(drift['failed'])}")
                      + (f"; reported {', '.join(drift['reported'])}" if drift["reported"] else ""))
    console.print(f"metrics {report['metrics']}")
    recipe = report["recipe"] or {}
    changed = recipe.get("changed")
    console.print(f"recipe {recipe.get('name')}" + (f", then changed: {', '.join(changed)}" if changed else ""))
    console.print(f"train params {(report['params'] or {}).get('train')}")
    files = Table(title="model files")
    for column in ("file", "sha256", "bytes"):
        files.add_column(column)
    for relative, entry in (report["files"] or {}).items():
        files.add_row(relative, entry["sha256"], str(entry["size"]))
    console.print(files)
    for event in promotions:
        console.print(f"{event['at']} {event['by']}: {event['alias']} {outcome(event)}")


@app.command("data")
def audit_data(
    path_or_md5: Annotated[str, typer.Argument(help="A data path as dvc.lock names it (data/processed) or its md5.")],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every registered version that was trained or evaluated on this data, with the aliases it holds now."""
    from medr1.registry.promotion import aliases_by_version
    from medr1.registry.versions import versions_trained_on

    opened = open_configured_store(store)
    found, held = versions_trained_on(opened, path_or_md5), aliases_by_version(opened)
    for item in found:
        item["aliases"] = held.get((item["name"], item["version"]), [])
    show(found, as_json, f"{len(found)} version(s) used {path_or_md5}",
          ("name", "version", "created_at", "aliases", "stage", "path", "md5"),
          [[item["name"], item["version"], item["created_at"], ", ".join(item["aliases"]),
            *(str(item["matched"].get(key)) for key in ("stage", "path", "md5"))] for item in found])
