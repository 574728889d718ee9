"""`medr1 registry`: registered model versions: list, pull, promote, history, gc."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from medr1.cli.common import JsonOption, StoreOption, checkout_params, console, open_configured_store, show

app = typer.Typer(help="Registered model versions: list, pull (checksums verified), promote, history, gc.",
                  no_args_is_help=True)


@app.command("list")
def registry_list(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List every registered version, oldest first, with its accuracy and gain over the base model."""
    from medr1.registry.promotion import aliases_by_version
    from medr1.registry.versions import list_versions

    opened = open_configured_store(store)
    versions, held = list_versions(opened), aliases_by_version(opened)
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
    show(rows, as_json, f"{len(rows)} registered version(s)", columns,
          [[str(row[column])[:12] if column == "git_commit" else ", ".join(row[column]) if column == "aliases"
            else str(row[column]) for column in columns] for row in rows])


@app.command("pull")
def registry_pull(
    version: Annotated[str, typer.Argument(help="Version id (a unique prefix is enough).")],
    target: Annotated[Path, typer.Argument(help="Folder to write the model into (from_pretrained loads it).")],
    store: StoreOption = None,
) -> None:
    """Download a version and verify every file's sha256 against its manifest."""
    from medr1.registry.versions import pull

    manifest = pull(open_configured_store(store), version, target)
    console.print(f"pulled {manifest['name']} {manifest['version']} into {target}: "
                  f"{len(manifest['files'])} files verified")


@app.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="Version id (a unique prefix is enough).")],
    alias: Annotated[str, typer.Argument(help="candidate, staging or production.")],
    store: StoreOption = None,
) -> None:
    """Point an alias at a version if it passes that alias's gate (register.gates in params.yaml).

    A refused promotion names every gate it failed. Granted or refused, the attempt is logged
    in the store's audit log (`medr1 registry history`)."""
    from medr1.registry.promotion import promote

    gates = checkout_params("register.gates").register_.gates
    event = promote(open_configured_store(store), version, alias, gates)
    console.print(f"{event['name']} {event['version']} is now {alias}" +
                  (f" (was {event['previous']})" if event["previous"] else ""))


@app.command("history")
def registry_history(
    name: Annotated[str | None, typer.Option("--name", help="Only this model name.")] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit log: every promotion, granted or refused, oldest first, with who, when and the gates."""
    from medr1.registry.promotion import history

    events = history(open_configured_store(store), name)
    show(events, as_json, f"{len(events)} promotion event(s)",
          ("at", "by", "name", "version", "alias", "previous", "outcome"),
          [[e["at"], e["by"], e["name"], e["version"], e["alias"], str(e["previous"]),
            "granted" if e["granted"] else "refused: " + "; ".join(e["failed_gates"])] for e in events])


@app.command("gc")
def registry_gc(
    older_than: Annotated[float, typer.Option("--older-than", help="Only remove uploads whose newest file is older "
                                              "than this many seconds, so that a registration still running is left "
                                              "alone.")] = 3600,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go, remove nothing.")] = False,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove the files of half-written versions (no manifest: a registration died before publishing)."""
    from medr1.registry.versions import collect_garbage

    removed = collect_garbage(open_configured_store(store), older_than, dry_run)
    if as_json:
        print(json.dumps(removed, indent=1))
        return
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} {len(removed)} half-written version(s)" +
                  "".join(f"\n  {item['name']} {item['version']}: {item['objects']} object(s)" for item in removed))
