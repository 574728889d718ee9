"""`medr1 dvc-remote` then real `dvc push` / `dvc pull` of pipeline outputs to S3 over HTTP (moto's server)."""

import shutil

import pytest
from conftest import run
from typer.testing import CliRunner

from medr1.cli.app import app

DVC_YAML = """stages:
  produce:
    cmd: python -c "import pathlib; [pathlib.Path(p).parent.mkdir(parents=True, exist_ok=True) or \
pathlib.Path(p).write_text(t) for p, t in \
[('data/processed/train.jsonl', 'records'), ('models/grpo/model.safetensors', 'weights')]]"
    outs:
      - data/processed
      - models/grpo
"""


def test_push_and_pull_pipeline_outputs_through_s3(tmp_path, s3_environment, moto_server, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    environment = {"DVC_NO_ANALYTICS": "1"}
    run(["dvc", "repro", "-q"], repo, environment)

    bucket = moto_server.new_bucket()
    monkeypatch.chdir(repo)
    monkeypatch.setenv("MEDR1_DVC_REMOTE_URL", f"s3://{bucket}/dvc")
    result = CliRunner().invoke(app, ["dvc-remote"])
    assert result.exit_code == 0, result.output
    local = (repo / ".dvc/config.local").read_text()
    assert f"url = s3://{bucket}/dvc" in local and f"endpointurl = {moto_server.url}" in local
    for config in (repo / ".dvc/config", repo / ".dvc/config.local"):
        text = config.read_text()
        assert s3_environment["AWS_SECRET_ACCESS_KEY"] not in text and s3_environment["AWS_ACCESS_KEY_ID"] not in text
    assert ".dvc/config.local" not in run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout

    # DVC itself finds the endpoint in config.local and the credentials in the environment, nothing else.
    monkeypatch.delenv("MEDR1_S3_ENDPOINT_URL")
    run(["dvc", "push", "-q"], repo, environment)
    pushed = moto_server.client().list_objects_v2(Bucket=bucket, Prefix="dvc/")["Contents"]
    assert len(pushed) >= 4  # two files and the two folders' .dir listings

    shutil.rmtree(repo / "data/processed")
    shutil.rmtree(repo / "models/grpo")
    shutil.rmtree(repo / ".dvc/cache")
    run(["dvc", "pull", "-q"], repo, environment)
    assert (repo / "data/processed/train.jsonl").read_text() == "records"
    assert (repo / "models/grpo/model.safetensors").read_text() == "weights"


@pytest.mark.parametrize(("url", "problem"), [(None, "no remote URL"), ("gs://bucket/dvc", "must be s3://"),
                                              ("s3://KEYID:FAKE-SECRET-x@bucket/dvc", "carries credentials")])
def test_bad_remote_is_refused_naming_the_problem(url, problem, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDR1_DVC_REMOTE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["dvc-remote", *([url] if url else [])])
    assert result.exit_code == 1 and problem in " ".join(result.output.split())
    assert "FAKE-SECRET" not in result.output
