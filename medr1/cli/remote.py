"""`medr1 dvc-remote`: an S3 bucket as the default DVC remote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medr1.cli.common import console


def dvc_remote(
    url: Annotated[str | None, typer.Argument(
        help="s3://<bucket>/<prefix> for DVC's cache (default: $MEDR1_DVC_REMOTE_URL).")] = None,
    name: Annotated[str, typer.Option("--name", help="The remote's name.")] = "storage",
) -> None:
    """Make an S3 bucket (AWS or MinIO) the default DVC remote, so `dvc push` / `dvc pull` share data and models.

    The endpoint comes from MEDR1_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL) and the region from AWS_REGION;
    all of it goes to .dvc/config.local, which git ignores. Credentials are never written: DVC reads
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE when it runs."""
    from medr1.registry.dvc_remote import configure_dvc_remote, dvc_remote_settings

    settings = dvc_remote_settings(url)
    configure_dvc_remote(Path.cwd(), settings, name)
    console.print(f"DVC remote {name} (default) = {settings['url']}" +
                  (f" at {settings['endpointurl']}" if "endpointurl" in settings else "") + " in .dvc/config.local")
