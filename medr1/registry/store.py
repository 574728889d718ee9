"""The object store interface the registry writes to, and the error every store raises.

Implementations: `file://` (medr1/registry/local_store.py, the embedded default) and `s3://`
(medr1/registry/s3_store.py); medr1/registry/backends.py opens one from its URL. Keys are
'/'-separated. `put_if_absent` is the one conditional write the registry relies on so that
two registrations never overwrite each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from medr1.errors import PipelineError


class StoreError(PipelineError):
    """The store cannot be reached or refused an operation; the message names the store and the key."""


class ObjectStore(Protocol):
    url: str

    def put_file(self, key: str, source: Path) -> None: ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write `data` at `key` unless something is there; True when this call wrote it."""

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, target: Path) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def list_modified(self, prefix: str) -> dict[str, float]:
        """{key: last-modified time (POSIX seconds)} of every key under `prefix`."""

    def delete(self, key: str) -> None: ...


def check_key(key: str) -> str:
    """`key` unchanged when it stays inside the store; a key from outside could climb out of it."""
    if key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"bad store key {key!r}")
    return key
