"""Opening an object store from its URL: `file://<folder>` or `s3://<bucket>[/<prefix>]`."""

from __future__ import annotations

from pathlib import Path

from medr1.registry.local_store import LocalStore
from medr1.registry.redaction import has_credentials, strip_credentials
from medr1.registry.store import ObjectStore, StoreError


def open_store(url: str, base: Path | None = None) -> ObjectStore:
    """`file://<folder>` (relative folders resolve against `base`) or `s3://<bucket>[/<prefix>]`."""
    if has_credentials(url):
        raise StoreError(f"the store URL {strip_credentials(url)} carries credentials: remove user:password from it "
                         "and give them through AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or an AWS profile")
    if url.startswith("file://"):
        folder = Path(url[len("file://") :])
        if not folder.is_absolute() and base is not None:
            folder = base / folder
        return LocalStore(folder)
    if url.startswith("s3://"):
        from medr1.registry.s3_store import S3Store  # boto3 loads only for an s3:// store

        return S3Store.from_url(url)
    raise StoreError(f"unsupported store URL {url!r}: use file://<folder> or s3://<bucket>/<prefix>")
