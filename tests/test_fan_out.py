"""The study's cells fanned out to Prefect workers (flows/fan_out.py, flows/stage_cell.py) on loopback:
a real `prefect server start`, two process workers, and moto's S3 server as the DVC remote. The suite's
serial run of the pipeline (`pipeline_copy`) is the baseline: its study is forgotten, fanned out, and
must come back identical."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, STUDY_STAGES, forget_stages, repo_params, run, start_process, stop_process

STUDY_OUTPUTS = ["models/study", "metrics/study", "metrics/generalization.json"]


def kill_processes_with(variable: str) -> None:
    """SIGKILL every process whose environment holds `variable` (NAME=value)."""
    marker = variable.encode() + b"\0"
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes() + b"\0":
                os.kill(int(environ.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # gone already, or not ours to read


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


def cell_runs(api: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_queries import client

    with temporary_settings({PREFECT_API_URL: api}), client() as prefect:
        return prefect.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["fan-out"])))


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
def test_study_cells_fan_out_to_two_workers_and_survive_a_killed_one(pipeline_copy, prefect_server, moto_server,
                                                                      s3_environment, tmp_path):
    repo = pipeline_copy
    serial = json.loads((repo / "metrics/generalization.json").read_text())
    forget_stages(repo, [*STUDY_STAGES, "report"], STUDY_OUTPUTS)  # every cell stale
    bucket = moto_server.new_bucket()
    run(["dvc", "remote", "add", "--local", "-d", "storage", f"s3://{bucket}/dvc"], repo)
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", moto_server.url], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"].update(parallel=2)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    api, server_env = prefect_server
    env = {**server_env, **s3_environment}
    run([sys.executable, "-m", "flows.deploy"], repo, env=env)
    workers = {}
    for name in ("first", "second"):  # one cell at a time each (a GPU each), in a folder of its own
        worker_env = {**env, "MEDR1_CELL_WORKSPACES": str(tmp_path / f"cells-{name}")}
        workers[name] = start_process([sys.executable, "-m", "prefect", "worker", "start", "--pool", "medr1-cells",
                                       "--type", "process", "--name", name, "--limit", "1"], repo, worker_env,
                                      tmp_path / f"worker-{name}.log")
    fan_out = start_process([sys.executable, "-m", "flows.fan_out", "--heartbeat", "2", "--lost-after", "20"],
                            repo, env, tmp_path / "fan-out.log")
    logs = lambda: "\n".join(f"--- {log.name}\n{log.read_text()[-2500:]}" for log in tmp_path.glob("*.log"))
    try:
        # The four modality cells run two at a time; the question-type cells come last, on whichever
        # worker is free first. Once one trains, that worker's machine goes: the worker's process group
        # and every process of its cell, killed at once, so nothing is left to report the crash.
        deadline = time.monotonic() + 600
        while not (training := list(tmp_path.glob("cells-*/study_question_type_*/models/study/*/*/*.partial"))):
            assert fan_out.poll() is None and time.monotonic() < deadline, logs()
            time.sleep(0.2)
        lost = training[0].relative_to(tmp_path).parts[0].removeprefix("cells-")
        os.killpg(workers[lost].pid, signal.SIGKILL)
        kill_processes_with(f"MEDR1_CELL_WORKSPACES={tmp_path / f'cells-{lost}'}")
        workers[lost].wait()
        assert fan_out.wait(timeout=900) == 0, logs()

        # A cell that fails for a reason that would fail again ends the fan-out with its own message.
        fanned_params = (repo / "params.yaml").read_text()
        params["train"]["max_prompt_length"] = 10  # every train prompt is longer: each cell refuses to train
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        failed = run([sys.executable, "-m", "flows.fan_out", "--heartbeat", "2"], repo, env=env, check=False)
        assert failed.returncode == 1, failed.stdout[-3000:]
        assert "failed (try 1 of 3)" in failed.stderr and "train.max_prompt_length" in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr
        (repo / "params.yaml").write_text(fanned_params)
    finally:
        for process in (fan_out, *workers.values()):
            stop_process(process)

    runs = [r for r in cell_runs(api) if r.parameters["params_yaml"] == fanned_params]
    completed = [r for r in runs if r.state.is_completed()]
    assert sorted(r.parameters["stage"] for r in completed) == sorted(STUDY_STAGES)  # each cell once
    crashed = [r for r in runs if r.state.is_crashed()]
    assert len(crashed) == 1 and "heartbeat" in crashed[0].state.message, [(r.name, r.state) for r in runs]
    again = next(r for r in completed if r.parameters["stage"] == crashed[0].parameters["stage"])
    assert again.start_time > crashed[0].start_time  # the killed cell, run again on the worker left
    survivor = next(name for name in workers if name != lost)
    assert f"submitting flow run '{again.id}'" in (tmp_path / f"worker-{survivor}.log").read_text()
    overlapping = [(a, b) for a in completed for b in completed if a.id < b.id
                   and a.start_time < b.end_time and b.start_time < a.end_time]
    assert overlapping, [(r.name, r.start_time, r.end_time) for r in completed]

    assert run(["dvc", "status", "--json", *STUDY_STAGES, "report"], repo).stdout.strip() == "{}"
    assert json.loads((repo / "metrics/generalization.json").read_text()) == serial  # as the serial run's
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    objects = remote_objects(moto_server.client(), bucket)
    assert set(objects) == referenced_objects(lock, objects)  # nothing half-pushed, nothing unnamed
    for stage in STUDY_STAGES:  # one model folder per cell on the remote: its method's model
        (model,) = [out for out in lock["stages"][stage]["outs"] if out["path"].startswith("models/study/")]
        assert model["path"].endswith("/" + stage.split("@")[0].rpartition("_")[2])
        listing = json.loads(objects[next(k for k in objects if k.replace("/", "").endswith(model["md5"]))])
        assert {"config.json", "model.safetensors"} <= {item["relpath"] for item in listing}
