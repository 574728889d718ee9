"""Content hashes of files and folders: what the registry's manifests and the base model's
reference record."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_hashes(folder: Path) -> dict[str, dict]:
    """{relative path: {"sha256", "size"}} for every file below `folder`."""
    return {
        path.relative_to(folder).as_posix(): {"sha256": sha256_file(path), "size": path.stat().st_size}
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file()
    }


def folder_digest(hashes: dict[str, dict]) -> str:
    """One hash for a folder: sha256 over its sorted (path, sha256) pairs."""
    digest = hashlib.sha256()
    for path in sorted(hashes):
        digest.update(f"{path}\0{hashes[path]['sha256']}\n".encode())
    return digest.hexdigest()
