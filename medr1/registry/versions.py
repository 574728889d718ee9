"""The model registry: immutable, content-addressed versions with a manifest, on an ObjectStore.

Layout: `models/<name>/<version>/files/<path>`, its test predictions
`models/<name>/<version>/evaluations/<split md5>.jsonl` (medr1/registry/comparison.py), then
`models/<name>/<version>/manifest.json`, written last and only if absent. A version without a manifest
is invisible: a registration that dies half-way leaves nothing that `list` shows or `pull` accepts,
and `gc` removes its files. The version id is the first 16 hex digits of the files' digest, so a
manifest cannot be edited to vouch for other files without `pull` noticing.
"""

from __future__ import annotations

import getpass
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from medr1.errors import PipelineError
from medr1.pipeline.hashing import folder_digest, folder_hashes, sha256_file
from medr1.registry.redaction import redact
from medr1.registry.store import ObjectStore, StoreError

PREFIX = "models"
MANIFEST = "manifest.json"
EVALUATIONS = "evaluations"  # a version's predictions on a test split, by the split's md5


class RegistryError(PipelineError):
    """A registry operation failed; the message says which version or file."""


def version_prefix(name: str, version: str) -> str:
    return f"{PREFIX}/{name}/{version}"


def version_of(files: dict[str, dict]) -> str:
    return folder_digest(files)[:16]


def created_by() -> str:
    return os.environ.get("MEDR1_CREATED_BY") or getpass.getuser()


def register(store: ObjectStore, name: str, model_dir: Path, lineage: dict,
             evaluations: dict[str, Path] | None = None) -> dict:
    """Publish `model_dir` as a version; returns its manifest (the existing one if already registered).

    `evaluations`: {test split md5: predictions file} uploaded beside the files before the manifest, the
    evidence a later promotion compares on. Every URL in `lineage` loses its user:password before it is written."""
    files = folder_hashes(model_dir)
    if not files:
        raise RegistryError(f"{model_dir} holds no files to register")
    version = version_of(files)
    prefix = version_prefix(name, version)
    if store.exists(f"{prefix}/{MANIFEST}"):
        return _read_manifest(store, f"{prefix}/{MANIFEST}")
    try:
        for relative in files:
            store.put_file(f"{prefix}/files/{relative}", model_dir / relative)
        for split_md5, predictions in (evaluations or {}).items():
            store.put_file(f"{prefix}/{EVALUATIONS}/{split_md5}.jsonl", predictions)
    except StoreError as error:
        raise RegistryError(f"registering {name} {version} failed, nothing was published (its partial upload stays "
                            f"invisible; `medr1 registry gc` removes it): {error}") from error
    manifest = {
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "created_by": created_by(),
        "files": files,
        **redact(lineage),
    }
    if not store.put_if_absent(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode()):
        # Someone registered the same content meanwhile: theirs stands, it is the same model.
        return _read_manifest(store, f"{prefix}/{MANIFEST}")
    return manifest


def _read_manifest(store: ObjectStore, key: str) -> dict:
    try:
        return json.loads(store.get_bytes(key))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RegistryError(f"{key} in {store.url} is not a readable manifest ({error})") from error


def list_versions(store: ObjectStore, name: str | None = None) -> list[dict]:
    """Manifests of every complete version, oldest first."""
    manifests = []
    for key in store.list(f"{PREFIX}/" + (f"{name}/" if name else "")):
        if key.endswith(f"/{MANIFEST}"):
            manifests.append(_read_manifest(store, key))
    return sorted(manifests, key=lambda m: (m["created_at"], m["version"]))


def find_version(store: ObjectStore, version: str) -> dict:
    matches = [m for m in list_versions(store) if m["version"] == version or m["version"].startswith(version)]
    if not matches:
        raise RegistryError(f"no registered version {version!r} in {store.url}; `medr1 registry list` shows them")
    if len(matches) > 1:
        raise RegistryError(f"{version!r} names {len(matches)} versions; give more characters")
    return matches[0]


def pull(store: ObjectStore, version: str, target: Path) -> dict:
    """Download a version's files into `target`, verifying every sha256; fails naming the first mismatch."""
    manifest = find_version(store, version)
    if version_of(manifest["files"]) != manifest["version"]:
        raise RegistryError(f"the manifest of version {manifest['version']} lists files whose digest is "
                            f"{version_of(manifest['files'])}: the manifest was altered")
    prefix = version_prefix(manifest["name"], manifest["version"])
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as staging:
        for relative, expected in manifest["files"].items():
            local = Path(staging) / relative
            try:
                store.get_file(f"{prefix}/files/{relative}", local)
            except KeyError as error:
                raise RegistryError(f"version {manifest['version']} is missing its file {relative} "
                                    f"in {store.url}") from error
            actual = sha256_file(local)
            if actual != expected["sha256"]:
                raise RegistryError(
                    f"checksum mismatch in version {manifest['version']}: {relative} has sha256 {actual[:12]}..., "
                    f"manifest says {expected['sha256'][:12]}...; the stored object was altered"
                )
        for relative in manifest["files"]:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(staging) / relative, target / relative)
    return manifest


def verify_local(manifest: dict, folder: Path) -> list[str]:
    """Files in `folder` whose sha256 differs from the manifest (empty when all match)."""
    return [
        relative
        for relative, expected in manifest["files"].items()
        if not (folder / relative).is_file() or sha256_file(folder / relative) != expected["sha256"]
    ]


def versions_trained_on(store: ObjectStore, path_or_md5: str) -> list[dict]:
    """Every version whose data lineage names this path (as dvc.lock writes it, `./` and `/` tolerated) or md5."""
    wanted = path_or_md5.removeprefix("./").rstrip("/")
    found = []
    for manifest in list_versions(store):
        for entry in manifest.get("data", []):
            if wanted and wanted in (entry.get("md5"), (entry.get("path") or "").rstrip("/")):
                found.append({"version": manifest["version"], "name": manifest["name"],
                              "created_at": manifest["created_at"], "matched": entry})
                break
    return found


def collect_garbage(store: ObjectStore, older_than_s: float, dry_run: bool = False) -> list[dict]:
    """Remove the files of versions that have no manifest (registrations that died half-way).

    Only versions whose newest file is older than `older_than_s` go: a registration still
    uploading has fresh files and is left alone. Returns what was (or would be) removed."""
    by_version: dict[str, dict[str, float]] = {}
    for key, modified in store.list_modified(f"{PREFIX}/").items():
        parts = key.split("/")
        if len(parts) >= 4:
            by_version.setdefault("/".join(parts[:3]), {})[key] = modified
    removed = []
    now = time.time()
    for prefix, keys in sorted(by_version.items()):
        if f"{prefix}/{MANIFEST}" in keys or now - max(keys.values()) < older_than_s:
            continue
        if not dry_run:
            if store.exists(f"{prefix}/{MANIFEST}"):  # it was completed since the listing
                continue
            for key in keys:
                store.delete(key)
        _, name, version = prefix.split("/")
        removed.append({"name": name, "version": version, "objects": len(keys),
                        "newest_object_age_s": round(now - max(keys.values()), 1)})
    return removed
