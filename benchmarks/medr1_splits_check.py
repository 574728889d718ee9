"""Run `medr1 check medr1-splits` on the real Med-R1 split files with a placeholder image for
every path, and compare the per-file record counts with the folder README's totals.

    .venv/bin/python benchmarks/medr1_splits_check.py ../shared/datasets/medr1-splits

The split files hold metadata only; OmniMedVQA's images are distributed separately. Each
placeholder is a small RGB PNG, different per path, so that no two questions share an image
by accident.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from PIL import Image

from medr1.data.sources.medr1_splits import FAMILIES, split_files


def write_placeholders(splits: Path, images_root: Path) -> int:
    paths = {entry["image"] for family in FAMILIES for file in split_files(splits, family)
             for entry in json.loads(file.read_text(encoding="utf-8"))
             if isinstance(entry, dict) and entry.get("image")}
    for index, relative in enumerate(sorted(paths)):
        target = images_root / relative
        if ".." in Path(relative).parts or Path(relative).is_absolute():
            continue  # the reader must refuse these; never write outside the folder
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (index % 251, (index // 251) % 251, (index // 63001) % 251)).save(target)
    return len(paths)


def readme_totals(splits: Path) -> dict[str, int]:
    """'modality test 17,662; ...' from the README, as {'modality/test': 17662, ...}."""
    text = (splits / "README.md").read_text()
    found = re.findall(r"(modality|question-type) (train|test) ([\d,]+)", text)
    return {f"{family.replace('-', '_')}/{side}": int(count.replace(",", "")) for family, side, count in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("splits", type=Path)
    parser.add_argument("--family", default="modality", choices=FAMILIES)
    parser.add_argument("--keep-source-split", action="store_true",
                        help="keep Med-R1's own train/test sides (they share images)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medr1-splits-") as scratch:
        start = time.perf_counter()
        count = write_placeholders(args.splits, Path(scratch) / "omnimedvqa")
        print(f"{count} placeholder images in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "medr1.cli", "check", "medr1-splits", str(args.splits),
                                 "--family", args.family, "--images", str(Path(scratch) / "omnimedvqa"),
                                 "--out", str(Path(scratch) / "out"), "--json",
                                 *(["--keep-source-split"] if args.keep_source_split else [])],
                                capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if not result.stdout.strip().startswith("{"):
            raise SystemExit(f"medr1 check failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
        report = json.loads(result.stdout)
        dropped_lines = len((Path(scratch) / "out" / "dropped.jsonl").read_text().splitlines())
    summary = report["ingest"]
    groups = Counter()
    print(f"\n{'file':<70} {'records':>8}")
    for name, records in summary["records_per_file"].items():
        print(f"{name:<70} {records:>8}")
        family, side, _ = name.split("/", 2)
        groups[f"{family}/{side}"] += records
    print(f"\n{'group':<24} {'read':>8} {'README':>8}")
    for group, expected in readme_totals(args.splits).items():
        print(f"{group:<24} {groups[group]:>8} {expected:>8} {'ok' if groups[group] == expected else 'DIFFERENT'}")
    print(f"\nmedr1 check --family {args.family}: exit {result.returncode} in {seconds:.0f} s; "
          f"kept {summary['records']} records "
          f"({summary.get('train', 0)} train / {summary.get('test', 0)} test), dropped {summary['dropped_total']}, "
          f"{dropped_lines} named in dropped.jsonl")
    for reason, entry in sorted(summary["dropped"].items(), key=lambda item: -item[1]["count"]):
        print(f"  {entry['count']:>6}  {reason}   e.g. {entry['examples'][0]}")
    validation = report["validation"] or {}
    print(f"checks: {validation.get('evaluated_expectations')} expectations, failed: "
          f"{[(f['expectation'], f['column'], f['unexpected_count']) for f in validation.get('failed', [])]}")


if __name__ == "__main__":
    main()
