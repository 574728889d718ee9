"""The register stage against a failing S3 server, and no credential in anything the registry writes or prints."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO, MotoServer, params_yaml
from typer.testing import CliRunner

from medr1.cli.app import app
from medr1.registry.backends import open_store
from medr1.registry.versions import register

URL_PASSWORD = "FAKE-SECRET-url-password-5e2a"


def _stage_workspace(folder, store_url: str, model_files: int = 2, accuracy: float = 0.42):
    """Everything `python -m stages.register` reads, as `dvc repro` leaves it."""
    files = {
        "params.yaml": params_yaml({
            "ingest": {"root": f"https://auditor:{URL_PASSWORD}@example.invalid/omnimedvqa"},
            "register": {"store": store_url, "name": "med-r1"}}),
        "metrics/eval.json": json.dumps({"accuracy": accuracy, "base_accuracy": 0.3, "format_rate": 1.0}),
        "reports/validation/summary.json": json.dumps({"success": True, "rows": 50, "evaluated_expectations": 14}),
        "metrics/ingest.json": json.dumps({"records": 50, "train": 35, "test": 15, "images": 10, "dropped_total": 0,
                                           "modality": {"CT": {"train": 20, "test": 10},
                                                        "MRI": {"train": 15, "test": 5}}}),
        "dvc.lock": yaml.safe_dump({"schema": "2.0", "stages": {
            "ingest": {"outs": [{"path": "data/processed", "md5": "0123456789abcdef0123456789abcdef.dir"}]},
            "train": {"deps": [{"path": "data/processed", "md5": "0123456789abcdef0123456789abcdef.dir"}],
                      "outs": [{"path": "models/grpo", "md5": "fedcba9876543210fedcba9876543210.dir"}]}}}),
        "models/base/base_model.json": json.dumps({"kind": "tiny", "path": "models/base", "sha256": "ab" * 32}),
        "data/processed/test.jsonl": json.dumps({"question_id": "q1", "modality": "CT"}) + "\n",
        "reports/predictions/grpo.jsonl": json.dumps({"question_id": "q1", "modality": "CT",
                                                      "question_type": "Modality Recognition", "correct": True}) + "\n",
    }
    for index in range(model_files):
        files[f"models/grpo/shard-{index:03d}.bin"] = f"{folder.name} shard {index} ".ljust(32 * 1024, "w")
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _start_stage(workspace, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.register"], cwd=workspace, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env})


def _cli_json(*args: str):
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _wait_for_a_new_upload(server: MotoServer, bucket: str, known: set[str], process: subprocess.Popen) -> None:
    client, deadline = server.client(), time.monotonic() + 120
    while not {item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])} - known:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the stage never started uploading"
        time.sleep(0.01)


@pytest.mark.parametrize("fault", ["stopped", "killed"])
def test_server_failing_mid_upload_fails_register_cleanly_and_publishes_nothing(fault, tmp_path, s3_environment,
                                                                                monkeypatch):
    server = MotoServer()  # its own server: this test stops it
    try:
        monkeypatch.setenv("MEDR1_S3_ENDPOINT_URL", server.url)
        bucket = server.new_bucket()
        store_url = f"s3://{bucket}/registry"
        earlier = register(open_store(store_url), "med-r1",
                           _stage_workspace(tmp_path / "earlier", store_url) / "models/grpo", {})
        workspace = _stage_workspace(tmp_path / "workspace", store_url, model_files=150)
        process = _start_stage(workspace, MEDR1_S3_MAX_ATTEMPTS="2", MEDR1_S3_CONNECT_TIMEOUT="1",
                               MEDR1_S3_READ_TIMEOUT="1")
        known = {item["Key"] for item in server.client().list_objects_v2(Bucket=bucket)["Contents"]}
        _wait_for_a_new_upload(server, bucket, known, process)
        os.kill(server.process.pid, signal.SIGSTOP if fault == "stopped" else signal.SIGKILL)
        stopped_at = time.monotonic()
        stdout, stderr = process.communicate(timeout=120)
        print(f"\n[{fault}] register failed {time.monotonic() - stopped_at:.1f} s "
              f"after the server was {fault}: {stderr.strip()}")
    finally:
        if fault == "stopped":
            os.kill(server.process.pid, signal.SIGCONT)
    try:
        assert process.returncode == 1, stdout + stderr
        assert "Traceback" not in stderr + stdout
        assert "[register] error: registering med-r1" in stderr and "nothing was published" in stderr
        assert "medr1 registry gc" in stderr
        if fault == "killed":
            assert "Could not connect to the endpoint URL" in stderr
            return
        assert "timeout" in stderr.lower()
        # The server is back: the half-upload is there, but no new version is.
        assert [row["version"] for row in _cli_json("registry", "list", "--store", store_url)] == [earlier["version"]]
        client = server.client()
        partial = ({key["Key"].split("/")[3] for key in client.list_objects_v2(Bucket=bucket)["Contents"]}
                   - {earlier["version"]})
        assert len(partial) == 1
        server.wait_until_served()  # the requests the stage gave up on land now, if they do at all
        removed = _cli_json("registry", "gc", "--older-than", "0", "--store", store_url)
        assert [item["version"] for item in removed] == list(partial)
        left = {key["Key"].split("/")[3] for key in client.list_objects_v2(Bucket=bucket)["Contents"]}
        assert left == {earlier["version"]}
    finally:
        server.stop()


def test_no_credential_reaches_a_manifest_a_log_an_output_or_the_store(tmp_path, s3_environment, moto_server,
                                                                       monkeypatch, capsys):
    bucket = moto_server.new_bucket()
    store_url = f"s3://{bucket}/registry"
    workspace = _stage_workspace(tmp_path / "workspace", store_url)
    stage = _start_stage(workspace)
    outputs = list(stage.communicate(timeout=300))
    assert stage.returncode == 0, outputs
    version = json.loads((workspace / "metrics/registered.json").read_text())["version"]

    monkeypatch.chdir(workspace)  # promote reads its gates from params.yaml here
    from medr1.cli import common

    monkeypatch.setattr(common.console, "width", 300)
    commands = [["registry", "list"], ["registry", "list", "--json"], ["registry", "pull", version, "pulled"],
                ["registry", "promote", version, "staging"], ["registry", "promote", version, "production"],
                ["registry", "history"], ["registry", "history", "--json"], ["audit", "model", version],
                ["audit", "model", version, "--json"], ["audit", "data", "data/processed"],
                ["audit", "data", "data/processed", "--json"], ["registry", "gc", "--older-than", "0"]]
    for command in commands:
        result = CliRunner().invoke(app, command)
        assert result.exit_code == (1 if command[-1] == "production" else 0), result.output  # 0.42 < 0.45: refused
        outputs.append(result.output)

    # A store URL carrying credentials is refused by the stage, naming the problem but not the secret.
    from medr1.errors import run_main
    from stages.register import main

    secret_url = f"s3://{s3_environment['AWS_ACCESS_KEY_ID']}:{s3_environment['AWS_SECRET_ACCESS_KEY']}@{bucket}/registry"
    (workspace / "params.yaml").write_text(params_yaml({"register": {"store": secret_url}}))
    with pytest.raises(SystemExit):
        run_main(main, "register")
    captured = capsys.readouterr()
    assert "carries credentials" in captured.err
    outputs += [captured.out, captured.err]

    written = {str(path): path.read_bytes() for path in workspace.rglob("*")
               if path.is_file() and path.name != "params.yaml"}  # the one input that holds them on purpose
    client = moto_server.client()
    stored = {item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
              for item in client.list_objects_v2(Bucket=bucket)["Contents"]}
    manifest = json.loads(stored[f"registry/models/med-r1/{version}/manifest.json"])
    # captured, without user:password
    assert manifest["params"]["ingest"]["root"] == "https://example.invalid/omnimedvqa"
    assert (any(key.startswith("registry/audit/promotions/") for key in stored)
            and "pulled/shard-000.bin" in str(written))
    secrets = [s3_environment["AWS_SECRET_ACCESS_KEY"], s3_environment["AWS_ACCESS_KEY_ID"],
               s3_environment["AWS_SESSION_TOKEN"], URL_PASSWORD, "auditor:"]
    everything = {**{f"output {i}": text.encode() for i, text in enumerate(outputs)}, **written, **stored}
    leaks = [(where, secret) for where, content in everything.items() for secret in secrets
             if secret.encode() in content]
    assert leaks == []
    print(f"\nsearched {len(outputs)} command outputs, {len(written)} files written and {len(stored)} stored objects "
          f"for {len(secrets)} secrets: {len(leaks)} found")
