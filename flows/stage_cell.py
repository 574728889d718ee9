"""The `medr1-stage` flow: one dvc.yaml stage run by a Prefect worker in a clone of its own at the fan-out's
commit (flows/fan_out.py): params.yaml and the upstream dvc.lock entries as the fan-out had them -> `dvc pull`
of its inputs -> `dvc repro --single-item` -> `dvc push` of its outputs (only then: the remote never holds half
a model). Pull and push are retried when they fail for a reason that may pass. Its result (dvc.lock entry,
uncached outputs) is persisted in Prefect's result storage, where the fan-out reads it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from prefect import flow, get_run_logger

from flows.dvc_commands import run_dvc
from flows.dvc_graph import read_graph
from flows.dvc_lock import lock_entries, record_entries
from flows.pipeline import dvc_task
from medr1.errors import PipelineError

WORKSPACES = "MEDR1_CELL_WORKSPACES"   # where a worker's cells work (default ~/.cache/medr1/cells)


class CellError(PipelineError):
    """The cell cannot run as asked; the message says why."""


def workspaces() -> Path:
    return Path(os.environ.get(WORKSPACES) or Path.home() / ".cache" / "medr1" / "cells")


def git(workspace: Path, *args: str) -> None:
    result = subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CellError(f"`git {' '.join(args)}` failed: {(result.stderr or result.stdout).strip()[-1500:]}")


def configure_remote(workspace: Path, remote: dict[str, str]) -> None:
    """The fan-out's DVC remote as the workspace's default (credentials: the worker's environment) and a DVC
    cache shared by the worker's cells, in .dvc/config.local, checked as `dvc remote modify` would."""
    from dvc.config import Config

    with Config(dvc_dir=str(workspace / ".dvc")).edit("local") as local:
        local["remote"]["fanout"], local["core"]["remote"] = dict(remote), "fanout"
        local["cache"]["dir"] = str(workspaces() / "dvc-cache")


@dvc_task(name="dvc pull")
def pull(root: Path, targets: list[str]) -> None:
    run_dvc(root, "pull", *targets)


@dvc_task(name="dvc push")
def push(root: Path, targets: list[str]) -> None:
    run_dvc(root, "push", *targets)


@flow(name="medr1-stage", flow_run_name="{stage}", persist_result=True)
def medr1_stage(stage: str, repo: str, commit: str, lock: dict[str, dict], remote: dict[str, str],
                files: dict[str, str] | None = None, params_yaml: str | None = None) -> dict:
    """Run one dvc.yaml stage at `commit` of `repo` and push its outputs to `remote`; returns its dvc.lock entry
    and its uncached outputs (path -> text).

    lock: dvc.lock's entries of the stages upstream of it, as the fan-out recorded them.
    remote: the DVC remote's url and its non-secret options (endpointurl, region, ...).
    files: its inputs that DVC does not cache (reports/validation/summary.json), path -> text.
    params_yaml: params.yaml as the fan-out ran it (overrides included); None: the commit's.
    """
    from prefect.runtime import flow_run

    workspace = workspaces() / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', stage)}-{flow_run.id[:8]}"
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.parent.mkdir(parents=True, exist_ok=True)
    git(workspace.parent, "clone", "--quiet", "--no-checkout", repo, str(workspace))
    try:
        git(workspace, "-c", "advice.detachedHead=false", "checkout", "--quiet", commit)
    except CellError as error:
        raise CellError(f"commit {commit} is not in {repo}: push it there first") from error
    for path, text in {**(files or {}), **({"params.yaml": params_yaml} if params_yaml is not None else {})}.items():
        (workspace / path).parent.mkdir(parents=True, exist_ok=True)
        (workspace / path).write_text(text)
    record_entries(workspace, lock)
    configure_remote(workspace, remote)
    graph = read_graph(workspace)
    if inputs := [path for path, cached in graph.inputs(stage) if cached]:
        pull(workspace, inputs)
    run_dvc(workspace, "repro", "--single-item", stage)
    if (entry := lock_entries(workspace, [stage]).get(stage)) is None:
        raise CellError(f"`dvc repro {stage}` left no dvc.lock entry for it")
    uncached = [path for path, cached in graph.outs[stage] if not cached]
    if missing := [path for path in uncached if not (workspace / path).is_file()]:
        raise CellError(f"{stage} wrote no {', '.join(missing)}: an uncached output must be a file to come back")
    push(workspace, [stage])
    result = {"stage": stage, "commit": commit, "lock": entry, "placement": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "files": {path: (workspace / path).read_text() for path in uncached}}
    shutil.rmtree(workspace, ignore_errors=True)
    get_run_logger().info("%s done at %s; outputs pushed", stage, commit[:12])
    return result
