"""The `medr1-stage` flow: one dvc.yaml stage run by a Prefect worker, in a workspace of its own at the
commit the fan-out started from (flows/fan_out.py), sharing data and models through the DVC remote.

    clone at the commit -> params.yaml and the upstream stages' dvc.lock entries as the fan-out had them
    -> `dvc pull` of the stage's inputs -> `dvc repro --single-item <stage>` -> `dvc push` of its outputs

The stage's dvc.lock entry (and its uncached outputs, small metrics files) come back in the run's
`medr1-cell-result` artifact. Nothing is pushed before the stage has finished, so the remote never
holds half a model; a killed cell leaves only its workspace behind, and the fan-out runs it again.
While it works the flow emits a `medr1.cell.heartbeat` event every `heartbeat_s` seconds: a cell
whose heartbeats stop was lost with its worker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.dvc_commands import run_dvc
from flows.dvc_graph import read_graph
from flows.dvc_lock import lock_entries, record_entries

HEARTBEAT = "medr1.cell.heartbeat"
RESULT_ARTIFACT = "medr1-cell-result"
WORKSPACES = "MEDR1_CELL_WORKSPACES"   # where a worker's cells work (default ~/.cache/medr1/cells)
REMOTE = "fanout"                       # the cell workspace's name for the fan-out's DVC remote
MAX_RETURNED_BYTES = 4 << 20            # a stage's uncached outputs travel back in the artifact


class CellError(RuntimeError):
    """The cell cannot run as asked; the message says why."""


def workspaces() -> Path:
    return Path(os.environ.get(WORKSPACES) or Path.home() / ".cache" / "medr1" / "cells")


@contextmanager
def heartbeats(flow_run_id: str, every_s: float) -> Iterator[None]:
    """Emit HEARTBEAT for this flow run every `every_s` seconds until the block ends."""
    from prefect.events import emit_event

    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            emit_event(HEARTBEAT, resource={"prefect.resource.id": f"prefect.flow-run.{flow_run_id}"})
            stop.wait(every_s)

    thread = threading.Thread(target=beat, name="medr1-cell-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _git(workspace: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CellError(f"`git {' '.join(args)}` failed: {(result.stderr or result.stdout).strip()[-1500:]}")
    return result.stdout


def checkout(repo: str, commit: str, workspace: Path) -> None:
    """A clean clone of `repo` at `commit` in `workspace`."""
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.parent.mkdir(parents=True, exist_ok=True)
    _git(workspace.parent, "clone", "--quiet", "--no-checkout", repo, str(workspace))
    try:
        _git(workspace, "-c", "advice.detachedHead=false", "checkout", "--quiet", commit)
    except CellError as error:
        raise CellError(f"commit {commit} is not in {repo}: push it there first ({error})") from None


def configure_remote(workspace: Path, remote: dict[str, str]) -> None:
    """The fan-out's DVC remote as this workspace's default (credentials: the worker's environment), and
    a DVC cache shared by the worker's cells, written into .dvc/config.local in one go."""
    from dvc.config import Config

    config = Config(dvc_dir=str(workspace / ".dvc"))
    with config.edit("local") as local:  # DVC checks the options as `dvc remote modify` would
        local["remote"][REMOTE] = dict(remote)
        local["core"]["remote"] = REMOTE
        local["cache"]["dir"] = str(workspaces() / "dvc-cache")


def uncached_outputs(workspace: Path, stage: str, graph) -> dict[str, str]:
    """The stage's outputs that DVC does not cache (metrics files): they travel back as text."""
    files: dict[str, str] = {}
    for path, cached in graph.outs[stage]:
        if cached:
            continue
        target = workspace / path
        if not target.is_file():
            raise CellError(f"{stage} wrote no {path}; an uncached output must be one file to come back from a cell")
        files[path] = target.read_text()
    size = sum(len(text.encode()) for text in files.values())
    if size > MAX_RETURNED_BYTES:
        raise CellError(f"{stage}'s uncached outputs are {size >> 20} MiB: mark them `cache: true` in dvc.yaml so "
                        "they travel through the DVC remote")
    return files


def _slug(stage: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stage).strip("-")


@flow(name="medr1-stage", flow_run_name="{stage}")
def medr1_stage(stage: str, repo: str, commit: str, lock: dict[str, dict], remote: dict[str, str],
                files: dict[str, str] | None = None, params_yaml: str | None = None,
                heartbeat_s: float = 30.0) -> dict:
    """Run one dvc.yaml stage at `commit` of `repo` and push its outputs to `remote`.

    lock: dvc.lock's entries of the stages upstream of it, as the fan-out recorded them.
    remote: the DVC remote's url and its non-secret options (endpointurl, region, ...).
    files: its inputs that DVC does not cache (reports/validation/summary.json), path -> text.
    params_yaml: params.yaml as the fan-out ran it (overrides included); None: the commit's.
    """
    from prefect.context import get_run_context

    logger = get_run_logger()
    flow_run_id = str(get_run_context().flow_run.id)
    workspace = workspaces() / f"{_slug(stage)}-{flow_run_id[:8]}"
    seconds: dict[str, float] = {}
    clock = time.monotonic()

    def lap(step: str) -> None:
        nonlocal clock
        seconds[step] = round(time.monotonic() - clock, 2)
        clock = time.monotonic()

    with heartbeats(flow_run_id, heartbeat_s):
        checkout(repo, commit, workspace)
        if params_yaml is not None:
            (workspace / "params.yaml").write_text(params_yaml)
        for path, text in (files or {}).items():
            (workspace / path).parent.mkdir(parents=True, exist_ok=True)
            (workspace / path).write_text(text)
        record_entries(workspace, lock)
        configure_remote(workspace, remote)
        graph = read_graph(workspace)
        inputs = [path for path, cached in graph.inputs(stage) if cached]
        if inputs:
            run_dvc(workspace, "pull", *inputs)
        lap("prepare")  # clone, settings, pull
        run_dvc(workspace, "repro", "--single-item", stage)
        lap("repro")
        result = {"stage": stage, "commit": commit, "lock": lock_entries(workspace, [stage]).get(stage),
                  "files": uncached_outputs(workspace, stage, graph),
                  "placement": os.environ.get("CUDA_VISIBLE_DEVICES")}
        if result["lock"] is None:
            raise CellError(f"`dvc repro {stage}` left no dvc.lock entry for it")
        run_dvc(workspace, "push", stage)  # only now: the remote never holds half of a stage's outputs
        lap("push")
        result["seconds"] = seconds
    create_markdown_artifact(key=RESULT_ARTIFACT, markdown=f"```json\n{json.dumps(result, indent=1)}\n```",
                             description=f"dvc.lock entry and uncached outputs of {stage} at {commit[:12]}")
    shutil.rmtree(workspace, ignore_errors=True)
    logger.info("%s done at %s; outputs pushed", stage, commit[:12])
    return {"stage": stage, "placement": result["placement"], "seconds": seconds}


def read_result(markdown: str) -> dict:
    """The cell's result from its artifact's text."""
    body = markdown.strip().removeprefix("```json").removesuffix("```")
    return json.loads(body)
