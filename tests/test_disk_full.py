"""A write that runs out of space (a file size limit, as a full disk or quota gives) fails the stage
with one line that says so, leaves the previous outputs as they were, publishes nothing half-written,
and the next run succeeds once space is back."""

import json
import os
import resource
import signal
import subprocess
import sys

import pytest
import yaml
from conftest import run

pytestmark = pytest.mark.slow


def _with_file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _stage(repo, name: str, limit: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=repo, env=env, capture_output=True, text=True,
                          check=False, preexec_fn=_with_file_size_limit(limit) if limit else None)


def test_ingest_checkpoint_and_register_out_of_space_fail_cleanly(pipeline_copy, tmp_path):
    from medr1.pipeline.hashing import folder_digest, folder_hashes
    from medr1.train.resume import last_checkpoint

    repo = pipeline_copy
    processed = folder_digest(folder_hashes(repo / "data/processed"))
    full = _stage(repo, "ingest", limit=4096)
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert "no space left" in full.stderr and "File too large" in full.stderr
    assert folder_digest(folder_hashes(repo / "data/processed")) == processed  # the last good output, untouched
    assert _stage(repo, "ingest").returncode == 0
    assert folder_digest(folder_hashes(repo / "data/processed")) == processed  # same source, same output

    model = folder_digest(folder_hashes(repo / "models/grpo"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["trl"].update(max_steps=2, save_steps=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    full = _stage(repo, "train", limit=1_000_000)  # the images' copies fit, a checkpoint's 2 MB of weights do not
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert "no space left" in full.stderr
    assert folder_digest(folder_hashes(repo / "models/grpo")) == model
    assert last_checkpoint(repo / "models/grpo.partial") is None  # the checkpoint cut short is not resumed from

    params["register"]["store"] = f"file://{tmp_path / 'empty-store'}"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    full = _stage(repo, "register", limit=64 * 1024)  # the model's weights are larger
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert "no space left" in full.stderr
    assert json.loads(run(["medr1", "registry", "list", "--json"], repo).stdout) == []  # nothing half-published
    assert _stage(repo, "register").returncode == 0
    assert len(json.loads(run(["medr1", "registry", "list", "--json"], repo).stdout)) == 1
