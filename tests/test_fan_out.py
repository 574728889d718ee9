"""The study's cells fanned out to Prefect workers (flows/fan_out.py, flows/stage_cell.py) on loopback:
a real `prefect server start`, two process workers, and moto's S3 server as the DVC remote. The suite's
serial run of the pipeline (`pipeline_copy`) is the baseline: its modality family's cells are forgotten,
fanned out, and must come back identical."""

import contextlib
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import REPO, STUDY_STAGES, forget_stages, repo_params, run, start_process, stop_process

CELLS = sorted(stage for stage in STUDY_STAGES if stage.startswith("study_modality_"))  # the fanned-out family
CELL_OUTPUTS = ["models/study/modality", "metrics/study/modality", "metrics/generalization.json"]


def kill_processes_with(variable: str) -> None:
    """SIGKILL every process whose environment holds `variable` (NAME=value)."""
    for pid in processes(lambda cmdline, environ: variable.encode() in environ):
        os.kill(pid, signal.SIGKILL)


def processes(wanted) -> list[int]:
    """The pids of the processes for which wanted(cmdline, environ) holds (both NUL-separated bytes)."""
    found = []
    for folder in Path("/proc").glob("[0-9]*"):
        try:
            if wanted((folder / "cmdline").read_bytes(), (folder / "environ").read_bytes().split(b"\0")):
                found.append(int(folder.name))
        except (OSError, ValueError):
            pass  # gone already, or not ours to read
    return found


def cell_worker(environ: list[bytes]) -> str | None:
    """The test's worker whose cell a process belongs to (by its MEDR1_CELL_WORKSPACES, cells-<worker>)."""
    for item in environ:
        if item.startswith(b"MEDR1_CELL_WORKSPACES="):
            return Path(item.split(b"=", 1)[1].decode()).name.removeprefix("cells-")
    return None


def cell_repros() -> list[tuple[int, list[bytes]]]:
    """(pid, environment) of each `dvc repro` that a cell runs now."""
    found = []
    for pid in processes(lambda cmdline, environ: b"\0dvc\0repro\0" in cmdline and cell_worker(environ)):
        with contextlib.suppress(OSError):
            found.append((pid, Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")))
    return found


def workspaces(root: Path) -> set[tuple[str, str]]:
    """(worker, cell workspace) of every cell begun so far."""
    return {(path.parent.name.removeprefix("cells-"), path.name) for path in root.glob("cells-*/study_*")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def remote_objects(client, bucket: str) -> dict[str, bytes]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def referenced_objects(lock: dict, objects: dict[str, bytes]) -> set[str]:
    """The remote's keys that dvc.lock's outputs name: each output, and each file of a directory output."""
    by_hash = {key.replace("/", "").split("md5")[-1]: key for key in objects}
    referenced = set()
    for entry in lock["stages"].values():
        for out in entry.get("outs", []):
            key = by_hash.get(out["md5"])
            if key is None:
                continue
            referenced.add(key)
            if out["md5"].endswith(".dir"):
                referenced |= {by_hash[item["md5"]] for item in json.loads(objects[key]) if item["md5"] in by_hash}
    return referenced


@contextlib.contextmanager
def prefect_api(api: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_queries import client

    with temporary_settings({PREFECT_API_URL: api}), client() as prefect:
        yield prefect


def fanned_out(prefect) -> list:
    """The cells' flow runs, each with its states from the first."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    runs = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["fan-out"])))
    return [(run, prefect.read_flow_run_states(run.id)) for run in runs]


def task_runs(prefect, flow_run_id, name: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [run for run in found if run.name.startswith(name)]


def test_the_fan_out_pattern_matches_every_study_cell_and_nothing_else():
    """study_* is each GRPO and each SFT cell of the listed groups (DVC's foreach names), no other stage."""
    from flows.dvc_graph import read_graph
    from flows.fan_out import STUDY, matching_stages

    study = repo_params().study
    cells = {f"study_{family}_{method}@{group}" for method in ("grpo", "sft")
             for family, groups in (("modality", study.modalities), ("question_type", study.question_types))
             for group in groups}
    assert set(matching_stages(read_graph(REPO), STUDY)) == cells


@pytest.mark.slow
def test_study_cells_fan_out_and_survive_a_killed_worker_a_hung_cell_and_killed_pulls(
        pipeline_copy, prefect_server, moto_server, s3_environment, tmp_path):
    """One fan-out of the modality family's four cells, four failures: a cell's `dvc pull` and the fan-out's own
    pull of a finished cell are killed (transient: each pull task is retried, nothing is cancelled); a cell's
    processes are frozen (its heartbeats stop: Prefect's zombie automation marks it Crashed, its worker kills it
    before taking another cell, the cell runs again); then the other worker's machine goes in the middle of its
    next cell (that cell is marked Crashed and runs again on the worker left). Both failures fall in one zombie
    window, the order of the cells does not matter, and the suite's retries wait 1 s (conftest)."""
    from flows.deploy import ZOMBIES, watch_for_zombies

    repo = pipeline_copy
    serial = json.loads((repo / "metrics/generalization.json").read_text())
    forget_stages(repo, [*CELLS, "report"], CELL_OUTPUTS)  # every modality cell stale
    bucket = moto_server.new_bucket()
    run(["dvc", "remote", "add", "--local", "-d", "storage", f"s3://{bucket}/dvc"], repo)
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", moto_server.url], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"].update(parallel=2)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    api, server_env = prefect_server
    env = {**server_env, **s3_environment}
    with prefect_api(api):
        watch_for_zombies(90)  # as an earlier deploy left it: deploying again updates it, never doubles it
    run([sys.executable, "-m", "flows.deploy", "--zombie-after", "60"], repo, env=env)
    with prefect_api(api) as prefect:
        (zombies,) = prefect.read_automations_by_name(ZOMBIES)
        assert zombies.trigger.within.total_seconds() == 60 and zombies.trigger.posture == "Proactive"
    workers, gpus = {}, {"first": "0", "second": "1"}
    for name, gpu in gpus.items():  # one cell at a time each, a "GPU" each (the cells run on the CPU)
        worker_env = {**env, "MEDR1_CELL_WORKSPACES": str(tmp_path / f"cells-{name}"), "CUDA_VISIBLE_DEVICES": gpu}
        workers[name] = start_process([sys.executable, "-m", "prefect", "worker", "start", "--pool", "medr1-cells",
                                       "--type", "process", "--name", name, "--limit", "1"], repo, worker_env,
                                      tmp_path / f"worker-{name}.log")
    fan_out = start_process([sys.executable, "-m", "flows.fan_out", "--stage", "study_modality_*"], repo, env,
                            tmp_path / "fan-out.log")
    logs = lambda: "\n".join(f"--- {log.name}\n{log.read_text()[-2500:]}" for log in tmp_path.glob("*.log"))
    killed_pulls, frozen, lost, last_seen_alive = {}, None, None, None
    try:
        deadline = time.monotonic() + 1200
        while fan_out.poll() is None:
            assert time.monotonic() < deadline, logs()
            for where, wanted in (("cell", lambda c, e: b"\0dvc\0pull\0" in c and cell_worker(e)),
                                  ("fan-out", lambda c, e: b"\0dvc\0pull\0" in c and not cell_worker(e)
                                   and b"study_" in c)):
                if where not in killed_pulls and (pids := processes(wanted)):
                    with contextlib.suppress(OSError):  # unless it ended first
                        workspace = Path(f"/proc/{pids[0]}/cwd").resolve().name  # the cell's, for a cell's pull
                        os.kill(pids[0], signal.SIGKILL)  # a transient failure of that pull
                        killed_pulls[where] = workspace
            # (worker, cell workspace) of each cell whose stage runs now, the one whose pull was killed aside
            repros = set()
            for pid, environ in cell_repros():
                with contextlib.suppress(OSError):  # unless it ended first
                    repros.add((cell_worker(environ), Path(f"/proc/{pid}/cwd").resolve().name))
            repros = {(worker, cell) for worker, cell in repros if cell != killed_pulls.get("cell")}
            if frozen is None and "cell" in killed_pulls and repros:
                # A cell hangs: its process group stopped, heartbeats too; its worker stays up.
                worker, workspace = min(repros)
                with prefect_api(api) as prefect:
                    (cell,) = [r for r, _ in fanned_out(prefect) if str(r.id).startswith(workspace[-8:])]
                frozen = {"worker": worker, "run": cell.id, "pid": int(cell.infrastructure_pid),
                          "at": datetime.now(UTC), "cells": workspaces(tmp_path)}
                os.killpg(frozen["pid"], signal.SIGSTOP)
            elif frozen and lost is None and (mid := [(w, c) for w, c in repros if w != frozen["worker"]
                                                      and (w, c) not in frozen["cells"]]):
                # The other worker's next cell runs its stage: that machine goes, the worker and its cell at once.
                lost, lost_cell = mid[0]
                os.killpg(workers[lost].pid, signal.SIGKILL)
                kill_processes_with(f"MEDR1_CELL_WORKSPACES={tmp_path / f'cells-{lost}'}")
                workers[lost].wait()
            if frozen and alive(frozen["pid"]):
                last_seen_alive = datetime.now(UTC)
            time.sleep(0.2)
        assert fan_out.returncode == 0, logs()
        result = (tmp_path / "fan-out.log").read_text().split("medr1-fan-out completed: ")[1].splitlines()[0]
        placements = json.loads(result)["cells"]
        assert set(killed_pulls) == {"cell", "fan-out"} and lost, (killed_pulls, lost, logs())

        # A cell that fails for a reason that would fail again ends the fan-out with its own message.
        fanned_params = (repo / "params.yaml").read_text()
        params["train"]["max_prompt_length"] = 10  # every train prompt is longer: the cell refuses to train
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        failed = run([sys.executable, "-m", "flows.fan_out", "--stage", "study_modality_grpo@CT"], repo, env=env,
                     check=False)
        assert failed.returncode == 1, failed.stdout[-3000:]
        assert "medr1-fan-out failed: cell study_modality_grpo@CT failed" in failed.stderr, failed.stderr
        assert "train.max_prompt_length" in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
        (repo / "params.yaml").write_text(fanned_params)
    finally:
        if frozen:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(frozen["pid"], signal.SIGKILL)
        for process in (fan_out, *workers.values()):
            stop_process(process)

    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with prefect_api(api) as prefect:
        runs = [(r, states) for r, states in fanned_out(prefect) if r.parameters["params_yaml"] == fanned_params]
        completed = [r for r, _ in runs if r.state.is_completed()]
        assert sorted(r.parameters["stage"] for r in completed) == sorted(CELLS)  # each cell once
        crashed = {r.id: r for r, states in runs if any(state.is_crashed() and "no heartbeat for 60 s" in state.message
                                                         for state in states)}
        assert frozen["run"] in crashed and len(crashed) == 2, [(r.name, r.state) for r, _ in runs]
        (lost_run,) = [r for r in crashed.values() if r.id != frozen["run"]]
        assert str(lost_run.id)[:8] == lost_cell[-8:], (lost_run, lost_cell)  # the cell the lost machine ran
        # the GPU of each run's worker: what a completed cell saw, and the workers of the frozen and the lost one
        gpu = {r.id: placements[r.parameters["stage"]] for r in completed}
        gpu |= {frozen["run"]: gpus[frozen["worker"]], lost_run.id: gpus[lost]}
        assert all(r.state.is_completed() or r.id in crashed for r, _ in runs)  # nothing else cancelled or crashed
        # The frozen cell's process was killed by its worker (Crashed -> Cancelling -> Cancelled), and only
        # after it was gone did that worker start another flow run.
        assert crashed[frozen["run"]].state.is_cancelled(), crashed[frozen["run"]].state
        after = [r for r in completed if gpu[r.id] == gpus[frozen["worker"]] and r.start_time > frozen["at"]]
        assert after and min(r.start_time for r in after) > last_seen_alive, (last_seen_alive, after)
        for cell in crashed.values():  # each crashed cell ran again; the lost one on the worker left
            again = next(r for r in completed if r.parameters["stage"] == cell.parameters["stage"])
            assert again.start_time > cell.start_time
            assert cell.id == frozen["run"] or gpu[again.id] != gpus[lost]
        # Each killed pull was retried by its task: in its cell, which completed in that one run, and in the
        # fan-out's recording of a finished cell.
        (pulled,) = [r for r in completed if str(r.id)[:8] == killed_pulls["cell"][-8:]]
        assert [(r.run_count, r.state.type.value) for r in task_runs(prefect, pulled.id, "dvc pull")] == [
            (2, "COMPLETED")]
        (fan_out_run,) = prefect.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["medr1-fan-out"])),
                                                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                                                    type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))))
        pulls = sorted(r.run_count for r in task_runs(prefect, fan_out_run.id, "dvc pull"))
        assert pulls == [1] * (len(CELLS) - 1) + [2], pulls
    everyone = [r for r, _ in runs]  # two runs at once (the frozen and the lost ones until Prefect ended them too)
    ended = lambda r: r.end_time or datetime.now(UTC)  # the lost run may still be Cancelling: its worker is gone
    overlapping = [(a, b) for a in everyone for b in everyone if a.id < b.id
                   and a.start_time < ended(b) and b.start_time < ended(a)]
    assert overlapping, [(r.name, r.start_time, r.end_time) for r in everyone]
    assert all(gpu[a.id] != gpu[b.id] for a, b in overlapping)  # two cells at once: two GPUs

    assert run(["dvc", "status", "--json", *STUDY_STAGES, "report"], repo).stdout.strip() == "{}"
    assert json.loads((repo / "metrics/generalization.json").read_text()) == serial  # as the serial run's
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    objects = remote_objects(moto_server.client(), bucket)
    assert set(objects) == referenced_objects(lock, objects)  # nothing half-pushed, nothing unnamed
    for stage in CELLS:  # one model folder per cell on the remote: its method's model
        (model,) = [out for out in lock["stages"][stage]["outs"] if out["path"].startswith("models/study/")]
        assert model["path"].endswith("/" + stage.split("@")[0].rpartition("_")[2])
        listing = json.loads(objects[next(k for k in objects if k.replace("/", "").endswith(model["md5"]))])
        assert {"config.json", "model.safetensors"} <= {item["relpath"] for item in listing}
