"""`medr1 registry`: registered model versions: list, pull, promote, history, gc."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

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
    page: Annotated[Path | None, typer.Option(
        "--page", help="Also write the 'candidate against current' page (HTML, per-slice differences with their "
                       "intervals as a plot) into this folder.")] = None,
) -> None:
    """Point an alias at a version if it passes that alias's gate (register.gates in params.yaml).

    The gate's absolute numbers first; then, where the gate says must_beat_current or max_slice_drop, the
    version is compared with the one the alias points at now, on the same test questions (the candidate's;
    the current version is re-evaluated on them when it was tested on others): the accuracy difference
    with its paired bootstrap interval and McNemar's exact p, overall, per modality and per question type.
    A refused promotion names every gate and slice it failed. Granted or refused, the attempt and its
    evidence are logged in the store's audit log (`medr1 registry history`, `medr1 audit model`)."""
    from medr1.evaluate.version_predictions import reevaluator
    from medr1.registry.promotion import PromotionRefused, promote

    params = checkout_params("register.gates")
    opened = open_configured_store(store)
    try:
        event = promote(opened, version, alias, params.register_.gates, params.register_.comparison,
                        reevaluator(opened, params, Path.cwd()))
    except PromotionRefused as refusal:
        show_comparison(refusal.event, page)
        raise
    show_comparison(event, page)
    console.print(f"{event['name']} {event['version']} is now {alias}" +
                  (f" (was {event['previous']})" if event["previous"] else ""))


def show_comparison(event: dict, page: Path | None) -> None:
    """The evidence of a promotion attempt as a table (and, with `page`, as the HTML page)."""
    from medr1.report.promotion_page import comparison_rows, write_comparison_page

    comparison = (event.get("evidence") or {}).get("comparison")
    if not comparison:
        return
    rows = comparison_rows(event)
    table = Table(title=f"{event['version']} against {comparison['current_version']} ({event['alias']} now), "
                        f"{comparison['overall']['n']} questions of {comparison['split']['path']} "
                        f"(md5 {comparison['split']['md5'][:12]})")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)
    if page is not None:
        console.print(f"page: {write_comparison_page(event, page)}")


def outcome(event: dict) -> str:
    comparison = (event.get("evidence") or {}).get("comparison")
    against = ""
    if comparison:
        overall = comparison["overall"]
        against = (f" [vs {comparison['current_version']}: {overall['difference']:+.3f} "
                   f"({overall['interval'][0]:+.3f}, {overall['interval'][1]:+.3f}), n={overall['n']}]")
    return ("granted" if event["granted"] else "refused: " + "; ".join(event["failed_gates"])) + against


@app.command("history")
def registry_history(
    name: Annotated[str | None, typer.Option("--name", help="Only this model name.")] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit log: every promotion, granted or refused, oldest first, with who, when, the gates it failed
    and its comparison with the version it would replace (difference, interval, questions)."""
    from medr1.registry.promotion import history

    events = history(open_configured_store(store), name)
    show(events, as_json, f"{len(events)} promotion event(s)",
          ("at", "by", "name", "version", "alias", "previous", "outcome"),
          [[e["at"], e["by"], e["name"], e["version"], e["alias"], str(e["previous"]), outcome(e)] for e in events])


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
