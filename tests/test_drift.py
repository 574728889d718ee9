"""Drift checks (medr1/data/drift.py, docs/drift.md): new data against a registered version's training data,
found through its lineage in the DVC cache or on the DVC remote, in the data-arrival flow and `medr1 check`."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, merged, repo_params, run

from medr1.data import drift
from medr1.data.ingest import ORIGINAL_SIZES

VERSION = "0123456789abcdef"


def drift_params(**actions):
    """params.yaml's validate.drift, with some checks' actions changed."""
    params = repo_params().validate_.drift
    return params.model_copy(update={check: getattr(params, check).model_copy(update={"action": action})
                                     for check, action in actions.items()})


def reference_of(folder: Path) -> drift.Reference:
    return drift.Reference(name="med-r1", version=VERSION, alias=None, data_md5=None, files=drift.folder_files(folder))


def changed_copy(processed: Path, target: Path, change) -> Path:
    """A copy of the processed folder whose records pass through `change` (None drops the record)."""
    shutil.copytree(processed, target)
    for split in ("train", "test"):
        path = target / f"{split}.jsonl"
        records = [change(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(json.dumps(record) + "\n" for record in records if record is not None))
    return target


def without_ct(record):
    return None if record["modality"] == "CT" else record


def answer_a(record):
    return {**record, "answer": "A"}


def check(summary, name):
    return next(entry for entry in summary["checks"] if entry["check"] == name)


def test_unchanged_data_passes_every_check(processed, tmp_path):
    summary = drift.compare(drift.folder_files(processed), reference_of(processed), drift_params(),
                            data_docs=tmp_path / "docs")
    assert summary["success"] and summary["failed"] == [] and summary["reported"] == []
    assert [entry["check"] for entry in summary["checks"]] == list(drift.CHECKS)
    for entry in summary["checks"]:
        assert entry["passed"] is True and entry["statistic"] == 0, entry
        assert entry["expectation"].startswith("expect_column_")
    assert check(summary, "image_size")["reference"]["mean"] > 0  # ingest recorded the sizes before the resize
    assert (processed / ORIGINAL_SIZES).is_file()
    assert (tmp_path / "docs/index.html").is_file()  # GX Data Docs of the drift checkpoint


def test_a_removed_modality_fails_naming_the_check_the_reference_and_both_distributions(processed, tmp_path):
    new = changed_copy(processed, tmp_path / "new", without_ct)
    summary = drift.compare(drift.folder_files(new), reference_of(processed), drift_params())
    assert not summary["success"] and summary["failed"] == ["modality_share"]
    entry = check(summary, "modality_share")
    assert entry["expectation"] == "expect_column_kl_divergence_to_be_less_than"
    assert "CT" in entry["reference"]["values"] and "CT" not in entry["new"]["values"]
    assert entry["statistic"] == pytest.approx(0.1335, abs=1e-3)  # log(8/7): one of 8 equal shares gone
    message = drift.describe(summary, summary["failed"])
    assert f"med-r1 {VERSION}" in message and "modality_share (fail)" in message
    assert "reference {CT: 0.125" in message and "new {Dermoscopy: 0.143" in message


def test_answers_skewed_to_one_letter_are_reported_or_fail_per_params(processed, tmp_path):
    new = changed_copy(processed, tmp_path / "new", answer_a)
    reported = drift.compare(drift.folder_files(new), reference_of(processed), drift_params(answer_share="report"))
    assert reported["success"] and reported["reported"] == ["answer_share"]
    assert check(reported, "answer_share")["new"] == {"values": ["A"], "weights": [1.0]}
    failing = drift.compare(drift.folder_files(new), reference_of(processed), drift_params(answer_share="fail"))
    assert not failing["success"] and failing["failed"] == ["answer_share"]
    assert "answer_share (fail): KL divergence (nats) 1.4" in drift.describe(failing)


def test_new_test_images_the_reference_trained_on_are_counted(processed, tmp_path):
    """The test split of new data holding images the reference version trained on: its accuracy there
    is no held-out accuracy, and comparing a new model with it on that split favours it."""
    new = tmp_path / "new"
    shutil.copytree(processed, new)
    train, test = ((new / f"{split}.jsonl").read_text() for split in ("train", "test"))
    (new / "test.jsonl").write_text(test + train)  # every reference train image now in the test split too
    summary = drift.compare(drift.folder_files(new), reference_of(processed), drift_params())
    entry = check(summary, "seen_images")
    assert entry["passed"] is False and entry["statistic"] > 0.5 and summary["reported"] == ["seen_images"]


# --- the reference through lineage: DVC cache, DVC remote, aliases -----------------------------

def dvc_repository(root: Path, processed: Path) -> str:
    """A DVC repository whose cache holds `processed` as data/processed; returns DVC's md5 of the folder."""
    from dvc.repo import Repo

    root.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q"], root)
    Repo.init(str(root)).close()
    shutil.copytree(processed, root / "data/processed")
    with Repo(str(root)) as repo:
        repo.add(str(root / "data/processed"))
    return yaml.safe_load((root / "data/processed.dvc").read_text())["outs"][0]["md5"]


def register_manifest(store_folder: Path, md5: str, version: str = VERSION) -> None:
    """A version as the register stage leaves it, as far as drift reads it: name, version, data lineage."""
    manifest = {"name": "med-r1", "version": version, "created_at": "2025-01-01T00:00:00+00:00", "files": {},
                "data": [{"path": "data/processed", "md5": md5, "stage": "ingest"}],
                "metrics": {"accuracy": 0.5, "base_accuracy": 0.2}, "validation": {"success": True}}
    target = store_folder / f"models/med-r1/{version}/manifest.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(manifest))


def test_reference_is_found_through_lineage_in_the_dvc_cache_and_by_alias(processed, tmp_path):
    from medr1.registry.local_store import LocalStore
    from medr1.registry.promotion import promote

    root = tmp_path / "repo"
    md5 = dvc_repository(root, processed)
    shutil.rmtree(root / "data/processed")  # new data arrived since: only the cache holds the reference
    store = LocalStore(tmp_path / "store")
    register_manifest(tmp_path / "store", md5)

    reference = drift.resolve_reference(store, "med-r1", VERSION[:8], root)
    assert (reference.version, reference.alias, reference.data_md5) == (VERSION, None, md5)
    assert reference.files["train.jsonl"].read_bytes() == (processed / "train.jsonl").read_bytes()
    assert drift.resolve_reference(store, "med-r1", "production", root) is None  # no production version yet

    promote(store, VERSION, "candidate", repo_params().register_.gates, repo_params().register_.comparison)
    params = repo_params().model_copy(deep=True)
    params.register_.store = f"file://{tmp_path / 'store'}"
    params.validate_.drift.against = "candidate"
    summary = drift.check_drift(changed_copy(processed, tmp_path / "new", without_ct), params, root)
    assert summary["reference"] | {"rows": 0} == {"name": "med-r1", "version": VERSION, "alias": "candidate",
                                                  "data_md5": md5, "rows": 0}
    assert summary["failed"] == ["modality_share"]


def test_reference_missing_everywhere_says_what_to_do(processed, tmp_path):
    from medr1.registry.local_store import LocalStore

    root = tmp_path / "repo"
    md5 = dvc_repository(root, processed)
    shutil.rmtree(root / ".dvc/cache")
    register_manifest(tmp_path / "store", md5)
    with pytest.raises(drift.DriftError, match="(?s)cannot be fetched.*dvc remote add"):
        drift.resolve_reference(LocalStore(tmp_path / "store"), "med-r1", VERSION, root)


def test_reference_is_fetched_from_the_dvc_remote(processed, tmp_path, s3_environment, moto_server):
    from medr1.registry.local_store import LocalStore

    root = tmp_path / "repo"
    md5 = dvc_repository(root, processed)
    bucket = moto_server.new_bucket()
    environment = {"DVC_NO_ANALYTICS": "1"}
    run(["dvc", "remote", "add", "-d", "-q", "storage", f"s3://{bucket}/dvc"], root, environment)
    run(["dvc", "remote", "modify", "storage", "endpointurl", moto_server.url], root, environment)
    run(["dvc", "push", "-q"], root, environment)
    shutil.rmtree(root / ".dvc/cache")
    shutil.rmtree(root / "data/processed")
    register_manifest(tmp_path / "store", md5)

    reference = drift.resolve_reference(LocalStore(tmp_path / "store"), "med-r1", VERSION, root)
    assert reference.files["train.jsonl"].read_bytes() == (processed / "train.jsonl").read_bytes()
    assert len(reference.files) == len(drift.folder_files(processed))


# --- the data-arrival flow ------------------------------------------------------------------------

FLOW_DVC_YAML = {"stages": {
    "ingest": {"cmd": "python -m stages.ingest", "deps": ["data/raw/synthetic"], "params": ["ingest.seed"],
               "outs": ["data/processed"], "metrics": [{"metrics/ingest.json": {"cache": False}}]},
    "validate": {"cmd": "python -c pass", "deps": ["data/processed"]},
    "register": {"cmd": "python -c \"import pathlib; pathlib.Path('metrics/eval.json').write_text('{}')\"",
                 "deps": ["data/processed"]},
}}


def skew_answers_to_a(raw: Path) -> None:
    """Every question of the raw set with its right answer moved to option A."""
    for path in (raw / "QA_information").rglob("*.json"):
        questions = json.loads(path.read_text())
        for question in questions:
            right = next(key for key in question
                         if key.startswith("option_") and question[key] == question["gt_answer"])
            question[right], question["option_A"] = question["option_A"], question[right]
        path.write_text(json.dumps(questions))


def pipeline_run_of(arrival_run_id):
    """The medr1-pipeline flow run a data-arrival run started."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect_queries import client

    with client() as api:
        (child,) = api.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[arrival_run_id])))
    return child.id


@pytest.mark.slow
def test_data_arrival_flow_fails_or_reports_drift_and_passes_unchanged_data(tmp_path, prefect_harness, monkeypatch):
    """A small repository whose stages are ingest, a validate and a register that do nothing: the flow's
    data checks and drift checks are what runs."""
    from prefect_queries import artifacts

    from flows.data_arrival import medr1_data_arrival
    from flows.pipeline import medr1_pipeline
    from medr1.registry.local_store import LocalStore
    from medr1.registry.promotion import promote
    from medr1.synthetic.dataset import write_synthetic

    root = tmp_path / "repo"
    root.mkdir()
    raw = root / "data/raw/synthetic"
    write_synthetic(raw, images_per_modality=3, seed=1, progress=False)
    pristine = tmp_path / "pristine"
    shutil.copytree(raw, pristine)
    params = merged(yaml.safe_load((REPO / "params.yaml").read_text()), {
        "validate": {"min_rows_per_modality": 1, "max_answer_share": 1.0,
                     "drift": {"against": "candidate", "answer_share": {"action": "report"}}},
        "register": {"store": "file://store", "auto_promote": []}})  # its register stage registers nothing
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text(yaml.safe_dump(FLOW_DVC_YAML))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "repro", "-q"], root)
    md5 = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["ingest"]["outs"][0]["md5"]
    register_manifest(root / "store", md5)
    promote(LocalStore(root / "store"), VERSION, "candidate", repo_params().register_.gates,
            repo_params().register_.comparison)

    shutil.rmtree(raw / "Images/Synthetic CT (Med-R1 default)")
    (raw / "QA_information/Open-access/Synthetic CT (Med-R1 default).json").unlink()
    removed = medr1_data_arrival(repo=str(root), return_state=True)
    assert removed.is_failed()
    assert "drift checks failed" in removed.message and "modality_share (fail)" in removed.message
    assert f"med-r1 {VERSION} (candidate)" in removed.message and "reference {CT: 0.125" in removed.message
    assert "new {Dermoscopy: 0.143" in removed.message
    report = artifacts(pipeline_run_of(removed.state_details.flow_run_id))["medr1-drift"].data
    assert "Drift checks failed" in report and "| modality_share |" in report and "No training ran" in report

    shutil.rmtree(raw)
    shutil.copytree(pristine, raw)
    skew_answers_to_a(raw)
    skewed = medr1_data_arrival(repo=str(root), return_state=True)
    assert skewed.is_completed(), skewed.message
    saved = json.loads((root / "reports/validation/drift.json").read_text())
    assert saved["reported"] == ["answer_share"] and saved["reference"]["version"] == VERSION
    assert check(saved, "answer_share")["new"] == {"values": ["A"], "weights": [1.0]}
    assert saved["data"]["md5"] == yaml.safe_load((root / "dvc.lock").read_text())["stages"]["ingest"]["outs"][0]["md5"]
    assert (root / "reports/validation/drift_docs/index.html").is_file()
    # the same data (nothing arrives), its check's action set to fail for one pipeline run
    failing = medr1_pipeline(repo=str(root), overrides=["validate.drift.answer_share.action=fail"],
                             return_state=True)
    assert failing.is_failed() and "answer_share (fail)" in failing.message

    shutil.rmtree(raw)
    shutil.copytree(pristine, raw)
    (raw / "README.txt").write_text("the same questions again, in a new delivery")
    unchanged = medr1_data_arrival(repo=str(root), return_state=True)
    assert unchanged.is_completed(), unchanged.message
    saved = json.loads((root / "reports/validation/drift.json").read_text())
    assert saved["success"] and saved["failed"] == saved["reported"] == []


def test_medr1_check_against_a_version_fails_naming_the_drifted_check(processed, synthetic_root, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medr1.cli.app import app

    root = tmp_path / "repo"
    md5 = dvc_repository(root, processed)
    register_manifest(root / "store", md5)
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())  # register.store: file://models/store
    shutil.move(root / "store", root / "models/store")
    source = tmp_path / "source"
    shutil.copytree(synthetic_root, source)
    shutil.rmtree(source / "Images/Synthetic CT (Med-R1 default)")
    (source / "QA_information/Open-access/Synthetic CT (Med-R1 default).json").unlink()
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["check", "synthetic", str(source), "--min-rows-per-modality", "1",
                                      "--against", VERSION[:6], "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["validation"]["success"] and not report["success"]
    assert report["drift"]["failed"] == ["modality_share"] and report["drift"]["reference"]["version"] == VERSION
    shown = CliRunner().invoke(app, ["check", "synthetic", str(source), "--min-rows-per-modality", "1",
                                     "--against", VERSION])
    assert shown.exit_code == 1
    text = " ".join(shown.output.split())
    assert "modality_share (fail)" in text and f"med-r1 {VERSION}" in text and "reference {CT: 0.125" in text
