"""The model registry: immutable, content-addressed versions with a manifest, on an ObjectStore.

Layout: `models/<name>/<version>/files/<path>` then `models/<name>/<version>/manifest.json`,
written last and only if absent. A version without a manifest is invisible: a registration
that dies half-way leaves nothing that `list` shows or `pull` accepts.
"""

from __future__ import annotations

import getpass
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from medr1.lineage import folder_digest, folder_hashes, sha256_file
from medr1.store import ObjectStore

PREFIX = "models"
MANIFEST = "manifest.json"


class RegistryError(RuntimeError):
    """A registry operation failed; the message says which version or file."""


def _version_prefix(name: str, version: str) -> str:
    return f"{PREFIX}/{name}/{version}"


def register(store: ObjectStore, name: str, model_dir: Path, lineage: dict) -> dict:
    """Publish `model_dir` as a version; returns its manifest (the existing one if already registered)."""
    files = folder_hashes(model_dir)
    if not files:
        raise RegistryError(f"{model_dir} holds no files to register")
    version = folder_digest(files)[:16]
    prefix = _version_prefix(name, version)
    if store.exists(f"{prefix}/{MANIFEST}"):
        return json.loads(store.get_bytes(f"{prefix}/{MANIFEST}"))
    for relative in files:
        store.put_file(f"{prefix}/files/{relative}", model_dir / relative)
    manifest = {
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "created_by": os.environ.get("MEDR1_CREATED_BY") or getpass.getuser(),
        "files": files,
        **lineage,
    }
    if not store.put_if_absent(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode()):
        # Someone registered the same content meanwhile: theirs stands, it is the same model.
        return json.loads(store.get_bytes(f"{prefix}/{MANIFEST}"))
    return manifest


def list_versions(store: ObjectStore, name: str | None = None) -> list[dict]:
    """Manifests of every complete version, oldest first."""
    manifests = []
    for key in store.list(f"{PREFIX}/" + (f"{name}/" if name else "")):
        if key.endswith(f"/{MANIFEST}"):
            manifests.append(json.loads(store.get_bytes(key)))
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
    prefix = _version_prefix(manifest["name"], manifest["version"])
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as staging:
        for relative, expected in manifest["files"].items():
            local = Path(staging) / relative
            store.get_file(f"{prefix}/files/{relative}", local)
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
    """Every version whose data lineage names this path or md5."""
    found = []
    for manifest in list_versions(store):
        for entry in manifest.get("data", []):
            if path_or_md5 in (entry.get("path"), entry.get("md5")) or (
                entry.get("path") and path_or_md5.rstrip("/") == entry["path"].rstrip("/")
            ):
                found.append({"version": manifest["version"], "name": manifest["name"], "matched": entry})
                break
    return found
