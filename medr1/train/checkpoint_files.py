"""What a training checkpoint folder holds: the model, and the files that only resuming reads."""

from __future__ import annotations

import shutil
from pathlib import Path

from medr1.model.folder_check import broken_files

# What the Trainer (and DeepSpeed, FSDP) write into a checkpoint for resuming only: the optimizer
# and scheduler states, the gradient scaler, every rank's RNG states, DeepSpeed's global_step<N>
# folder (ZeRO shards of optimizer and master weights), its `latest` tag and converter script.
RESUME_ONLY = ("optimizer*", "scheduler*", "scaler*", "rng_state*", "global_step*", "latest", "zero_to_fp32.py")
OPTIMIZER_STATE = ("optimizer.pt", "optimizer_0", "global_step*")  # resuming needs one of these


def resume_only_files(checkpoint: Path) -> list[Path]:
    """The files and folders of `checkpoint` that only resuming reads."""
    return sorted({path for pattern in RESUME_ONLY for path in checkpoint.glob(pattern)})


def holds_optimizer_state(checkpoint: Path) -> bool:
    """Whether `checkpoint` can resume a run (it kept its optimizer state), not only load a model."""
    return any(any(checkpoint.glob(pattern)) for pattern in OPTIMIZER_STATE)


def checkpoints_in(folder: Path) -> list[Path]:
    """`folder`'s checkpoint-<step> folders, oldest first."""
    found = [path for path in folder.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda path: int(path.name.split("-")[-1]))


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def cut_to_model(checkpoint: Path) -> int:
    """Delete what only resuming reads from `checkpoint`; the bytes freed. Nothing is deleted where the
    model is not whole outside those files (ZeRO-3 without zero3_save_16bit_model keeps its weights only
    in the global_step shards): the checkpoint stays as it is."""
    if broken_files(checkpoint):
        return 0
    freed = 0
    for path in resume_only_files(checkpoint):
        freed += disk_bytes(path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return freed
