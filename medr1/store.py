"""Object stores behind one interface; `file://` is the embedded default.

Keys are '/'-separated. `put_if_absent` is the one conditional write the registry relies
on so that two registrations never overwrite each other.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol


class ObjectStore(Protocol):
    url: str

    def put_file(self, key: str, source: Path) -> None: ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write `data` at `key` unless something is there; True when this call wrote it."""

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, target: Path) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...


class LocalStore:
    """A folder on disk; writes go through a temporary file and an atomic rename."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad store key {key!r}")
        return self.root / key

    def _write_atomically(self, target: Path, fill) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as stream:
                fill(stream)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, source: Path) -> None:
        def fill(stream):
            with Path(source).open("rb") as original:
                shutil.copyfileobj(original, stream)

        self._write_atomically(self._path(key), fill)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: the operating system, not a check-then-write, decides who wins.
            handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        return True

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"{key} not found in {self.url}") from None

    def get_file(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), target)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root
        if not base.exists():
            return []
        keys = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith(".partial-"):
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def open_store(url: str, base: Path | None = None) -> ObjectStore:
    """`file://<folder>` (relative folders resolve against `base`); s3:// comes with the S3 backend."""
    if url.startswith("file://"):
        folder = Path(url[len("file://") :])
        if not folder.is_absolute() and base is not None:
            folder = base / folder
        return LocalStore(folder)
    raise ValueError(f"unsupported store URL {url!r}: use file://<folder>")
