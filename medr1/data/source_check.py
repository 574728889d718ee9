"""`medr1 check`: ingest and validate a source folder without training, before any GPU hour is spent."""

from __future__ import annotations

from pathlib import Path

from medr1.config import ValidateParams
from medr1.data.checks import run_checks, splits_frame
from medr1.data.ingest import ingest


def check_source(kind: str, root: Path, out: Path, thresholds: ValidateParams, family: str = "modality",
                 images_root: Path | None = None, image_size: int = 384, test_fraction: float = 0.3, seed: int = 13,
                 keep_source_split: bool = False, progress: bool = True,
                 accept_unreadable_files: bool = False) -> dict:
    """Ingest `root` into `out` and run the data checks (Data Docs in `out/data_docs`); `success`
    only when records survive, every check passes and every source file could be read (or
    `accept_unreadable_files`). The rest of the folder is checked either way."""
    summary = ingest(Path(root), Path(out), image_size, test_fraction, seed, progress=progress, kind=kind,
                     family=family, keep_source_split=keep_source_split, images_root=images_root,
                     accept_unreadable_files=True)
    validation = None
    if summary["records"]:
        validation = run_checks(splits_frame(Path(out), image_size), thresholds.min_rows_per_modality,
                                thresholds.max_answer_share, thresholds.max_modality_share,
                                data_docs=Path(out) / "data_docs", shared_images=thresholds.shared_images)
    return {
        "success": bool(validation and validation["success"])
        and (accept_unreadable_files or not summary["unreadable_files"]),
        "ingest": summary,
        "validation": validation,
        "dropped_list": str(Path(out) / "dropped.jsonl"),
    }
