"""Registry, promotion and audit through the `medr1` CLI, on file:// and on S3 over real HTTP (moto's server)."""

import hashlib
import json
import threading

import pytest
from conftest import params_yaml
from typer.testing import CliRunner

from medr1.cli.app import app
from medr1.registry.backends import open_store
from medr1.registry.versions import list_versions, register

PROCESSED_MD5 = "0123456789abcdef0123456789abcdef.dir"
# these tests are about the absolute gates (tests/test_promotion_gates.py: the comparison with the current version)
ABSOLUTE_ONLY = {"must_beat_current": False, "max_drop": 1.0, "min_improvement": None, "max_slice_drop": None,
                 "min_slice_questions": 30}
GATES = {"candidate": {"min_accuracy": 0.0, "min_gain_over_base": 0.0, "require_validation": True, **ABSOLUTE_ONLY},
         "staging": {"min_accuracy": 0.4, "min_gain_over_base": 0.1, "require_validation": True, **ABSOLUTE_ONLY},
         "production": {"min_accuracy": 0.45, "min_gain_over_base": 0.15, "require_validation": True, **ABSOLUTE_ONLY}}


def _model(folder, content="weights"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_text(content)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    return folder


def _lineage(accuracy: float, base_accuracy: float = 0.3, validation: bool = True) -> dict:
    return {
        "data": [{"path": "data/processed", "md5": PROCESSED_MD5, "stage": "ingest"},
                 {"path": "data/raw/synthetic", "md5": "fedcba9876543210fedcba9876543210.dir", "stage": "synthesize"}],
        "records": {"total": 50, "train": 35, "test": 15, "images": 10, "dropped": 0,
                    "per_modality": {"CT": {"train": 20, "test": 10}, "MRI": {"train": 15, "test": 5}}},
        "metrics": {"accuracy": accuracy, "base_accuracy": base_accuracy},
        "validation": {"success": validation, "rows": 50, "evaluated_expectations": 14},
        "params": {"train": {"max_steps": 600}},
        "base_model": {"kind": "tiny", "path": "models/base", "sha256": "ab" * 32},
    }


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    from medr1.cli import common

    monkeypatch.setattr(common.console, "width", 300)  # tables as a wide terminal shows them, cells unwrapped


def _text(*args: str, ok: bool = True):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert (result.exit_code == 0) == ok, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())  # rich wraps its lines at the terminal's width


def _json(*args: str):
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def workspace(tmp_path, monkeypatch, store_url):
    """A folder with the params.yaml whose gates `promote` reads."""
    folder = tmp_path / "workspace"
    folder.mkdir()
    (folder / "params.yaml").write_text(params_yaml({"register": {"store": store_url, "name": "med-r1",
                                                                  "gates": GATES}}))
    monkeypatch.chdir(folder)
    return folder


def test_register_list_pull_promote_and_audit_both_ways(workspace, store_url, tmp_path):
    store = open_store(store_url)
    good = register(store, "med-r1", _model(tmp_path / "good", "good weights"), _lineage(0.52))
    weak = register(store, "med-r1", _model(tmp_path / "weak", "weak weights"), _lineage(0.33))
    assert good["files"]["model.safetensors"] == {"sha256": hashlib.sha256(b"good weights").hexdigest(), "size": 12}
    assert [row["version"] for row in _json("registry", "list")] == [good["version"], weak["version"]]

    pulled = tmp_path / "pulled"
    assert "2 files verified" in _text("registry", "pull", good["version"][:8], str(pulled))
    assert (pulled / "model.safetensors").read_text() == "good weights"

    refused = _text("registry", "promote", weak["version"], "staging", ok=False)
    assert "min_accuracy: accuracy 0.330 < 0.400" in refused and "min_gain_over_base" in refused
    _text("registry", "promote", good["version"], "staging")
    _text("registry", "promote", weak["version"], "candidate")
    assert "(was " not in _text("registry", "promote", good["version"], "production")
    _text("registry", "promote", good["version"], "candidate")  # candidate moves from weak to good

    listed = {row["version"]: row["aliases"] for row in _json("registry", "list")}
    assert sorted(listed[good["version"]]) == ["candidate", "production", "staging"] and listed[weak["version"]] == []
    events = _json("registry", "history")
    assert [(e["alias"], e["granted"]) for e in events] == [
        ("staging", False), ("staging", True), ("candidate", True), ("production", True), ("candidate", True)]
    assert events[-1]["previous"] == weak["version"] and events[0]["failed_gates"]
    assert "refused: min_accuracy" in _text("registry", "history")

    audit = _json("audit", "model", good["version"])
    assert {e["path"]: e["md5"] for e in audit["data"]}["data/processed"] == PROCESSED_MD5
    assert audit["records"]["per_modality"]["CT"] == {"train": 20, "test": 10}
    assert audit["validation"]["success"] is True and audit["params"]["train"]["max_steps"] == 600
    assert audit["base_model"]["sha256"] == "ab" * 32
    assert audit["files"]["model.safetensors"]["sha256"] == good["files"]["model.safetensors"]["sha256"]
    assert len(audit["promotions"]) == 3
    table = _text("audit", "model", good["version"])
    assert PROCESSED_MD5[:20] in table and "CT" in table and "model.safetensors" in table

    for query in (PROCESSED_MD5, "data/processed", "./data/processed/"):
        used = _json("audit", "data", query)
        assert [item["version"] for item in used] == [good["version"], weak["version"]]
    assert sorted(_json("audit", "data", PROCESSED_MD5)[0]["aliases"]) == ["candidate", "production", "staging"]
    assert _json("audit", "data", "data/other") == []
    assert "2 version(s) used data/processed" in _text("audit", "data", "data/processed")


def test_unknown_alias_and_version_are_named(workspace, store_url, tmp_path):
    version = register(open_store(store_url), "med-r1", _model(tmp_path / "m"), _lineage(0.5))["version"]
    assert "unknown alias 'prod'" in _text("registry", "promote", version, "prod", ok=False)
    assert "no registered version 'ffff'" in _text("registry", "promote", "ffff", "staging", ok=False)
    assert "no registered version 'ffff'" in _text("audit", "model", "ffff", ok=False)


def test_failed_validation_blocks_every_alias(workspace, store_url, tmp_path):
    version = register(open_store(store_url), "med-r1", _model(tmp_path / "m"),
                       _lineage(0.9, validation=False))["version"]
    assert "require_validation" in _text("registry", "promote", version, "candidate", ok=False)
    assert _json("registry", "list")[0]["aliases"] == []


def _in_threads(count: int, work) -> list:
    results, errors = [None] * count, []

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def test_eight_concurrent_registrations_give_eight_versions(store_url, tmp_path):
    models = [_model(tmp_path / f"m{i}", f"weights {i}") for i in range(8)]
    # Each thread opens its own store, as eight machines would.
    _in_threads(8, lambda i: register(open_store(store_url), "med-r1", models[i], _lineage(0.5)))
    assert len(list_versions(open_store(store_url))) == 8


def test_the_same_model_registered_concurrently_is_published_once(store_url, tmp_path):
    model = _model(tmp_path / "m")
    manifests = _in_threads(8, lambda i: register(open_store(store_url), "med-r1", model,
                                                  {**_lineage(0.5), "writer": i}))
    stored = list_versions(open_store(store_url))
    assert len(stored) == 1
    # whoever lost the conditional write got the winner's manifest back, not its own
    assert all(manifest == stored[0] for manifest in manifests)


def test_concurrent_promotions_are_all_logged(workspace, store_url, tmp_path):
    version = register(open_store(store_url), "med-r1", _model(tmp_path / "m"), _lineage(0.6))["version"]
    from medr1.config import load_params
    from medr1.registry.promotion import history, promote

    params = load_params().register_
    aliases = ["candidate", "staging"] * 4
    _in_threads(8, lambda i: promote(open_store(store_url), version, aliases[i], params.gates, params.comparison))
    assert sorted(e["alias"] for e in history(open_store(store_url))) == sorted(aliases)


def test_tampered_object_fails_pull_naming_the_file(workspace, store_url, tmp_path):
    store = open_store(store_url)
    manifest = register(store, "med-r1", _model(tmp_path / "m"), _lineage(0.5))
    evil = tmp_path / "evil"
    evil.write_text("evil weights")
    store.put_file(f"models/med-r1/{manifest['version']}/files/model.safetensors", evil)
    output = _text("registry", "pull", manifest["version"], str(tmp_path / "pulled"), ok=False)
    assert "checksum mismatch" in output and "model.safetensors" in output
    assert not (tmp_path / "pulled" / "model.safetensors").exists()

    # A manifest rewritten to vouch for the tampered file no longer matches its content-addressed version.
    from medr1.pipeline.hashing import sha256_file

    altered = {**manifest, "files": {**manifest["files"],
                                     "model.safetensors": {"sha256": sha256_file(evil), "size": 12}}}
    (tmp_path / "manifest.json").write_text(json.dumps(altered))
    store.put_file(f"models/med-r1/{manifest['version']}/manifest.json", tmp_path / "manifest.json")
    assert "the manifest was altered" in _text("registry", "pull", manifest["version"], str(tmp_path / "pulled"),
                                               ok=False)


def test_half_written_version_is_invisible_until_gc_removes_it(workspace, store_url, tmp_path):
    store = open_store(store_url)
    kept = register(store, "med-r1", _model(tmp_path / "kept"), _lineage(0.5))
    store.put_file("models/med-r1/deadbeefdeadbeef/files/model.safetensors",
                   _model(tmp_path / "m") / "model.safetensors")
    assert [row["version"] for row in _json("registry", "list")] == [kept["version"]]
    assert "no registered version 'deadbeef'" in _text("registry", "pull", "deadbeef", str(tmp_path / "p"), ok=False)

    assert _json("registry", "gc") == []  # younger than the default hour: it may be a registration still running
    assert [item["version"]
            for item in _json("registry", "gc", "--older-than", "0", "--dry-run")] == ["deadbeefdeadbeef"]
    assert store.exists("models/med-r1/deadbeefdeadbeef/files/model.safetensors")
    assert "removed 1 half-written version(s)" in _text("registry", "gc", "--older-than", "0")
    assert store.list("models/med-r1/deadbeefdeadbeef/") == []
    assert len(store.list(f"models/med-r1/{kept['version']}/")) == 3  # two files and the manifest


@pytest.mark.parametrize("command", [[], ["registry"], ["registry", "list"], ["registry", "pull"],
                                     ["registry", "promote"], ["registry", "history"], ["registry", "gc"], ["audit"],
                                     ["audit", "model"], ["audit", "data"], ["dvc-remote"]])
def test_every_command_explains_itself(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and len(result.output.split("Usage:")[1]) > 100
