import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic OmniMedVQA-layout set (3 images per modality)."""
    from medr1.sources.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, images_per_modality=3, seed=1, progress=False)
    return root


@pytest.fixture(scope="session")
def processed(tmp_path_factory, synthetic_root) -> Path:
    from medr1.ingest import ingest

    out = tmp_path_factory.mktemp("processed")
    ingest(synthetic_root, out, image_size=384, test_fraction=0.34, seed=0, progress=False)
    return out


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    merged = {**os.environ, **(env or {})}
    merged["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{merged['PATH']}"
    result = subprocess.run(cmd, cwd=cwd, env=merged, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def copy_repository(target: Path) -> Path:
    """The tracked sources of this repository in a fresh folder, as its own git + DVC repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = REPO / name
        if source.is_file():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    run(["git", "init", "-q"], target)
    run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "add", "-A"], target)
    run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "copy"], target)
    if not (target / ".dvc").exists():
        run(["dvc", "init", "-q"], target)
    return target
