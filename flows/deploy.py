"""`python -m flows.deploy`: prefect.yaml's deployments on the Prefect server that PREFECT_API_URL names, with
the work pools they name created as process pools when missing. The pipeline's pool runs one flow run
at a time (the runs share one repository and DVC lets one `dvc repro` hold it); the cells' pool
(medr1-cells) has no limit of its own: each cell works in its own clone, and the fan-out submits
study.parallel at a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from medr1.errors import PipelineError

POOL_CONCURRENCY = {"medr1-process": 1}  # runs at once per pool; a pool not named here: no limit


class DeployError(PipelineError):
    """The deployments cannot be created; the message says why and what to do."""


def api_url() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise DeployError("PREFECT_API_URL is not set: deployments live on a Prefect server. Start one "
                          "(`make stack`, or `prefect server start`) and set PREFECT_API_URL, e.g. http://127.0.0.1:4200/api")
    return url


def work_pools(prefect_file: Path) -> list[str]:
    """The work pools prefect.yaml's deployments run on."""
    if not prefect_file.is_file():
        raise DeployError(f"{prefect_file} not found: run from the repository root or pass --prefect-file")
    try:
        config = yaml.safe_load(prefect_file.read_text()) or {}
    except yaml.YAMLError as error:
        raise DeployError(f"{prefect_file} is not valid YAML: {error}") from None
    pools = [(deployment.get("work_pool") or {}).get("name") for deployment in config.get("deployments") or []]
    if not pools or None in pools:
        raise DeployError(f"{prefect_file}: every deployment needs a work_pool name")
    return sorted(set(pools))


def _prefect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args],
                          capture_output=True, text=True, check=False)


def _require(result: subprocess.CompletedProcess, what: str) -> str:
    if result.returncode != 0:
        raise DeployError(f"{what} failed:\n{(result.stdout + result.stderr).strip()[-3000:]}")
    return result.stdout


def deploy(prefect_file: Path) -> str:
    """Create or update every deployment in `prefect_file`; returns prefect's report."""
    api_url()
    pools = work_pools(prefect_file)
    for pool in pools:
        if _prefect("work-pool", "inspect", pool).returncode != 0:
            _require(_prefect("work-pool", "create", pool, "--type", "process"), f"creating work pool {pool}")
            if (limit := POOL_CONCURRENCY.get(pool)) is not None:
                _require(_prefect("work-pool", "set-concurrency-limit", pool, str(limit)),
                         f"limiting work pool {pool} to {limit} run")
    return _require(_prefect("deploy", "--all", "--prefect-file", str(prefect_file)), "prefect deploy")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m flows.deploy",
        description="Create or update the Prefect deployments (nightly, on-new-data) on the server PREFECT_API_URL "
                    "names. Missing work pools are created as process pools running one flow at a time; then start "
                    "a worker in this checkout: `prefect worker start --pool medr1-process` (and for the study's "
                    "cells, "
                    "`prefect worker start --pool medr1-cells`, as many as you have GPUs or machines).")
    parser.add_argument("--prefect-file", type=Path, default=Path("prefect.yaml"), help="the deployments to create")
    args = parser.parse_args(argv)
    try:
        print(deploy(args.prefect_file))
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
