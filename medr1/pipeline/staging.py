"""Stage outputs appear whole or not at all: a stage writes into `<out>.partial`, then swaps it in."""

from __future__ import annotations

import shutil
from pathlib import Path


def staging_for(out: Path, fresh: bool = True) -> Path:
    """The folder a stage writes `out` into; emptied first unless `fresh` is False (a resumable run)."""
    staging = out.with_name(out.name + ".partial")
    if fresh:
        shutil.rmtree(staging, ignore_errors=True)
    return staging


def publish(staging: Path, out: Path, leave_out: tuple[str, ...] = ()) -> None:
    """Replace `out` by the finished `staging` folder, without the named working leftovers."""
    for name in leave_out:
        leftover = staging / name
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
