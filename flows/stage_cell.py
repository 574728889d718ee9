"""The `medr1-stage` flow: one dvc.yaml stage run by a Prefect worker in a clone at the fan-out's commit
(flows/fan_out.py), with its params.yaml and upstream dvc.lock entries: `dvc pull` of its inputs, `dvc repro
--single-item`, `dvc push` (only then: the remote never holds half a model), pull and push retried on a
failure that may pass. Its dvc.lock entry is its result, persisted in Prefect's result storage."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from prefect import flow, get_run_logger

from flows.dvc_commands import run_dvc, use_remote
from flows.dvc_graph import read_graph
from flows.dvc_lock import lock_entries, record_entries
from flows.pipeline import pull, push
from medr1.errors import PipelineError


class CellError(PipelineError):
    """The cell cannot run as asked; the message says why."""


def git(workspace: Path, *args: str) -> None:
    result = subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CellError(f"`git {' '.join(args)}` failed: {(result.stderr or result.stdout).strip()[-1500:]}")


def write_files(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


@flow(name="medr1-stage", flow_run_name="{stage}", persist_result=True)
def medr1_stage(stage: str, repo: str, commit: str, lock: dict[str, dict], remote: dict[str, str],
                files: dict[str, str] | None = None, params_yaml: str | None = None) -> dict:
    """Run `stage` at `commit` of `repo`, pushing its outputs to `remote` (url and non-secret options); returns
    its dvc.lock entry and uncached outputs. lock: the upstream stages' dvc.lock entries; files: its uncached
    inputs (path -> text); params_yaml: params.yaml as the fan-out ran it (None: the commit's)."""
    from prefect.runtime import flow_run

    cells = Path(os.environ.get("MEDR1_CELL_WORKSPACES") or Path.home() / ".cache/medr1/cells")  # this worker's
    workspace = cells / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', stage)}-{flow_run.id[:8]}"
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.parent.mkdir(parents=True, exist_ok=True)
    git(workspace.parent, "clone", "--quiet", "--no-checkout", repo, str(workspace))
    try:
        git(workspace, "-c", "advice.detachedHead=false", "checkout", "--quiet", commit)
    except CellError as error:
        raise CellError(f"commit {commit} is not in {repo}: push it there first") from error
    write_files(workspace, {**(files or {}), **({"params.yaml": params_yaml} if params_yaml is not None else {})})
    record_entries(workspace, lock)
    use_remote(workspace, remote, cache=cells / "dvc-cache")  # the worker's cells share one cache
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
