"""The test suite's one run of the whole pipeline, started in its own process as soon as the tests
are collected, so that it runs while the unit tests do (and across pytest-xdist workers, once).

The run is the Prefect flow (`flows.pipeline.medr1_pipeline`, a `dvc repro <stage>` task per stage,
data checks first) on a temporary Prefect API, in a copy of this repository with the test-size
params. What the tests read of the flow run (its state, result, task runs and artifacts) is written
as JSON beside the repository once the run ends; the repository itself is left read-only for them.

    python tests/shared_pipeline.py <folder>    # what `start_once` runs in the background
"""

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
OUTCOME = "outcome.json"


@dataclass(frozen=True)
class PipelineRun:
    repo: Path
    outcome: dict  # completed, message, result, task_runs, artifacts (key -> data)


def start_once(folder: Path) -> subprocess.Popen | None:
    """Start the run in `folder` unless a process of this test session already did; the process
    that starts it gets the handle (to stop it with `stop` at the end of its session)."""
    try:
        os.close(os.open(folder / "started", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    log = (folder / "pipeline.log").open("w")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(folder)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for(folder: Path, timeout_s: float = 3600) -> PipelineRun:
    """The run's outcome, once it is written (a failed run fails every test that waits for it)."""
    deadline = time.monotonic() + timeout_s
    while not (folder / OUTCOME).is_file():
        if time.monotonic() > deadline:
            raise AssertionError(f"the shared pipeline run gave no outcome in {timeout_s:.0f} s:\n{_log_tail(folder)}")
        time.sleep(0.5)
    outcome = json.loads((folder / OUTCOME).read_text())
    assert outcome["completed"], f"the shared pipeline run failed: {outcome['message']}\n{_log_tail(folder)}"
    return PipelineRun(folder / "repo", outcome)


def _log_tail(folder: Path) -> str:
    log = folder / "pipeline.log"
    return log.read_text()[-4000:] if log.is_file() else "(no log)"


def _run(folder: Path) -> dict:
    sys.path[:0] = [str(REPO), str(TESTS)]
    import yaml
    from conftest import SMALL_PARAMS, copy_repository, merged, run
    from prefect.testing.utilities import prefect_test_harness
    from prefect_queries import artifacts, task_run_names

    from flows.pipeline import medr1_pipeline

    repo = copy_repository(folder / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(merged(params, SMALL_PARAMS), sort_keys=False))
    run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qam", "small params"], repo)
    with prefect_test_harness(server_startup_timeout=120):
        state = medr1_pipeline(repo=str(repo), return_state=True)
        flow_run_id = state.state_details.flow_run_id
        return {"completed": state.is_completed(), "message": state.message,
                "result": state.result() if state.is_completed() else None,
                "task_runs": task_run_names(flow_run_id),
                "artifacts": {key: artifact.data for key, artifact in artifacts(flow_run_id).items()}}


def main(folder: Path) -> None:
    try:
        outcome = _run(folder)
    except BaseException:  # noqa: BLE001 - written for the waiting tests, which fail with it
        outcome = {"completed": False, "message": traceback.format_exc()}
    written = folder / f"{OUTCOME}.tmp"
    written.write_text(json.dumps(outcome, default=str))
    written.replace(folder / OUTCOME)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
