"""Run `medr1 check medr1-splits` on the real Med-R1 split files with a placeholder image for
every path, print per file the records, the kept and the dropped by reason, check that each
file keeps every record except those malformed by the reader's documented rules
(`medr1.data.sources.medr1_splits`), and compare the record counts with the folder README's totals.

    .venv/bin/python benchmarks/medr1_splits_check.py ../shared/datasets/medr1-splits --keep-source-split
    .venv/bin/python benchmarks/medr1_splits_check.py ../shared/datasets/medr1-splits --keep-source-split \
        --family question_type

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

from medr1.data.records import UNKNOWN
from medr1.data.sources.medr1_splits import FAMILIES, is_malformed, split_files


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
                                 # Med-R1's own sides share images: counted, as the med-r1 recipes'
                                 # validate.shared_images: report has it
                                 *(["--keep-source-split", "--shared-images", "report"]
                                   if args.keep_source_split else [])],
                                capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if not result.stdout.strip().startswith("{"):
            raise SystemExit(f"medr1 check failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
        report = json.loads(result.stdout)
        dropped = [json.loads(line) for line in (Path(scratch) / "out" / "dropped.jsonl").read_text().splitlines()]
    # dropped.jsonl names each record "<family>/<side>/<file>.json[<position>]...": a count apart from the summary's
    dropped_per_file = Counter(re.match(r"(.+?\.json)\[\d+\]", entry["record"]).group(1)
                               for entry in dropped if "record" in entry)
    summary = report["ingest"]
    failures = print_per_file(summary["per_file"], dropped_per_file)
    groups = Counter()
    for name, records in summary["records_per_file"].items():
        family, side, _ = name.split("/", 2)
        groups[f"{family}/{side}"] += records
    print(f"\n{'group':<24} {'read':>8} {'README':>8}")
    for group, expected in readme_totals(args.splits).items():
        print(f"{group:<24} {groups[group]:>8} {expected:>8} {'ok' if groups[group] == expected else 'DIFFERENT'}")
    print(f"\nmedr1 check --family {args.family}: exit {result.returncode} in {seconds:.0f} s; "
          f"kept {summary['records']} records "
          f"({summary.get('train', 0)} train / {summary.get('test', 0)} test), dropped {summary['dropped_total']}, "
          f"{len(dropped)} named in dropped.jsonl")
    other = FAMILIES[1 - FAMILIES.index(args.family)]
    unknown = summary.get(other, {}).get(UNKNOWN, {})
    print(f"kept with {other} {UNKNOWN!r} (in no {other} file): {unknown.get('train', 0)} train / "
          f"{unknown.get('test', 0)} test")
    for reason, entry in sorted(summary["dropped"].items(), key=lambda item: -item[1]["count"]):
        print(f"  {entry['count']:>6}  {reason}   e.g. {entry['examples'][0]}")
    validation = report["validation"] or {}
    print(f"checks: {validation.get('evaluated_expectations')} expectations, failed: "
          f"{[(f['expectation'], f['column'], f['unexpected_count']) for f in validation.get('failed', [])]}; "
          f"unknown {validation.get('unknown')}, repeated options {validation.get('repeated_options')}")
    print("every file keeps all its records but the malformed ones" if not failures
          else f"FAILED for {len(failures)} file(s): {', '.join(failures)}")
    raise SystemExit(1 if failures else 0)


def print_per_file(per_file: dict, dropped_per_file: Counter) -> list[str]:
    """The per-file table; returns the files where kept != records - malformed, where a record was
    dropped for a reason that is not a malformed rule, or where dropped.jsonl names other records."""
    failures = []
    print(f"\n{'file':<64} {'records':>8} {'kept':>8} {'malformed':>9}  check  dropped by reason")
    for name, entry in per_file.items():
        malformed = sum(count for reason, count in entry["dropped"].items() if is_malformed(reason))
        other = {reason: count for reason, count in entry["dropped"].items() if not is_malformed(reason)}
        good = (entry["kept"] == entry["records"] - malformed and not other
                and dropped_per_file[name] == sum(entry["dropped"].values()))
        if not good:
            failures.append(name)
        reasons = "; ".join(f"{count} {reason}" + ("" if is_malformed(reason) else " (NOT A MALFORMED RULE)")
                            for reason, count in sorted(entry["dropped"].items(), key=lambda item: -item[1]))
        print(f"{name:<64} {entry['records']:>8} {entry['kept']:>8} {malformed:>9}  {'ok' if good else 'FAIL':<5}  "
              f"{reasons}")
    return failures

if __name__ == "__main__":
    main()
