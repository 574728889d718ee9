"""Resuming a killed training run: its last complete checkpoint, and whether the staging folder
still belongs to the same run (same params, base model, train split, code and packages)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from medr1.model.folder_check import broken_files
from medr1.pipeline.code_deps import stage_code_files
from medr1.pipeline.hashing import sha256_file
from medr1.train.checkpoint_files import checkpoints_in, holds_optimizer_state

FINGERPRINT = "run.json"


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint a run can resume from: the Trainer writes trainer_state.json last, so a
    checkpoint that a kill cut short has none (or a truncated one) and is passed over; so is one
    whose weights or optimizer state were cut short later (a full disk, a copy), and one that keeps
    its model only (ModelOnlyOlderCheckpoints leaves the optimizer state in the newest), saying so."""
    for path in reversed(checkpoints_in(output_dir / "checkpoints")):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if problems := broken_files(path):
            print(f"[train] passing over {path.name}: {'; '.join(problems)}", flush=True)
            continue
        if not holds_optimizer_state(path):
            print(f"[train] passing over {path.name}: it keeps the model only, no optimizer state to resume",
                  flush=True)
            continue
        return str(path)
    return None


def run_fingerprint(params, base_sha256: str, train_split: Path, stage: str = "train") -> dict:
    """What a checkpoint's meaning depends on. The code is every file dvc.yaml names as the stage's
    code deps, the same list that makes `dvc repro` rerun the stage when one of them changes."""
    from importlib.metadata import version

    return {
        "params": params.model_dump(mode="json"),
        "base_model_sha256": base_sha256,
        "train_sha256": sha256_file(train_split),
        "code_sha256": {str(path): sha256_file(path) for path in stage_code_files(stage)},
        "packages": {name: version(name) for name in ("torch", "transformers", "trl", "accelerate", "peft")},
    }


def reuse_or_clear(staging: Path, fingerprint: dict) -> None:
    """Keep `staging` (and its checkpoints) only when it belongs to the same run."""
    marker = staging / FINGERPRINT
    try:
        if json.loads(marker.read_text()) == fingerprint:
            return
    except (OSError, ValueError):  # no run there, or a marker cut short: start over
        pass
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    marker.write_text(json.dumps(fingerprint, indent=1))
