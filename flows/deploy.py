"""`python -m flows.deploy`: prefect.yaml's deployments on the Prefect server that PREFECT_API_URL names, with
the work pools they name created as process pools when missing, and the automation that marks a study cell
whose heartbeats stopped as Crashed. The pipeline's pool runs one flow run at a time (the runs share one
repository and DVC lets one `dvc repro` hold it); the cells' pool (medr1-cells) has no limit of its own:
each worker runs one cell (`--limit 1`, one worker per GPU), and the fan-out sets study.parallel."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import yaml

from medr1.errors import PipelineError

POOL_CONCURRENCY = {"medr1-process": 1}  # runs at once per pool; a pool not named here: no limit
ZOMBIES = "medr1: cells without heartbeats crashed"  # the automation's name, its key when deployed again
CELL_TAG = "medr1-cell"  # the tag of the deployments whose runs it watches (prefect.yaml)


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
        raise DeployError(f"{prefect_file} is not valid YAML: {error}") from error
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


def watch_for_zombies(after_s: int) -> None:
    """Prefect's documented zombie automation (docs: "detect zombie flows"), for runs tagged CELL_TAG: one
    whose last heartbeat is `after_s` seconds old, with no final state since, is set Crashed. Created, or
    updated when it exists."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    final = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}
    automation = Automation(name=ZOMBIES, description=f"A {CELL_TAG} run silent for {after_s} s lost its worker",
                            trigger=EventTrigger(
                                after={"prefect.flow-run.heartbeat"}, expect={"prefect.flow-run.heartbeat", *final},
                                match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
                                match_related=ResourceSpecification({"prefect.resource.role": "tag",
                                                                     "prefect.resource.id": f"prefect.tag.{CELL_TAG}"}),
                                for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                                within=timedelta(seconds=after_s)),
                            actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {after_s} "
                                                        "s: its worker or its process was lost")])
    try:
        automation.id = Automation.read(name=ZOMBIES).id
    except ValueError:  # none yet
        automation.create()
    else:
        automation.update()


def deploy(prefect_file: Path, zombie_after_s: int = 90) -> str:
    """Create or update every deployment in `prefect_file` and the zombie automation; returns prefect's report."""
    if zombie_after_s < 45:
        raise DeployError(f"--zombie-after {zombie_after_s}: a cell beats every 30 s (Prefect's minimum, prefect.yaml),"
                          " so a healthy one would be crashed; give at least 45")
    api_url()
    pools = work_pools(prefect_file)
    for pool in pools:
        if _prefect("work-pool", "inspect", pool).returncode != 0:
            _require(_prefect("work-pool", "create", pool, "--type", "process"), f"creating work pool {pool}")
            if (limit := POOL_CONCURRENCY.get(pool)) is not None:
                _require(_prefect("work-pool", "set-concurrency-limit", pool, str(limit)),
                         f"limiting work pool {pool} to {limit} run")
    report = _require(_prefect("deploy", "--all", "--prefect-file", str(prefect_file)), "prefect deploy")
    watch_for_zombies(zombie_after_s)
    return report


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m flows.deploy",
        description="Create or update the Prefect deployments (nightly, on-new-data) on the server PREFECT_API_URL "
                    "names. Missing work pools are created as process pools running one flow at a time; then start "
                    "a worker in this checkout: `prefect worker start --pool medr1-process` (and for the study's "
                    "cells one per GPU: `CUDA_VISIBLE_DEVICES=0 prefect worker start --pool medr1-cells --limit 1`). "
                    "Also creates (or updates) the automation that marks a cell whose heartbeats stopped as Crashed.")
    parser.add_argument("--prefect-file", type=Path, default=Path("prefect.yaml"), help="the deployments to create")
    parser.add_argument("--zombie-after", type=int, default=90, metavar="SECONDS", help="a study cell without a "
                        "heartbeat for this long (they come every 30 s) is marked Crashed and runs again (default 90)")
    args = parser.parse_args(argv)
    try:
        print(deploy(args.prefect_file, args.zombie_after))
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
