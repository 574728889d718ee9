"""Point DVC's default remote at S3 (AWS or MinIO) so `dvc push` / `dvc pull` share data and model outputs.

The settings go to `.dvc/config.local`, which git ignores: the endpoint of one site never lands in the
repository, and credentials are never written at all; dvc-s3 takes them from the same AWS environment
variables and profile chain as the model store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from medr1.errors import MissingFileError, PipelineError
from medr1.registry.redaction import has_credentials, strip_credentials
from medr1.registry.s3_store import endpoint_url

REMOTE_NAME = "storage"
URL_VARIABLE = "MEDR1_DVC_REMOTE_URL"


def dvc_remote_settings(url: str | None = None) -> dict[str, str]:
    """The remote's url, endpoint and region from the arguments and the environment; no credentials."""
    url = url or os.environ.get(URL_VARIABLE)
    if not url:
        raise PipelineError(f"no remote URL: pass one or set {URL_VARIABLE}=s3://<bucket>/<prefix>")
    if not url.startswith("s3://") or len(url) <= len("s3://"):
        raise PipelineError(f"the DVC remote must be s3://<bucket>/<prefix>, not {strip_credentials(url)!r}")
    if has_credentials(url):
        raise PipelineError("the DVC remote URL carries credentials: give them through AWS_ACCESS_KEY_ID / "
                         "AWS_SECRET_ACCESS_KEY or an AWS profile instead")
    settings = {"url": url}
    endpoint = endpoint_url()
    if endpoint:
        if has_credentials(endpoint):
            raise PipelineError("the S3 endpoint URL carries credentials: remove user:password from it")
        settings["endpointurl"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        settings["region"] = region
    return settings


def configure_dvc_remote(repo: Path, settings: dict[str, str], name: str = REMOTE_NAME) -> None:
    """Write `settings` as the default DVC remote `name` of `repo`, in .dvc/config.local."""
    if not (repo / ".dvc").is_dir():
        raise MissingFileError(f"{repo} is not a DVC repository (no .dvc/): run it from the repository root")

    def dvc(*args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise PipelineError(f"`dvc {' '.join(args[:3])} ...` failed: {(result.stderr or result.stdout).strip()}")

    dvc("remote", "add", "--local", "--force", "--default", name, settings["url"])
    for option in ("endpointurl", "region"):
        if option in settings:
            dvc("remote", "modify", "--local", name, option, settings[option])
