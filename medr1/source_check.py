"""`medr1 check`: ingest and validate a source folder without training, before any GPU hour is spent."""

from __future__ import annotations

from pathlib import Path

from medr1.checks import run_checks, splits_frame
from medr1.ingest import ingest


def check_source(kind: str, root: Path, out: Path, family: str = "modality", images_root: Path | None = None,
                 image_size: int = 384, test_fraction: float = 0.3, seed: int = 13, min_rows_per_modality: int = 1,
                 keep_source_split: bool = True, progress: bool = True) -> dict:
    """Ingest `root` into `out` and run the data checks; `success` only when records survive and every check passes."""
    summary = ingest(Path(root), Path(out), image_size, test_fraction, seed, progress=progress, kind=kind, family=family,
                     keep_source_split=keep_source_split, images_root=images_root)
    validation = run_checks(splits_frame(Path(out)), min_rows_per_modality) if summary["records"] else None
    return {
        "success": bool(validation and validation["success"]),
        "ingest": summary,
        "validation": validation,
        "dropped_list": str(Path(out) / "dropped.jsonl"),
    }
