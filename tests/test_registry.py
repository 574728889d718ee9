import json
import threading

import pytest

from medr1.registry.local_store import LocalStore
from medr1.registry.versions import RegistryError, find_version, list_versions, pull, register, versions_trained_on


def _model(folder, content="weights"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_text(content)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    return folder


LINEAGE = {"data": [{"path": "data/processed", "md5": "abc123.dir", "stage": "ingest"}], "metrics": {"accuracy": 0.5}}


def test_register_list_pull(tmp_path):
    store = LocalStore(tmp_path / "store")
    manifest = register(store, "med-r1", _model(tmp_path / "m"), LINEAGE)
    assert [m["version"] for m in list_versions(store)] == [manifest["version"]]
    pulled = tmp_path / "pulled"
    pull(store, manifest["version"][:6], pulled)
    assert (pulled / "model.safetensors").read_text() == "weights"
    assert manifest["files"]["model.safetensors"]["sha256"]


def test_same_content_registers_once(tmp_path):
    store = LocalStore(tmp_path / "store")
    first = register(store, "med-r1", _model(tmp_path / "m"), LINEAGE)
    second = register(store, "med-r1", _model(tmp_path / "m"), LINEAGE)
    assert first["version"] == second["version"] and len(list_versions(store)) == 1


def test_half_written_version_is_invisible(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put_file("models/med-r1/deadbeef/files/model.safetensors", _model(tmp_path / "m") / "model.safetensors")
    assert list_versions(store) == []
    with pytest.raises(RegistryError, match="no registered version"):
        find_version(store, "deadbeef")


def test_tampered_object_fails_pull_naming_the_file(tmp_path):
    store = LocalStore(tmp_path / "store")
    manifest = register(store, "med-r1", _model(tmp_path / "m"), LINEAGE)
    (tmp_path / "store" / "models" / "med-r1" / manifest["version"] / "files" / "model.safetensors").write_text("evil")
    with pytest.raises(RegistryError, match="model.safetensors"):
        pull(store, manifest["version"], tmp_path / "pulled")
    assert not (tmp_path / "pulled" / "model.safetensors").exists()


def test_concurrent_registrations_lose_nothing(tmp_path):
    store = LocalStore(tmp_path / "store")
    models = [_model(tmp_path / f"m{i}", f"weights {i}") for i in range(8)]
    threads = [threading.Thread(target=register, args=(store, "med-r1", m, LINEAGE)) for m in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(list_versions(store)) == 8


def test_put_if_absent_has_one_winner(tmp_path):
    store = LocalStore(tmp_path / "store")
    assert store.put_if_absent("k", b"first") is True
    assert store.put_if_absent("k", b"second") is False
    assert store.get_bytes("k") == b"first"


def test_versions_trained_on(tmp_path):
    store = LocalStore(tmp_path / "store")
    manifest = register(store, "med-r1", _model(tmp_path / "m"), LINEAGE)
    assert [f["version"] for f in versions_trained_on(store, "abc123.dir")] == [manifest["version"]]
    assert [f["version"] for f in versions_trained_on(store, "data/processed")] == [manifest["version"]]
    assert versions_trained_on(store, "other") == []
