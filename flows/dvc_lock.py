"""Stage entries of dvc.lock, read from one checkout and recorded in another: how a stage that ran
elsewhere (a fan-out cell) becomes as up to date here as if `dvc repro` had run it here."""

from __future__ import annotations

from pathlib import Path

LOCK = "dvc.lock"
SCHEMA = "2.0"


def lock_entries(root: Path, stages: list[str] | None = None) -> dict[str, dict]:
    """dvc.lock's entries of `stages` (all when None); a stage that never ran has none."""
    from dvc.utils.serialize import load_yaml

    path = root / LOCK
    entries = (load_yaml(path) or {}).get("stages", {}) if path.is_file() else {}
    return {name: _plain(entry) for name, entry in entries.items() if stages is None or name in stages}


def record_entries(root: Path, entries: dict[str, dict]) -> None:
    """Write `entries` into dvc.lock (adding or replacing those stages, keeping the others), in DVC's layout."""
    from dvc.utils.serialize import modify_yaml

    path = root / LOCK
    if not path.is_file():
        path.write_text(f"schema: '{SCHEMA}'\nstages: {{}}\n")
    with modify_yaml(path) as lock:
        lock.setdefault("schema", SCHEMA)
        stages = lock.setdefault("stages", {})
        if stages is None:
            lock["stages"] = stages = {}
        stages.update(entries)


def _plain(value):
    """ruamel's mappings and sequences as plain dicts and lists (JSON-able: a flow parameter)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
