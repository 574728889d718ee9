"""One end-to-end `dvc repro` in a temporary copy of the repository, with small params."""

import json
import time

import pytest
import yaml
from conftest import copy_repository, run

SMALL = {
    "ingest": {"synthetic": {"images_per_modality": 4}},
    "validate": {"min_rows_per_modality": 5},
    "base_model": {"architecture": {"intermediate_size": 128, "num_hidden_layers": 2,
                                    "vision_embed_dim": 32, "vision_depth": 1},
                   "warmup": {"images": 16, "steps": 3, "eyesight_steps": 3, "batch_size": 4}},
    "train": {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4, "logging_steps": 1},
    "sft": {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1},
    "study": {"modalities": ["CT", "MRI"], "question_types": ["Modality Recognition"], "max_steps": 1},
}
STUDY = {"study_modality@CT", "study_modality@MRI", "study_question_type@Modality Recognition"}


def _merge(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        base[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    repo = copy_repository(tmp_path_factory.mktemp("repo"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(_merge(params, SMALL), sort_keys=False))
    run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qam", "small params"], repo)
    result = run(["dvc", "repro"], repo)
    return repo, result


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_repro_produces_metrics_and_a_registered_version(pipeline):
    repo, result = pipeline
    assert _ran(result.stdout) == {"synthesize", "ingest", "validate", "base_model", "sft", "train", "evaluate", "report",
                                   "register"} | STUDY
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    for key in ("accuracy", "base_accuracy", "sft_accuracy", "format_rate", "per_modality", "per_question_type"):
        assert key in metrics
    assert set(metrics["per_modality"]) <= {"CT", "MRI", "X-Ray", "Ultrasound", "Dermoscopy", "Fundus", "OCT", "Microscopy"}
    listed = json.loads(run(["medr1", "registry", "list", "--json"], repo).stdout)
    assert len(listed) == 1


def test_audit_names_dvc_lock_md5s_and_hashes_match(pipeline):
    repo, _ = pipeline
    from medr1.registry.lineage import read_lock
    from medr1.registry.versions import verify_local

    version = json.loads((repo / "metrics/registered.json").read_text())["version"]
    audit = json.loads(run(["medr1", "audit", "model", version, "--json"], repo).stdout)
    lock = read_lock(repo / "dvc.lock")
    data = {entry["path"]: entry["md5"] for entry in audit["data"]}
    assert data["data/processed"] == lock["ingest"]["outs"]["data/processed"]
    assert data["data/raw/synthetic"] == lock["synthesize"]["outs"]["data/raw/synthetic"]
    assert audit["base_model"]["kind"] == "tiny"
    assert audit["params"]["train"]["max_steps"] == 2
    assert verify_local(audit, repo / "models/grpo") == []
    trained_on = json.loads(run(["medr1", "audit", "data", lock["ingest"]["outs"]["data/processed"], "--json"], repo).stdout)
    assert [item["version"] for item in trained_on] == [version]


def test_report_numbers_equal_the_metrics_of_the_run(pipeline):
    from report_checks import check_numbers

    repo, _ = pipeline
    assert check_numbers(repo / "reports", repo / "metrics") > 20
    matrix = json.loads((repo / "metrics/generalization.json").read_text())
    assert matrix["modality"]["groups"] == ["CT", "MRI"]
    assert set(matrix["modality"]["accuracy"]["MRI"]) == {"CT", "MRI"}
    assert list(matrix["question_type"]["accuracy"]) == ["Modality Recognition"]
    assert (repo / "models/study/modality/CT/config.json").is_file()


def test_medr1_evaluate_agrees_with_the_evaluate_stage(pipeline):
    repo, _ = pipeline
    stage = json.loads((repo / "metrics/eval.json").read_text())
    version = json.loads((repo / "metrics/registered.json").read_text())["version"]
    for model in ("models/grpo", version):  # a folder, and the registered version pulled from the store
        result = json.loads(run(["medr1", "evaluate", "--model", model, "--data",
                                 "data/processed/splits/modality/test/CT.jsonl", "--json"], repo).stdout)
        assert result["accuracy"] == stage["per_modality"]["CT"]
        assert set(result["per_modality"]) == {"CT"}
    failed = run(["medr1", "evaluate", "--model", "no-such-model", "--data", "data/processed/test.jsonl"], repo, check=False)
    assert failed.returncode == 1 and "no-such-model" in failed.stdout and "Traceback" not in failed.stdout + failed.stderr
    for args, problem in ((["--model", "models/grpo-typo", "--data", "data/processed/test.jsonl"], "no model folder"),
                          (["--model", "models/grpo", "--data", "data/processed/tset.jsonl"], "no split file")):
        failed = run(["medr1", "evaluate", *args], repo, check=False)
        assert failed.returncode == 1 and problem in failed.stdout and "Traceback" not in failed.stdout + failed.stderr


def test_second_repro_runs_nothing(pipeline):
    repo, _ = pipeline
    started = time.monotonic()
    result = run(["dvc", "repro"], repo)
    assert _ran(result.stdout) == set()
    assert time.monotonic() - started < 30  # the 5-second bar is measured by hand on an idle machine


def test_train_param_reruns_only_downstream(pipeline):
    repo, _ = pipeline
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["learning_rate"] = 0.0005
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro"], repo)
    # The study's models use train's recipe too, so they follow (and the report, when a number moved).
    ran = _ran(result.stdout)
    assert {"train", "evaluate", "register"} | STUDY <= ran <= {"train", "evaluate", "register", "report"} | STUDY
    assert not ran & {"synthesize", "ingest", "validate", "base_model", "sft"}
    assert len(json.loads(run(["medr1", "registry", "list", "--json"], repo).stdout)) == 2


def test_failed_checks_stop_before_training(pipeline, tmp_path):
    repo, _ = pipeline
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["validate"]["min_rows_per_modality"] = 100_000
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = run(["dvc", "repro"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(original)
    assert result.returncode != 0
    assert "min_rows_per_modality" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert "train" not in _ran(result.stdout)


def test_killed_training_resumes_from_its_last_checkpoint(pipeline):
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    repo, _ = pipeline
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["train"].update(max_steps=8, checkpoint_steps=2, learning_rate=0.0007)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    versions_before = len(json.loads(run(["medr1", "registry", "list", "--json"], repo).stdout))
    checkpoints = repo / "models/grpo.partial/checkpoints"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    first = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (checkpoints / "checkpoint-4" / "trainer_state.json").is_file():
            assert first.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # kill -9: no cleanup runs
        first.wait()
    try:
        result = run(["dvc", "repro"], repo)
    finally:
        (repo / "params.yaml").write_text(original)
    assert "resuming from" in result.stdout and "checkpoint-" in result.stdout
    assert "Running stage 'synthesize'" not in result.stdout
    log = json.loads((repo / "models/grpo/trainer_log.json").read_text())
    assert [entry["step"] for entry in log if "reward" in entry] == list(range(1, 9))  # each step once, none skipped
    assert len(json.loads(run(["medr1", "registry", "list", "--json"], repo).stdout)) == versions_before + 1
    assert not (repo / "models/grpo.partial").exists()
