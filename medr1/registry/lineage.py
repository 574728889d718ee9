"""What produced a model: dvc.lock's recorded hashes, git state, package versions."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import yaml

from medr1.errors import MissingFileError, PipelineError

DATA_PREFIXES = ("data/",)
LOCK_SCHEMA = "2.0"


def read_lock(lock_path: Path) -> dict[str, dict[str, dict[str, str]]]:
    """{stage: {"deps": {path: md5}, "outs": {path: md5}}} as dvc.lock records them."""
    if not lock_path.exists():
        raise MissingFileError(f"{lock_path} not found: run the pipeline with `dvc repro` so that DVC records hashes")
    lock = yaml.safe_load(lock_path.read_text()) or {}
    if str(lock.get("schema")) != LOCK_SCHEMA:  # read as YAML: a format DVC changes must stop here, not mislead
        raise PipelineError(f"{lock_path} has schema {lock.get('schema')!r}; this reader knows {LOCK_SCHEMA!r} "
                            "(DVC 3): upgrade medr1 or regenerate the lock with the pinned DVC")
    stages = {}
    for name, stage in (lock.get("stages") or {}).items():
        stages[name] = {
            kind: {entry["path"]: entry.get("md5") for entry in stage.get(kind, [])} for kind in ("deps", "outs")
        }
    return stages


def data_dependencies(stages: dict, upto: tuple[str, ...]) -> list[dict[str, str]]:
    """Every data path that the named stages read or wrote, with dvc.lock's md5 and the stage."""
    seen: dict[str, dict[str, str]] = {}
    for stage in upto:
        for kind in ("deps", "outs"):
            for path, md5 in stages.get(stage, {}).get(kind, {}).items():
                if path.startswith(DATA_PREFIXES) and path not in seen:
                    seen[path] = {"path": path, "md5": md5, "stage": stage}
    return list(seen.values())


def git_state(repo: Path) -> dict:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False).stdout.strip()

    commit = run("rev-parse", "HEAD") or None
    dirty = bool(run("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"commit": commit, "dirty": dirty}


def record_counts(ingest_summary: dict) -> dict:
    """Records per split, overall and per modality and question type, as the ingest stage counted them."""
    return {
        "total": ingest_summary.get("records"),
        "train": ingest_summary.get("train"),
        "test": ingest_summary.get("test"),
        "images": ingest_summary.get("images"),
        "dropped": ingest_summary.get("dropped_total"),
        "per_modality": ingest_summary.get("modality", {}),
        "per_question_type": ingest_summary.get("question_type", {}),
    }


def package_versions(names=("torch", "transformers", "trl", "accelerate", "dvc", "dvc-s3", "boto3",
                            "great-expectations", "prefect")) -> dict:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
