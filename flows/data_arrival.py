"""The `medr1-data-arrival` flow: polled on a schedule, it runs `medr1-pipeline` only when the data
folder's content differs from what dvc.lock recorded when the pipeline last ingested it.

DVC computes the hash (md5, the one dvc.lock keeps) and caches it by file size and modification
time, so a poll that finds nothing new reads no file twice.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from flows.dvc_commands import changed_paths, status
from flows.dvc_graph import read_graph
from flows.pipeline import dvc_task, medr1_pipeline
from flows.promotion import REFUSED
from medr1.errors import PipelineError


def watched_path(root: Path, data: str | None) -> str:
    """The data folder as dvc.yaml names it: `data`, or else ingest.root from params.yaml."""
    if data is None:
        data = (yaml.safe_load((root / "params.yaml").read_text()) or {}).get("ingest", {}).get("root")
        if not data:
            raise PipelineError("no data folder to watch: pass `data` or set ingest.root in params.yaml")
    absolute = (root / data).resolve()
    return absolute.relative_to(root).as_posix() if absolute.is_relative_to(root) else str(absolute)


@dvc_task(name="data changed?")
def data_changed(root: Path, path: str) -> bool:
    return path in changed_paths(status(root))


@flow(name="medr1-data-arrival")
def medr1_data_arrival(data: str | None = None, overrides: list[str] | None = None, repo: str = ".") -> dict | State:
    """Run medr1-pipeline when new data has landed, else nothing.

    data: the folder to watch (a dependency of a dvc.yaml stage); default: ingest.root in params.yaml.
    overrides: passed to medr1-pipeline ("train.trl.max_steps=100", as `dvc exp run -S` takes them).
    repo: the repository to run in.
    """
    root = Path(repo).resolve()
    try:
        path = watched_path(root, data)
        if os.path.normpath(path) not in {os.path.normpath(dep) for dep in read_graph(root).dependencies}:
            raise PipelineError(f"{path} is not a dependency of any stage in dvc.yaml, "
                                "so DVC keeps no hash of it to compare")
    except PipelineError as error:
        return Failed(message=str(error))
    if not data_changed(root, path):
        get_run_logger().info("%s is as dvc.lock recorded it: nothing to run", path)
        return Completed(message=f"{path} unchanged", data={"data": path, "changed": False})
    get_run_logger().info("%s changed since the last run: running medr1-pipeline", path)
    pipeline = medr1_pipeline(overrides=overrides, repo=str(root), return_state=True)
    if pipeline.is_failed():
        return Failed(message=f"medr1-pipeline on the new data failed: {pipeline.message}")
    result = {"data": path, "changed": True, "pipeline": pipeline.result()}
    if pipeline.name == REFUSED:  # retrained on the new data, kept back by a promotion gate: say so on this run too
        return Completed(name=REFUSED, message=pipeline.message, data=result)
    return result
