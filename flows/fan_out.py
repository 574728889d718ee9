"""The `medr1-fan-out` flow: stale dvc.yaml stages (the generalization study's cells by default) run as
`medr1-stage` flow runs on a work pool, `study.parallel` at a time, sharing data and models through the
DVC remote; their results are recorded in this checkout's dvc.lock as if `dvc repro` had run them here.

    run the cells' upstream stages here (data checks included) -> `dvc push` their outputs
    -> one `medr1-stage/cell` run per stale stage (flows/stage_cell.py), at the commit of this checkout
    -> each finished cell: its dvc.lock entry recorded, its outputs pulled, `dvc status` clean
    -> the stages after them (`report`) here

A cell whose heartbeats stop (its worker was killed or pre-empted) is marked Crashed and submitted
again; so is one that failed for a reason that may pass. A cell that fails for a reason that would
recur ends the flow with that cell's own message.

    python -m flows.fan_out                         # the study's stale cells, on PREFECT_API_URL's workers
"""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from flows.dvc_commands import TRANSIENT, DvcFailed, has_remote, run_dvc, status
from flows.dvc_graph import PipelineGraph, read_graph
from flows.dvc_lock import lock_entries, record_entries
from flows.pipeline import CHECKED_STAGE, check_data, exit_status, repro_stage
from flows.stage_cell import HEARTBEAT, RESULT_ARTIFACT, read_result
from medr1.errors import PipelineError

STUDY = ["study_*"]                # the stages fanned out by default
THEN = ["report"]                  # run here once the cells are in
DEPLOYMENT = "medr1-stage/cell"    # prefect.yaml's deployment of flows/stage_cell.py
SECRET_OPTIONS = ("access_key_id", "secret_access_key", "session_token", "password", "user", "token",
                  "credentialpath", "gdrive_client_secret", "sas_token", "account_key", "connection_string")


class FanOutError(PipelineError):
    """The fan-out cannot go on; the message says why and what to do."""


@dataclass
class Cell:
    stage: str
    tries: int = 0
    flow_run_id: object = None
    slot: int | None = None
    runs: list[dict] = field(default_factory=list)  # every try: flow run, start, end, outcome


def matching_stages(graph: PipelineGraph, patterns: list[str]) -> list[str]:
    stages = [name for name in graph.order if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]
    if not stages:
        raise FanOutError(f"no stage of dvc.yaml matches {patterns} (stages: {', '.join(graph.order)})")
    return stages


def clean_commit(root: Path, graph: PipelineGraph, stages: list[str]) -> str:
    """HEAD of the checkout, which the cells run; refused when the stages' code differs from it."""
    sources = {"dvc.yaml"} | {path for stage in stages for path in graph.deps[stage]
                              if path != "params.yaml" and not graph.output(path) and (root / path).exists()}
    git = subprocess.run(["git", "status", "--porcelain", "--", *sorted(sources)], cwd=root, capture_output=True,
                         text=True, check=False)
    if git.returncode != 0:
        raise FanOutError(f"{root} is not a git repository the cells can clone: {git.stderr.strip()}")
    if git.stdout.strip():
        changed = ", ".join(line[3:] for line in git.stdout.splitlines())
        raise FanOutError(f"the cells run the committed code, and these of their inputs differ from HEAD: {changed}. "
                          "Commit them (params.yaml may differ: it travels with the cells)")
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()


def remote_options(root: Path) -> dict[str, str]:
    """The default DVC remote's url and non-secret options: what a cell needs besides its worker's credentials."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = repo.config["core"].get("remote")
        if not name or name not in repo.config["remote"]:
            raise FanOutError("the cells share data and models through the DVC remote, and this checkout has no "
                              "default remote: `dvc remote add -d storage s3://bucket/medr1` (README, 'DVC remote')")
        options = {}  # as written at each level (not DVC's defaults), the later level winning
        for level in ("system", "global", "repo", "local"):
            options.update(repo.config.load_one(level)["remote"].get(name, {}))
    return {key: str(value) for key, value in options.items() if key not in SECRET_OPTIONS}


def inputs_for(root: Path, graph: PipelineGraph, stages: list[str]) -> tuple[dict, dict[str, str], list[str]]:
    """(dvc.lock entries upstream of `stages`, their uncached input files as text, their cached inputs)."""
    upstream = sorted({name for stage in stages for name in graph.upstream[stage]} - set(stages))
    files, cached_inputs = {}, set()
    for stage in stages:
        for path, cached in graph.inputs(stage):
            if cached:
                cached_inputs.add(path)
            elif (root / path).is_file():
                files[path] = (root / path).read_text()
            else:
                raise FanOutError(f"{stage} reads {path}, an uncached output that is not a file here: "
                                  "run its stage first, or mark it `cache: true` in dvc.yaml")
    return lock_entries(root, upstream), files, sorted(cached_inputs)


def _state_message(state) -> str:
    return f"{state.name}: {state.message or ''}".strip()


def _retryable(state) -> bool:
    """A try that may succeed again: it crashed (its worker died) or failed for a transient reason."""
    if state.is_crashed():
        return True
    return state.is_failed() and bool(TRANSIENT.search(state.message or "") or
                                      "TransientDvcError" in (state.message or ""))


class CellRunner:
    """Submits cells to the deployment, watches them, and records each finished one in the checkout."""

    def __init__(self, client, root: Path, deployment, parameters: dict, slots: list[dict], attempts: int,
                 lost_after_s: float):
        self.client, self.root, self.deployment = client, root, deployment
        self.parameters, self.attempts, self.lost_after_s = parameters, attempts, lost_after_s
        self.free = deque(range(len(slots)))
        self.slots = slots
        self.logger = get_run_logger()

    def submit(self, cell: Cell) -> None:
        cell.slot = self.free.popleft()
        cell.tries += 1
        run = self.client.create_flow_run_from_deployment(
            self.deployment.id, parameters={**self.parameters, "stage": cell.stage},
            name=f"{cell.stage} (try {cell.tries})", tags=["medr1", "fan-out"],
            job_variables=self.slots[cell.slot] or None)
        cell.flow_run_id = run.id
        cell.runs.append({"flow_run": str(run.id), "try": cell.tries, **self.slots[cell.slot]})
        self.logger.info("%s: submitted (try %d, flow run %s)%s", cell.stage, cell.tries, run.name,
                         f" with {self.slots[cell.slot]}" if self.slots[cell.slot] else "")

    def lost(self, run) -> bool:
        """A running cell whose last heartbeat (or start, before the first) is older than lost_after_s."""
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

        started = run.start_time or run.created
        page = self.client.read_events(EventFilter(
            event=EventNameFilter(name=[HEARTBEAT]), resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
            occurred=EventOccurredFilter(since=started)), limit=1)
        last = max([event.occurred for event in page.events] + [started])
        return (datetime.now(UTC) - last).total_seconds() > self.lost_after_s

    def watch(self, cell: Cell) -> str:
        """'running', 'done', 'again' (submit it once more) for the cell's current try; raises when it failed."""
        from prefect.states import Crashed

        run = self.client.read_flow_run(cell.flow_run_id)
        state = run.state
        if state.is_running() and self.lost(run):
            message = f"no heartbeat for {self.lost_after_s:.0f} s: its worker was lost"
            self.client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            state = self.client.read_flow_run(cell.flow_run_id).state
        if not state.is_final():
            return "running"
        cell.runs[-1].update(start=run.start_time, end=run.end_time or datetime.now(UTC),
                             outcome=_state_message(state))
        self.free.append(cell.slot)
        if state.is_completed():
            self.record(cell)
            return "done"
        if _retryable(state) and cell.tries < self.attempts:
            self.logger.warning("%s: try %d ended %s; trying again", cell.stage, cell.tries, _state_message(state))
            return "again"
        raise FanOutError(f"cell {cell.stage} failed (try {cell.tries} of {self.attempts}): {state.message}")

    def record(self, cell: Cell) -> None:
        """The cell's dvc.lock entry and outputs here, checked by `dvc status`."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        found = self.client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[cell.flow_run_id])))
        artifact = next((artifact for artifact in found if artifact.key == RESULT_ARTIFACT), None)
        if artifact is None:
            raise FanOutError(f"cell {cell.stage} completed without its {RESULT_ARTIFACT} artifact")
        result = read_result(artifact.data)
        record_entries(self.root, {cell.stage: result["lock"]})
        for path, text in result["files"].items():
            (self.root / path).parent.mkdir(parents=True, exist_ok=True)
            (self.root / path).write_text(text)
        run_dvc(self.root, "pull", cell.stage)
        if left := status(self.root, cell.stage):
            raise FanOutError(f"cell {cell.stage} ran at {result['commit'][:12]} but does not match this checkout: "
                              f"{left}")
        cell.runs[-1].update(placement=result["placement"], seconds=result["seconds"])
        self.logger.info("%s: recorded in dvc.lock, outputs pulled", cell.stage)

    def cancel(self, cells: list[Cell]) -> None:
        from prefect.states import Cancelling

        for cell in cells:
            self.client.set_flow_run_state(cell.flow_run_id, Cancelling(message="another cell failed"), force=True)


def placements(client, deployment, parallel: int, gpus: list[int]) -> list[dict]:
    """One slot per cell run at once: on a local process pool with study.gpus, each slot its own GPU."""
    if not gpus:
        return [{} for _ in range(parallel)]
    pool = client.read_work_pool(deployment.work_pool_name)
    if pool.type != "process":
        get_run_logger().info("study.gpus is for a local process pool; %s (%s) places its jobs itself",
                              pool.name, pool.type)
        return [{} for _ in range(parallel)]
    if parallel > len(gpus):
        raise FanOutError(f"study.parallel is {parallel} and study.gpus names {len(gpus)} GPUs: one cell per GPU, "
                          f"so lower study.parallel to {len(gpus)} or list more GPUs")
    return [{"env": {"CUDA_VISIBLE_DEVICES": str(gpu)}} for gpu in gpus[:parallel]]


def run_cells(root: Path, stages: list[str], parameters: dict, deployment_name: str, parallel: int, gpus: list[int],
              attempts: int, lost_after_s: float, poll_s: float) -> list[Cell]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name)
        runner = CellRunner(client, root, deployment, parameters, placements(client, deployment, parallel, gpus),
                            attempts, lost_after_s)
        cells = [Cell(stage) for stage in stages]
        waiting, active = deque(cells), []
        try:
            while waiting or active:
                while waiting and runner.free:
                    cell = waiting.popleft()
                    runner.submit(cell)
                    active.append(cell)
                time.sleep(poll_s)
                for cell in list(active):
                    outcome = runner.watch(cell)
                    if outcome != "running":
                        active.remove(cell)
                    if outcome == "again":
                        waiting.appendleft(cell)
        except (FanOutError, DvcFailed):
            runner.cancel(active)
            raise
    return cells


def cells_markdown(cells: list[Cell]) -> str:
    lines = ["# Fan-out of the study's cells", "",
             "| stage | try | flow run | seconds | of which prepare / repro / push | placement | outcome |",
             "|---|---|---|---|---|---|---|"]
    for cell in cells:
        for run in cell.runs:
            seconds = f"{(run['end'] - run['start']).total_seconds():.0f}" if run.get("start") else "-"
            steps = " / ".join(f"{value:.0f}" for value in run["seconds"].values()) if run.get("seconds") else "-"
            lines.append(f"| {cell.stage} | {run['try']} | {run['flow_run']} | {seconds} | {steps} | "
                         f"{run.get('placement') or '-'} | {run.get('outcome', '-')} |")
    return "\n".join(lines)


@flow(name="medr1-fan-out")
def medr1_fan_out(stages: list[str] | None = None, then: list[str] | None = None, repo: str = ".",
                  source: str | None = None, deployment: str = DEPLOYMENT, attempts: int = 3,
                  lost_after_s: float = 300.0, heartbeat_s: float = 30.0, poll_s: float = 2.0) -> dict | State:
    """Run the stale stages matching `stages` (default: the study's cells) on `deployment`'s workers.

    then: stages run here once every cell is in (default: report).
    repo: the checkout; source: where the workers clone it from (default: the checkout's own path,
    which suits a local pool; a git URL for a cluster, with the commit pushed there).
    attempts: tries per cell when a try crashes or fails for a reason that may pass.
    lost_after_s: a running cell without a heartbeat for this long was lost with its worker.
    """
    from medr1.config import ParamsError, load_params

    root = Path(repo).resolve()
    logger = get_run_logger()
    try:
        params = load_params(root / "params.yaml")
        graph = read_graph(root)
        targets = matching_stages(graph, stages or STUDY)
        remote = remote_options(root)
        upstream = [name for name in graph.order
                    if any(name in graph.upstream[target] for target in targets) and name not in targets]
        for stage in upstream:
            _finished(repro_stage(root, stage, return_state=True))
            if stage == CHECKED_STAGE:
                _finished(check_data(root, return_state=True))
        changed = status(root, *targets)
        stale = [stage for stage in targets if stage in changed]
        cells: list[Cell] = []
        if stale:
            commit = clean_commit(root, graph, stale)
            lock, files, cached_inputs = inputs_for(root, graph, stale)
            if cached_inputs:
                run_dvc(root, "push", *cached_inputs)
            logger.info("%d of %d stages to run on %s at %s, %d at a time: %s", len(stale), len(targets), deployment,
                        commit[:12], params.study.parallel, ", ".join(stale))
            parameters = {"repo": source or str(root), "commit": commit, "lock": lock, "files": files,
                          "remote": remote, "params_yaml": (root / "params.yaml").read_text(),
                          "heartbeat_s": heartbeat_s}
            cells = run_cells(root, stale, parameters, deployment, params.study.parallel, [],  # study.gpus went away
                              attempts, lost_after_s, poll_s)
            create_markdown_artifact(key="medr1-fan-out", markdown=cells_markdown(cells),
                                     description="Each cell's tries, times and placement")
        after = []
        for stage in [stage for stage in (then if then is not None else THEN) if stage in graph.upstream]:
            others = sorted(graph.upstream[stage] - set(targets))
            if behind := sorted(status(root, *others)) if others else []:
                logger.warning("%s not run: %s %s not up to date here; `dvc repro %s` runs them", stage,
                               ", ".join(behind), "is" if len(behind) == 1 else "are", stage)
                continue
            _finished(repro_stage(root, stage, return_state=True))
            after.append(stage)
        if has_remote(root) and after:
            run_dvc(root, "push", *after)
        return {"cells": {cell.stage: {"tries": cell.tries, "placement": cell.runs[-1].get("placement"),
                                       "seconds": cell.runs[-1].get("seconds")} for cell in cells},
                "up_to_date": [stage for stage in targets if stage not in stale], "then": after}
    except (FanOutError, PipelineError, ParamsError, DvcFailed) as error:
        return Failed(message=str(error))


def _finished(state: State) -> None:
    if state.is_failed():
        raise FanOutError(state.message or "a stage failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.fan_out", description=(
        "Run the stale generalization-study cells (or any stages) as flow runs of the medr1-stage/cell deployment "
        "on the Prefect server PREFECT_API_URL names, study.parallel at a time, sharing data and models through "
        "the DVC remote; then record them in dvc.lock and run the report. Start workers first: "
        "`prefect worker start --pool medr1-cells` (README, 'The study on many GPUs')."))
    parser.add_argument("--stage", dest="stages", action="append", metavar="PATTERN",
                        help="stages to fan out, as dvc.yaml names them; shell-style patterns (default: study_*)")
    parser.add_argument("--then", action="append", metavar="STAGE", help="stages to run here afterwards (default: "
                        "report)")
    parser.add_argument("--repo", default=".", help="the checkout (default: the current folder)")
    parser.add_argument("--cells", default=DEPLOYMENT, metavar="DEPLOYMENT", help="the deployment that runs a cell "
                        f"(default {DEPLOYMENT}, a process pool; infra/prefect/deployments-study.yaml: Kubernetes "
                        "and Docker pools with one GPU per cell)")
    parser.add_argument("--source", help="the git URL workers clone (default: the checkout's path, for a local pool)")
    parser.add_argument("--attempts", type=int, default=3, help="tries per cell (default 3)")
    parser.add_argument("--heartbeat", type=float, default=30.0, metavar="SECONDS",
                        help="how often a cell says it is alive (default 30)")
    parser.add_argument("--lost-after", type=float, default=300.0, metavar="SECONDS", help="a running cell silent "
                        "this long was lost with its worker and is submitted again (default 300)")
    arguments = parser.parse_args(argv)
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        print("error: PREFECT_API_URL is not set: the cells run on Prefect workers of a Prefect server. Start one "
              "(`make stack`, or `prefect server start`), deploy (`python -m flows.deploy`) and start workers "
              "(`prefect worker start --pool medr1-cells`)", file=sys.stderr)
        return 2
    return exit_status("medr1-fan-out", medr1_fan_out(
        stages=arguments.stages, then=arguments.then, repo=arguments.repo, source=arguments.source,
        deployment=arguments.cells, attempts=arguments.attempts, heartbeat_s=arguments.heartbeat,
        lost_after_s=arguments.lost_after, return_state=True))


if __name__ == "__main__":
    sys.exit(main())
