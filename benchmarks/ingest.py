"""Ingest + resize + validate throughput on synthetic sets of growing size, parallel vs serial.

    .venv/bin/python benchmarks/ingest.py                 # 1k, 5k and 20k rows
    .venv/bin/python benchmarks/ingest.py --rows 1000     # one size
    .venv/bin/python benchmarks/ingest.py --source-size 512   # sources at 512x512: every image is resized

Rows are questions (5 per image). The serial column (one image worker, checks on one thread) is
the baseline, measured in the same run; "per row vs first" compares the per-row cost with the
smallest size. The synthetic images are written as 384x384 PNGs, which ingest keeps byte for byte
after decoding them; --source-size rewrites them at another size first, so that every image is
decoded, resized and re-encoded. Importing Great Expectations (a few seconds, once per process)
is timed apart and not counted in rows/s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from medr1.data.checks import run_checks, splits_frame
from medr1.data.ingest import ingest
from medr1.data.records import MODALITIES
from medr1.synthetic.dataset import write_synthetic

QUESTIONS_PER_IMAGE = 5


def resize_sources(source: Path, size: int) -> None:
    for path in (source / "Images").rglob("*.png"):
        with Image.open(path) as image:
            resized = image.resize((size, size), Image.Resampling.BICUBIC)
        resized.save(path)


def measure(source: Path, scratch: Path, workers: int | None) -> tuple[float, float]:
    """Seconds for ingest (read, resize, split) and for the data checks."""
    out = scratch / f"out-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = ingest(source, out, 384, 0.3, 0, progress=False, workers=workers)
    middle = time.perf_counter()
    validation = run_checks(splits_frame(out, workers=workers), 1, 0.6, 0.6)
    end = time.perf_counter()
    if not validation["success"] or summary["dropped_total"]:
        raise SystemExit(f"benchmark data failed its checks: {validation['failed']} {summary['dropped']}")
    return middle - start, end - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--no-baseline", action="store_true", help="skip the serial (one worker) baseline")
    parser.add_argument("--source-size", type=int, default=384,
                        help="side of the source images in pixels (default 384)")
    args = parser.parse_args()
    start = time.perf_counter()
    import great_expectations  # noqa: F401  (a one-off cost per process, kept out of rows/s)

    print(f"source images {args.source_size}x{args.source_size}; "
          f"importing Great Expectations took {time.perf_counter() - start:.1f} s (not counted)")
    header = (f"{'rows':>6} {'images':>6} {'ingest s':>9} {'checks s':>9} {'rows/s':>8} {'ms/row':>7} "
              f"{'per row vs first':>16}")
    if not args.no_baseline:
        header += f" {'serial rows/s':>13} {'speed-up':>8}"
    print(header)
    first = None
    with tempfile.TemporaryDirectory(prefix="medr1-bench-") as scratch:
        for rows in args.rows:
            source = Path(scratch) / f"source-{rows}"
            per_modality = max(1, rows // (QUESTIONS_PER_IMAGE * len(MODALITIES)))
            count = write_synthetic(source, per_modality, seed=1, progress=False)
            if args.source_size != 384:
                resize_sources(source, args.source_size)
            ingest_s, checks_s = measure(source, Path(scratch), None)
            rate = count / (ingest_s + checks_s)
            per_row = 1000 / rate
            first = first or per_row
            line = (f"{count:>6} {count // QUESTIONS_PER_IMAGE:>6} {ingest_s:>9.1f} {checks_s:>9.1f} {rate:>8.0f} "
                    f"{per_row:>7.2f} {per_row / first:>15.2f}x")
            if not args.no_baseline:
                serial = count / sum(measure(source, Path(scratch), 1))
                line += f" {serial:>13.0f} {rate / serial:>7.2f}x"
            print(line, flush=True)
            shutil.rmtree(source)


if __name__ == "__main__":
    main()
