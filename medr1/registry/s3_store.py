"""The `s3://<bucket>[/<prefix>]` object store: AWS S3, MinIO or any S3-compatible server, through boto3.

Credentials come only from boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws, instance and container roles); never from the URL.
The rest comes from the environment:

  MEDR1_S3_ENDPOINT_URL (else AWS_ENDPOINT_URL)  a MinIO or other endpoint; it switches to path-style addressing
  AWS_REGION / AWS_DEFAULT_REGION                default us-east-1
  MEDR1_S3_MAX_ATTEMPTS                          attempts per request, with exponential backoff (default 5)
  MEDR1_S3_CONNECT_TIMEOUT, MEDR1_S3_READ_TIMEOUT  seconds (default 10 and 60)

Throttling (SlowDown, 503), 5xx answers, timeouts and refused connections are retried with
jittered exponential backoff (botocore's "standard" retry mode); files above 16 MiB go up in
parallel multipart uploads.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from medr1.registry.redaction import strip_credentials
from medr1.registry.store import StoreError, check_key

MIB = 1 << 20
MISSING = {"NoSuchKey", "404", "NotFound"}
DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as error:
        raise StoreError(f"{name}={raw!r} is not a number") from error
    if value <= 0:
        raise StoreError(f"{name}={raw!r} must be above 0")
    return value


def endpoint_url() -> str | None:
    """The S3 endpoint this process talks to; None means AWS's own."""
    return os.environ.get("MEDR1_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", multipart_threshold: int = 16 * MIB):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        endpoint = endpoint_url()
        config = Config(
            # total_max_attempts: every try counted (botocore's max_attempts counts the retries after the first)
            retries={"mode": "standard", "total_max_attempts": int(_number("MEDR1_S3_MAX_ATTEMPTS", 5))},
            connect_timeout=_number("MEDR1_S3_CONNECT_TIMEOUT", 10),
            read_timeout=_number("MEDR1_S3_READ_TIMEOUT", 60),
            # MinIO and most on-premises servers answer on one host name: bucket in the path.
            s3={"addressing_style": "path" if endpoint else "auto"},
            max_pool_connections=16,
        )
        # One session per store: boto3's default session is not safe to share between threads.
        session = boto3.session.Session()
        self._where = f"{self.url} (endpoint {strip_credentials(endpoint) if endpoint else 'AWS'})"
        with self._errors("connect to", ""):
            self._client = session.client("s3", endpoint_url=endpoint, config=config,
                                          region_name=session.region_name or "us-east-1")
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                        multipart_chunksize=multipart_threshold, max_concurrency=4)

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise StoreError(f"store URL {url!r} names no bucket: use s3://<bucket>/<prefix>")
        return cls(bucket, prefix)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, action: str, key: str):
        """botocore's exceptions as one StoreError naming the store and the key (KeyError for a missing key)."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code"))
            if code in MISSING:
                raise KeyError(f"{key} not found in {self.url}") from error
            if code == "NoSuchBucket":
                raise StoreError(f"bucket {self.bucket!r} does not exist at {self._where}: create it first") from error
            if code in DENIED:
                raise StoreError(f"{self._where} refused to {action} {key or 'the bucket'} ({code}): check the AWS "
                                 "credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)") from error
            raise StoreError(f"cannot {action} {key} in {self._where}: {code}: "
                             f"{error.response.get('Error', {}).get('Message', '')}") from error
        except (BotoCoreError, Boto3Error) as error:  # refused connections, timeouts, no credentials, failed uploads
            # not chained: its text names the endpoint with any user:password in it, which a traceback would print
            raise StoreError(strip_credentials(f"cannot {action} {key or 'the bucket'} in {self._where}: "
                                               f"{error}")) from None

    def put_file(self, key: str, source: Path) -> None:
        with self._errors("upload", key):
            self._client.upload_file(str(source), self.bucket, self._key(key), Config=self._transfer)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        for attempt in range(5):
            with self._errors("write", key):
                try:
                    self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
                    return True
                except ClientError as error:
                    code = error.response.get("Error", {}).get("Code")
                    if code == "PreconditionFailed":  # 412: the key exists, someone else wrote it
                        return False
                    if code != "ConditionalRequestConflict":
                        raise
            # 409: a concurrent conditional write to the same key is in flight; S3 asks us to retry.
            time.sleep(0.1 * 2**attempt)
        raise StoreError(f"cannot write {key} in {self._where}: concurrent writers kept conflicting")

    def get_bytes(self, key: str) -> bytes:
        with self._errors("read", key):
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def get_file(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("download", key):
            self._client.download_file(self.bucket, self._key(key), str(target), Config=self._transfer)

    def exists(self, key: str) -> bool:
        try:
            with self._errors("look up", key):
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except KeyError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        return sorted(self.list_modified(prefix))

    def list_modified(self, prefix: str) -> dict[str, float]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = {}
        with self._errors("list", prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for item in page.get("Contents", []):
                    keys[item["Key"][strip:]] = item["LastModified"].timestamp()
        return keys

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
