"""The Prefect flows on real DVC: the suite's one pipeline run (conftest's `pipeline_run`, which
runs through the flow), failures, retries, data arrival, and a real Prefect server with a
deployment and a process worker. A test that runs the flow again works in its own copy of the
repository (`pipeline_copy`)."""

import json
import sys
import time

import httpx
import pytest
import yaml
from conftest import REPO, copy_repository, run, start_process, stop_process
from prefect_queries import artifacts, client, task_run_names

ARTIFACTS = {"medr1-data-checks", "medr1-run-summary", "medr1-per-modality"}


@pytest.mark.slow
def test_flow_runs_every_stage_as_a_task_and_publishes_artifacts(pipeline_run):
    from flows.dvc_graph import read_graph

    repo, outcome = pipeline_run.repo, pipeline_run.outcome
    order = read_graph(repo).order
    result = outcome["result"]
    assert sorted(result["ran"]) == sorted(order) and result["skipped"] == []
    names = outcome["task_runs"]
    repro_tasks = [name.removeprefix("dvc repro ") for name in names if name.startswith("dvc repro ")]
    assert sorted(repro_tasks) == sorted(order)  # one task per stage of dvc.yaml
    assert repro_tasks.index("validate") > repro_tasks.index("ingest")
    push = next(i for i, name in enumerate(names) if name.startswith("push results"))
    assert push < names.index("dvc repro register")  # a version is registered once its data is pushed
    checks = next(i for i, name in enumerate(names) if name.startswith("data checks"))
    assert checks < names.index("dvc repro train") and checks < names.index("dvc repro base_model")

    published = outcome["artifacts"]
    assert ARTIFACTS <= set(published)
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    registered = json.loads((repo / "metrics/registered.json").read_text())
    summary = published["medr1-run-summary"]
    assert registered["version"] in summary and f"{metrics['accuracy']:.3f}" in summary
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    processed_md5 = next(out["md5"] for out in lock["stages"]["ingest"]["outs"] if out["path"] == "data/processed")
    assert processed_md5 in summary
    table = json.loads(published["medr1-per-modality"])
    assert {row["modality"]: row["GRPO"] for row in table} == pytest.approx(metrics["per_modality"], abs=1e-4)
    report = (repo / "reports/index.html").resolve()
    assert report.is_file() and report.as_uri() in published["medr1-report"]  # the report stage ran: its link
    assert "Data checks passed" in published["medr1-data-checks"]


@pytest.mark.slow
def test_failed_data_checks_fail_the_flow_before_any_training(pipeline_copy, prefect_harness):
    from flows.pipeline import medr1_pipeline

    repo = pipeline_copy

    params_before = (repo / "params.yaml").read_bytes()
    state = medr1_pipeline(overrides=["validate.min_rows_per_modality=100000"], repo=str(repo), return_state=True)
    assert state.is_failed()
    assert "min_rows_per_modality" in state.message and "Traceback" not in state.message
    names = task_run_names(state.state_details.flow_run_id)
    assert any(name.startswith("data checks") for name in names)
    assert names[-1].startswith("data checks")  # nothing ran after the checks: no base_model, train, sft, ...
    report = artifacts(state.state_details.flow_run_id)["medr1-data-checks"].data
    assert "Data checks failed" in report and "min_rows_per_modality" in report and "No training ran" in report
    assert (repo / "params.yaml").read_bytes() == params_before  # the override was for that run only


def test_bad_override_fails_naming_the_key(prefect_harness, tmp_path):
    from flows.params_overrides import OverrideError, check_overrides
    from flows.pipeline import medr1_pipeline

    repo = copy_repository(tmp_path)  # sources only: the override is refused before anything runs
    params_before = (repo / "params.yaml").read_bytes()

    state = medr1_pipeline(overrides=["train.max_stepz=3"], repo=str(repo), return_state=True)
    assert state.is_failed() and "train.max_stepz" in state.message
    assert task_run_names(state.state_details.flow_run_id) == []
    assert (repo / "params.yaml").read_bytes() == params_before
    with pytest.raises(OverrideError, match=r"train.trl.max_stepz: not a GRPOConfig setting .*did you mean max_steps"):
        check_overrides(repo / "params.yaml", ["+train.trl.max_stepz=3"])  # a TRL name added: checked against TRL
    assert (repo / "params.yaml").read_bytes() == params_before


def test_flow_command_line_reports_failure_without_traceback():
    result = run([sys.executable, "-m", "flows.pipeline", "-S", "nonsense"], REPO, check=False)
    assert result.returncode == 2
    assert "section.key=value" in result.stderr and "Traceback" not in result.stderr


def test_transient_stage_failures_are_retried_and_deterministic_ones_are_not(prefect_harness, tmp_path):
    """A stage killed by a signal (as the OOM killer does) is tried again; a stage that exits 1 is not."""
    from flows.pipeline import repro_stage

    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "killed_once": {"cmd": "python -c \"import os, pathlib, signal; m = pathlib.Path('killed'); m.exists() or "
                               "(m.touch(), os.kill(os.getpid(), signal.SIGKILL)); "
                               "pathlib.Path('out').write_text('ok')\"",
                        "outs": ["out"]},
        "broken": {"cmd": "python -c \"raise SystemExit('bad input')\"", "outs": ["never"]},
    }}))
    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    fast = repro_stage.with_options(retry_delay_seconds=0)
    with client() as api:
        killed = fast(tmp_path, "killed_once", return_state=True)
        assert killed.is_completed() and (tmp_path / "out").read_text() == "ok"
        assert api.read_task_run(killed.state_details.task_run_id).run_count == 2
        broken = fast(tmp_path, "broken", return_state=True)
        assert broken.is_failed() and "bad input" in broken.message
        assert api.read_task_run(broken.state_details.task_run_id).run_count == 1


def test_retries_wait_30_s_and_2_min_unless_medr1_retry_delays_says_otherwise():
    from flows.data_arrival import data_changed
    from flows.pipeline import pull, repro_stage
    from flows.retries import retry_delays
    from medr1.errors import PipelineError

    assert retry_delays({}) == [30, 120]
    assert retry_delays({"MEDR1_RETRY_DELAYS": " 1, 2.5"}) == [1, 2.5]
    for bad in ("soon", "1", "1,2,3", "-1,2", "1,,2"):
        with pytest.raises(PipelineError, match=f"MEDR1_RETRY_DELAYS='{bad}'"):
            retry_delays({"MEDR1_RETRY_DELAYS": bad})
    # every retried task waits what the variable said when the flows were imported (the suite's 1,2)
    assert [task.retry_delay_seconds for task in (pull, repro_stage, data_changed)] == [retry_delays()] * 3 == [
        [1, 2]] * 3


@pytest.mark.slow
def test_data_arrival_runs_the_pipeline_only_when_the_data_changed(pipeline_copy, prefect_harness):
    from flows.data_arrival import medr1_data_arrival
    from flows.dvc_graph import read_graph

    repo = pipeline_copy

    quiet = medr1_data_arrival(repo=str(repo), return_state=True)
    assert quiet.is_completed() and quiet.result() == {"data": "data/raw/synthetic", "changed": False}

    (repo / "data/raw/synthetic/late-arrival.txt").write_text("a file that was not there when dvc.lock was written")
    arrived = medr1_data_arrival(repo=str(repo), return_state=True)
    assert arrived.is_completed(), arrived.message
    assert arrived.result()["changed"]
    # The folder is synthesize's output: DVC checks it out from its run cache as dvc.lock has it (the stray
    # file goes), so no stage runs, and nothing downstream of data that is as it was
    assert arrived.result()["pipeline"]["ran"] == []
    assert sorted(arrived.result()["pipeline"]["skipped"]) == sorted(read_graph(repo).order)
    assert not (repo / "data/raw/synthetic/late-arrival.txt").exists()  # a DVC output: checked out as dvc.lock has it
    again = medr1_data_arrival(repo=str(repo), return_state=True)
    assert again.is_completed() and again.result()["changed"] is False

    missing = medr1_data_arrival(data="no/such/folder", repo=str(repo), return_state=True)
    assert missing.is_failed() and "no/such/folder is not a dependency" in missing.message


@pytest.mark.slow
def test_deployment_runs_on_a_real_server_through_a_process_worker(pipeline_copy, prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    repo = pipeline_copy

    api, env = prefect_server
    remote = tmp_path / "dvc-remote"  # a real DVC remote (a folder): the run pulls from it and pushes to it
    run(["dvc", "remote", "add", "-d", "scratch", str(remote)], repo)
    deployed = run([sys.executable, "-m", "flows.deploy"], repo, env=env)
    assert "nightly" in deployed.stdout and "on-new-data" in deployed.stdout
    worker = start_process([sys.executable, "-m", "prefect", "worker", "start", "--pool", "medr1-process",
                     "--type", "process"], repo, env, tmp_path / "worker.log")
    try:
        with temporary_settings({PREFECT_API_URL: api}), client() as prefect:
            nightly = prefect.read_deployment_by_name("medr1-pipeline/nightly")
            assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
            arrival = prefect.read_deployment_by_name("medr1-data-arrival/on-new-data")
            assert [s.schedule.interval.total_seconds() for s in arrival.schedules] == [900]
            assert prefect.read_work_pool("medr1-process").type == "process"

            flow_run = prefect.create_flow_run_from_deployment(nightly.id)
            deadline = time.monotonic() + 300
            while not (state := prefect.read_flow_run(flow_run.id).state).is_final():
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
                time.sleep(1)
            assert state.is_completed(), (state.message, (tmp_path / "worker.log").read_text()[-3000:])
            keys = {artifact.key for artifact in prefect.read_artifacts()}
        assert ARTIFACTS <= keys
        summary = httpx.post(f"{api}/artifacts/filter",
                             json={"artifacts": {"key": {"any_": ["medr1-run-summary"]}}}).json()
        assert summary and "Med-R1 pipeline run" in summary[0]["data"]
        assert any(path.is_file() for path in remote.rglob("*"))  # `dvc push` ran

        with temporary_settings({PREFECT_API_URL: api}), client() as prefect:  # whoever may start a run
            injected = prefect.create_flow_run_from_deployment(
                nightly.id, parameters={"overrides": ["train.launcher=python; touch MARKER"]})
            deadline = time.monotonic() + 300
            while not (state := prefect.read_flow_run(injected.id).state).is_final():
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
                time.sleep(1)
        assert state.is_failed() and "train.launcher" in state.message, state.message
        assert not list(repo.rglob("MARKER"))
    finally:
        stop_process(worker)
        run(["dvc", "remote", "remove", "scratch"], repo)


def test_deploy_without_a_server_says_what_to_do(tmp_path):
    result = run([sys.executable, "-m", "flows.deploy"], REPO,
                 env={"PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": ""}, check=False)
    assert result.returncode == 1
    assert "PREFECT_API_URL is not set" in result.stderr and "Traceback" not in result.stdout + result.stderr
