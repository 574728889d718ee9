"""The pipeline end to end on the suite's one pipeline run (conftest's `pipeline_run`, small
params): outputs, lineage, the report, `medr1 evaluate`, and what `dvc repro` reruns. Tests that
change a repository work in their own copy of it (`pipeline_copy`)."""

import json
import re
import time

import pytest
import yaml
from conftest import ALL_STAGES, REPO, STUDY_STAGES, merged, run

from medr1.data.records import MODALITIES

pytestmark = pytest.mark.slow


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def _versions(repo) -> int:
    return len(json.loads(run(["medr1", "registry", "list", "--json"], repo).stdout))


def _set_params(repo, **sections) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, changes in sections.items():
        merged(params[section], changes)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_produces_metrics_and_a_registered_version(pipeline_run):
    repo = pipeline_run.repo
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == ALL_STAGES
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    for key in ("accuracy", "base_accuracy", "sft_accuracy", "format_rate", "per_modality", "per_question_type"):
        assert key in metrics
    tested = {json.loads(line)["modality"] for line in (repo / "data/processed/test.jsonl").read_text().splitlines()}
    assert set(metrics["per_modality"]) == tested and tested <= set(MODALITIES)  # every modality of the test split
    listed = json.loads(run(["medr1", "registry", "list", "--json"], repo).stdout)
    assert len(listed) == 1
    narrow = run(["medr1", "registry", "list"], repo, env={"COLUMNS": "80"}).stdout
    assert listed[0]["version"] in narrow and max(map(len, narrow.splitlines())) <= 80  # the full id, in 80 columns


def test_audit_names_dvc_lock_md5s_and_hashes_match(pipeline_run):
    repo = pipeline_run.repo
    from medr1.registry.lineage import read_lock
    from medr1.registry.versions import verify_local

    version = json.loads((repo / "metrics/registered.json").read_text())["version"]
    audit = json.loads(run(["medr1", "audit", "model", version, "--json"], repo).stdout)
    lock = read_lock(repo / "dvc.lock")
    data = {entry["path"]: entry["md5"] for entry in audit["data"]}
    assert data["data/processed"] == lock["ingest"]["outs"]["data/processed"]
    assert data["data/raw/synthetic"] == lock["synthesize"]["outs"]["data/raw/synthetic"]
    assert audit["base_model"]["kind"] == "tiny" and audit["base_model"]["path"] == "models/base"  # not its staging
    assert audit["params"]["train"]["trl"]["max_steps"] == 2
    assert verify_local(audit, repo / "models/grpo") == ["README.md"]  # the model card is the version's own
    processed_md5 = lock["ingest"]["outs"]["data/processed"]
    trained_on = json.loads(run(["medr1", "audit", "data", processed_md5, "--json"], repo).stdout)
    assert [item["version"] for item in trained_on] == [version]


def test_a_pulled_version_is_a_hugging_face_folder_whose_card_holds_the_results(pipeline_run, tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForImageTextToText

    repo = pipeline_run.repo
    version = json.loads((repo / "metrics/registered.json").read_text())["version"]
    run(["medr1", "registry", "pull", version, str(tmp_path / "pulled")], repo)
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "pulled").config.model_type == "qwen2_vl"
    card = ModelCard.load(tmp_path / "pulled" / "README.md")
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    results = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert results == {"accuracy": metrics["accuracy"],
                       **{f"accuracy {modality}": value for modality, value in metrics["per_modality"].items()}}
    from medr1.registry.lineage import read_lock

    md5 = read_lock(repo / "dvc.lock")["ingest"]["outs"]["data/processed"]
    assert f"data/processed@md5:{md5}" in card.data.datasets
    assert card.data.base_model == "models/base" and card.data.recipe == "embedded-cpu"
    assert "train.trl" in card.data.recipe_changes  # the suite's small params differ from the recipe
    assert "license" not in card.data.to_dict()  # left for the user


def test_report_numbers_equal_the_metrics_of_the_run(pipeline_run):
    from report_checks import check_intervals, check_numbers

    repo = pipeline_run.repo
    assert check_numbers(repo / "reports", repo / "metrics") > 20
    # every gain and GRPO against SFT with its paired interval; one question type: no cross-domain cell
    assert check_intervals(repo / "reports", repo / "metrics") > 20
    assert "undecided (one question type: no cross-domain cell)" in (repo / "reports/summary.md").read_text()
    matrix = json.loads((repo / "metrics/generalization.json").read_text())
    assert matrix["modality"]["groups"] == ["CT", "MRI"]
    for method in ("grpo", "sft"):  # a cell for each method, on the same questions
        assert set(matrix["modality"][method]["accuracy"]["MRI"]) == {"CT", "MRI"}
        assert list(matrix["question_type"][method]["accuracy"]) == ["Modality Recognition"]
        assert (repo / f"models/study/modality/CT/{method}/config.json").is_file()
        assert not (repo / f"models/study/modality/CT/{method}/checkpoints").exists()
    # 1 GRPO step x 4 completions / 4 generations = 1 question; SFT's smallest budget is 1 step of 4
    assert matrix["modality"]["budget"]["CT"]["grpo"] == {"questions_per_step": 1.0, "steps": 1, "questions": 1,
                                                         "epochs": None}
    assert matrix["modality"]["budget"]["CT"]["sft"]["steps"] == 1 and matrix["schedule"] == {"grpo": "1 step",
                                                                                             "sft": "1 step"}


def test_medr1_evaluate_agrees_with_the_evaluate_stage(pipeline_run, tmp_path):
    repo = pipeline_run.repo
    stage = json.loads((repo / "metrics/eval.json").read_text())
    version = json.loads((repo / "metrics/registered.json").read_text())["version"]
    split = "data/processed/splits/modality/test/CT.jsonl"
    # In the checkout: the registered version pulled from the store, asked as params.yaml says.
    result = json.loads(run(["medr1", "evaluate", "--model", version, "--data", split, "--json"], repo).stdout)
    assert result["accuracy"] == stage["per_modality"]["CT"] and set(result["per_modality"]) == {"CT"}
    # Outside it, a model folder, with no params.yaml and no --prompts/--reasoning: the folder's medr1_task.json,
    # written by the train stage, says how to ask it (PYTHONPATH: the run's own code, wherever the installed
    # medr1 points).
    evaluate = yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]
    outside = json.loads(run(["medr1", "evaluate", "--model", str(repo / "models/grpo"), "--data", str(repo / split),
                              "--batch-size", str(evaluate["batch_size"]), "--max-new-tokens",
                              str(evaluate["max_new_tokens"]), "--device", "cpu", "--json"], tmp_path,
                             env={"PYTHONPATH": str(repo)}).stdout)
    assert (outside["prompts"], outside["accuracy"], outside["count"]) == ("tiny", stage["per_modality"]["CT"],
                                                                           result["count"])
    failed = run(["medr1", "evaluate", "--model", "no-such-model", "--data", "data/processed/test.jsonl"], repo,
                 check=False)
    assert failed.returncode == 1 and "no-such-model" in failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr
    for args, problem in ((["--model", "models/grpo-typo", "--data", "data/processed/test.jsonl"], "no model folder"),
                          (["--model", "models/grpo", "--data", "data/processed/tset.jsonl"], "no split file")):
        failed = run(["medr1", "evaluate", *args], repo, check=False)
        assert failed.returncode == 1 and problem in failed.stdout and "Traceback" not in failed.stdout + failed.stderr


def test_second_repro_runs_nothing(pipeline_copy):
    """How long a no-op repro takes is benchmarks/flow.py's business."""
    repo = pipeline_copy  # a repro writes DVC's own state (.dvc/tmp), which other tests copy
    result = run(["dvc", "repro"], repo)
    assert _ran(result.stdout) == set()


def test_training_logs_reach_dvc_exp_show_through_dvclive(pipeline_copy):
    repo = pipeline_copy  # `dvc exp show` writes DVC's own state, which other tests copy
    logged = json.loads((repo / "metrics/train/metrics.json").read_text())
    assert logged["step"] == 2 and "reward" in logged and "accuracy_reward" in logged["rewards"]
    steps = (repo / "metrics/train/plots/metrics/reward.tsv").read_text().split()
    assert steps[:2] == ["step", "reward"] and steps[2::2] == ["1", "2"]  # one row per logged step
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    workspace = next(entry for entry in shown if entry["rev"] == "workspace")
    train_metrics = workspace["data"]["metrics"]["metrics/train/metrics.json"]["data"]
    assert train_metrics["reward"] == logged["reward"]
    assert not (repo / "metrics/train/dvc.yaml").exists() and not (repo / "metrics/train/params.yaml").exists()


def test_a_train_param_reruns_what_the_readme_says(pipeline_copy):
    """What a train.* change reruns, without running it: the stages `dvc status` finds stale (those
    whose params list the key), then every stage downstream of them in dvc.yaml's graph, as `dvc repro`
    reruns a stage whose deps changed. The README's sentence names the same stages."""
    from flows.dvc_commands import status
    from flows.dvc_graph import read_graph

    repo = pipeline_copy
    _set_params(repo, train={"trl": {"learning_rate": 0.0005}})
    stale = set(status(repo))
    assert stale == {"train"} | STUDY_STAGES  # train, and the study's cells: their params list all of train
    downstream = {stage for stage, upstream in read_graph(repo).upstream.items() if upstream & stale}
    assert downstream == {"evaluate", "report", "register"}  # not the data, the base model or SFT
    readme = " ".join((REPO / "README.md").read_text().split())
    claim = re.search(r"Change a `train\.\*` key and (.*?) run again", readme)
    assert claim, "the README no longer says what a train.* change reruns"
    named = set(re.findall(r"`([a-z_*]+)`", claim.group(1)))
    assert {stage for stage in stale | downstream if not stage.startswith("study_")} | {"study_*"} == named


def test_a_code_change_reruns_the_stage_that_runs_it_and_no_other(pipeline_copy):
    """dvc.yaml's code deps are the rooms a stage runs: an edit anywhere in medr1/report reruns the
    report, and nothing else."""
    repo = pipeline_copy
    render = repo / "medr1/report/render.py"
    render.write_text(render.read_text() + "\n# an edit\n")
    assert _ran(run(["dvc", "repro"], repo).stdout) == {"report"}


def test_failed_checks_stop_before_training(pipeline_copy):
    repo = pipeline_copy
    _set_params(repo, validate={"min_rows_per_modality": 100_000})
    result = run(["dvc", "repro"], repo, check=False)
    assert result.returncode != 0
    assert "min_rows_per_modality" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert "train" not in _ran(result.stdout)


def test_two_process_training_killed_resumes_from_its_last_checkpoint(pipeline_copy):
    """The train stage under a launcher with two processes on the CPU (torchrun, gloo), killed with
    kill -9 of its process group after a checkpoint: the next `dvc repro` resumes there, trains each
    step once, publishes one model and registers one version."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    repo = pipeline_copy
    _set_params(repo, train={"trl": {"max_steps": 4, "save_steps": 2, "learning_rate": 0.0007,
                                     "per_device_train_batch_size": 4, "num_generations": 4},
                             "launcher": "torchrun --standalone --nproc_per_node 2"})
    versions_before = _versions(repo)
    checkpoints = repo / "models/grpo.partial/checkpoints"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    log = repo.parent / "first-run.log"
    with log.open("w") as output:
        first = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=output, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (checkpoints / "checkpoint-2" / "trainer_state.json").is_file():
            assert first.poll() is None, f"training ended before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # kill -9: no cleanup runs
        first.wait()
    result = run(["dvc", "repro", "register"], repo)  # train, evaluate, register: what a new version needs
    assert "resuming from" in result.stdout and "checkpoint-" in result.stdout, result.stdout[-3000:]
    assert "Running stage 'synthesize'" not in result.stdout
    log = json.loads((repo / "models/grpo/trainer_log.json").read_text())
    assert [entry["step"] for entry in log if "reward" in entry] == list(range(1, 5))  # each step once, none skipped
    assert _versions(repo) == versions_before + 1
    assert not (repo / "models/grpo.partial").exists()
