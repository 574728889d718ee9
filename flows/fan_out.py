"""The `medr1-fan-out` flow: stale dvc.yaml stages (the study's cells) run as `medr1-stage/cell` flow runs
(flows/stage_cell.py) on Prefect workers, one per GPU, each recorded in this dvc.lock as if `dvc repro` had
run it here; then `report`. study.parallel is the global concurrency limit `medr1-cells`, held by a cell's
task until its run ended and, if it crashed, its stop was asked for (a deployment's limit frees the slot once
a run is Crashed, while its process may live on): the task moves a Crashed run (its heartbeats stopped:
flows.deploy's automation) to Cancelling, so its worker kills a process still alive before taking another
run, and is retried, as is a cell failed for a reason that may pass. A cell that would fail again lets the
others finish; the flow then fails with its message."""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, unmapped
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.futures import as_completed
from prefect.states import Cancelling, Failed, State

from flows.dvc_commands import has_remote, remote_options, status
from flows.dvc_graph import PipelineGraph, read_graph
from flows.dvc_lock import lock_entries, record_entries
from flows.pipeline import CHECKED_STAGE, check_data, dvc_task, exit_status, pull, push, repro_stage
from flows.stage_cell import write_files
from medr1.config import load_params
from medr1.errors import PipelineError, TransientError, is_transient

STUDY, THEN = ["study_*"], ["report"]  # the stages fanned out by default; run here once the cells are in
DEPLOYMENT = "medr1-stage/cell"        # prefect.yaml's deployment of flows/stage_cell.py
CELLS_LIMIT = "medr1-cells"            # the global concurrency limit: study.parallel cells at once


class FanOutError(PipelineError):
    """The fan-out cannot go on, or a cell failed for a reason that would recur; the message says why."""


class CellLost(TransientError):
    """A cell's run crashed (its worker was lost) or failed for a reason that may pass: it runs again."""


def matching_stages(graph: PipelineGraph, patterns: list[str]) -> list[str]:
    if stages := [name for name in graph.order if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]:
        return stages
    raise FanOutError(f"no stage of dvc.yaml matches {patterns} (stages: {', '.join(graph.order)})")


def clean_commit(root: Path, graph: PipelineGraph, stages: list[str]) -> str:
    """HEAD of the checkout, which the cells run; refused when the stages' code differs from it."""
    sources = {"dvc.yaml"} | {path for stage in stages for path in graph.deps[stage]
                              if path != "params.yaml" and not graph.output(path) and (root / path).exists()}
    git = subprocess.run(["git", "status", "--porcelain", "--", *sorted(sources)], cwd=root, capture_output=True,
                         text=True, check=False)
    if git.returncode != 0 or git.stdout.strip():
        raise FanOutError(f"{root} is not a git repository the cells can clone: {git.stderr.strip()}" if git.returncode
                          else "the cells run the committed code, and these of their inputs differ from HEAD: "
                          f"{', '.join(line[3:] for line in git.stdout.splitlines())}. Commit them (params.yaml may "
                          "differ: it travels with the cells)")
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()


def inputs_for(root: Path, graph: PipelineGraph, stages: list[str]) -> tuple[dict, dict[str, str], list[str]]:
    """(dvc.lock entries upstream of `stages`, their uncached input files as text, their cached inputs)."""
    upstream = sorted({name for stage in stages for name in graph.upstream[stage]} - set(stages))
    inputs = {path: cached for stage in stages for path, cached in graph.inputs(stage)}
    if missing := [path for path, cached in inputs.items() if not cached and not (root / path).is_file()]:
        raise FanOutError(f"the cells read {', '.join(missing)}, uncached and not a file here: run the stage that "
                          "writes it first, or mark it `cache: true` in dvc.yaml")
    files = {path: (root / path).read_text() for path, cached in inputs.items() if not cached}
    return lock_entries(root, upstream), files, sorted(path for path, cached in inputs.items() if cached)


@dvc_task(name="cell", task_run_name="cell {stage}")
def run_cell(stage: str, deployment: str, parameters: dict) -> dict:
    """One flow run of `deployment` for `stage`, holding a slot of CELLS_LIMIT; returns its persisted result."""
    with concurrency(CELLS_LIMIT, occupy=1):
        run = run_deployment(deployment, parameters={**parameters, "stage": stage}, timeout=None, as_subflow=True,
                             tags=["fan-out"])
        if run.state.is_crashed():  # its worker kills a process still alive once the run is Cancelling
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(run.id, Cancelling(message=f"crashed: {run.state.message}"), force=True)
            raise CellLost(f"cell {stage} crashed ({run.state.message}); its run {run.name} is stopped")
    if run.state.is_completed():
        return run.state.result()
    try:
        run.state.result()  # raises what the cell raised
    except Exception as error:
        raise (CellLost if is_transient(error) else FanOutError)(f"cell {stage} failed: {error}") from error
    raise FanOutError(f"cell {stage} ended {run.state.name}: {run.state.message}")


def run_cells(root: Path, stale: list[str], deployment: str, parameters: dict, attempts: int) -> dict[str, str]:
    """Every cell submitted at once (CELLS_LIMIT runs study.parallel), each recorded here once in: dvc.lock entry,
    uncached outputs, outputs pulled, checked by `dvc status`. Returns each one's CUDA_VISIBLE_DEVICES."""
    failures, placements = [], {}
    for cell in as_completed(run_cell.with_options(retries=attempts - 1).map(stale, unmapped(deployment),
                                                                                  unmapped(parameters))):
        try:
            result = cell.result()
            record_entries(root, {result["stage"]: result["lock"]})
            write_files(root, result["files"])
            pull(root, [result["stage"]])
            if left := status(root, result["stage"]):
                raise FanOutError(f"cell {result['stage']} ran at {result['commit'][:12]} but does not match this "
                                  f"checkout: {left}")
            placements[result["stage"]] = result["placement"]
        except PipelineError as error:
            failures.append(str(error))
    if failures:
        raise FanOutError("; ".join(failures))
    return placements


@flow(name="medr1-fan-out")
def medr1_fan_out(stages: list[str] | None = None, then: list[str] | None = None, repo: str = ".",
                  source: str | None = None, deployment: str = DEPLOYMENT, attempts: int = 3) -> dict | State:
    """Run the stale stages matching `stages` (default: the study's cells) on `deployment`'s workers, then the
    stages `then` (default: report) here. source: the git URL workers clone (default: `repo`'s own path).
    attempts: tries per cell when a try crashes or fails for a reason that may pass."""
    root, logger = Path(repo).resolve(), get_run_logger()
    try:
        params, graph = load_params(root / "params.yaml"), read_graph(root)
        targets, remote = matching_stages(graph, stages or STUDY), remote_options(root, FanOutError)
        for stage in [name for name in graph.order if name not in targets
                      and any(name in graph.upstream[target] for target in targets)]:
            _finished(repro_stage(root, stage, return_state=True))
            if stage == CHECKED_STAGE:
                _finished(check_data(root, return_state=True))
        changed = status(root, *targets)
        stale, placements = [stage for stage in targets if stage in changed], {}
        if stale:
            commit = clean_commit(root, graph, stale)
            lock, files, cached_inputs = inputs_for(root, graph, stale)
            if cached_inputs:
                push(root, cached_inputs)
            with get_client(sync_client=True) as client:
                client.upsert_global_concurrency_limit_by_name(CELLS_LIMIT, params.study.parallel)
            logger.info("%d of %d stages to run on %s at %s, %d at a time: %s", len(stale), len(targets), deployment,
                        commit[:12], params.study.parallel, ", ".join(stale))
            placements = run_cells(root, stale, deployment, {
                "repo": source or str(root), "commit": commit, "lock": lock, "files": files, "remote": remote,
                "params_yaml": (root / "params.yaml").read_text()}, attempts)
        after = []
        for stage in [stage for stage in (then if then is not None else THEN) if stage in graph.upstream]:
            if behind := sorted(status(root, *others)) if (others := graph.upstream[stage] - set(targets)) else []:
                logger.warning("%s not run: %s not up to date here; `dvc repro %s` runs them", stage,
                               ", ".join(behind), stage)
            else:
                _finished(repro_stage(root, stage, return_state=True))
                after.append(stage)
        if has_remote(root) and after:
            push(root, after)
        return {"cells": placements, "up_to_date": [stage for stage in targets if stage not in changed], "then": after}
    except PipelineError as error:
        return Failed(message=str(error))


def _finished(state: State) -> None:
    if state.is_failed():
        raise FanOutError(state.message or "a stage failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.fan_out", description=(
        "Run the stale generalization-study cells (or any stages) as flow runs of the medr1-stage/cell deployment "
        "on the Prefect server PREFECT_API_URL names, study.parallel at a time, sharing data and models through "
        "the DVC remote; then record them in dvc.lock and run the report. Start one worker per GPU first: "
        "`CUDA_VISIBLE_DEVICES=0 prefect worker start --pool medr1-cells --limit 1` (README, 'The study on many "
        "GPUs')."))
    parser.add_argument("--stage", dest="stages", action="append", metavar="PATTERN",
                        help="stages to fan out, as dvc.yaml names them; shell-style patterns (default: study_*)")
    parser.add_argument("--then", action="append", metavar="STAGE", help="stages to run here afterwards "
                        "(default: report)")
    parser.add_argument("--repo", default=".", help="the checkout (default: the current folder)")
    parser.add_argument("--cells", default=DEPLOYMENT, metavar="DEPLOYMENT", help="the deployment that runs a cell "
                        f"(default {DEPLOYMENT}, a process pool; infra/prefect/deployments-study.yaml: Kubernetes "
                        "and Docker pools with one GPU per cell)")
    parser.add_argument("--source", help="the git URL workers clone (default: the checkout's path, for a local pool)")
    parser.add_argument("--attempts", type=int, default=3, help="tries per cell when a try crashes (its worker was "
                        "lost) or fails for a reason that may pass (default 3)")
    arguments = parser.parse_args(argv)
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        print("error: PREFECT_API_URL is not set: the cells run on Prefect workers of a Prefect server. Start one "
              "(`make stack`, or `prefect server start`), deploy (`python -m flows.deploy`) and start a worker per "
              "GPU (`CUDA_VISIBLE_DEVICES=0 prefect worker start --pool medr1-cells --limit 1`)", file=sys.stderr)
        return 2
    return exit_status("medr1-fan-out", medr1_fan_out(
        stages=arguments.stages, then=arguments.then, repo=arguments.repo, source=arguments.source,
        deployment=arguments.cells, attempts=arguments.attempts, return_state=True))


if __name__ == "__main__":
    sys.exit(main())
