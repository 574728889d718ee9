"""The `file://<folder>` object store: the embedded default."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from medr1.registry.store import check_key


class LocalStore:
    """A folder on disk; writes go through a temporary file and an atomic rename."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

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
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            # link() refuses an existing target: the operating system, not a check-then-write, decides who
            # wins, and readers never see a half-written file.
            os.link(temporary, target)
        except FileExistsError:
            return False
        finally:
            Path(temporary).unlink(missing_ok=True)
        return True

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as error:
            raise KeyError(f"{key} not found in {self.url}") from error

    def get_file(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(self._path(key), target)
        except FileNotFoundError as error:
            raise KeyError(f"{key} not found in {self.url}") from error

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        return sorted(self.list_modified(prefix))

    def list_modified(self, prefix: str) -> dict[str, float]:
        base = self.root
        if not base.exists():
            return {}
        keys = {}
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith(".partial-"):
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix):
                    keys[key] = path.stat().st_mtime
        return keys

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
