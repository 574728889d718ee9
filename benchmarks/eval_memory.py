"""Peak memory of `medr1 evaluate` as the split grows: bounded (evaluate.image_window) against
holding every processed image (the behaviour before the window), side by side in one run.

    .venv/bin/python benchmarks/eval_memory.py                       # 2k, 8k and 20k questions
    .venv/bin/python benchmarks/eval_memory.py --sizes 2000 8000 --unbounded-up-to 8000

It writes a synthetic OmniMedVQA-layout set (5 questions per image) large enough for the biggest
size, ingests it at 384 px, and writes a small random Qwen2-VL folder with Qwen2-VL's own image
processor settings (`medr1.synthetic.checkpoints.write_checkpoint`): a 384 px image becomes 784
patches of 1,176 float32 values, 3.7 MB processed, as with Qwen2-VL-2B. Each evaluation runs in a
process of its own (`medr1 evaluate --device cpu`, no params.yaml, 8 new tokens), and its peak
resident memory is read from the kernel (ru_maxrss of that child). The model is random: this
measures memory, not accuracy. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTIONS_PER_IMAGE = 5
MODALITIES = 8
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def build(work: Path, questions: int) -> tuple[Path, Path]:
    """The ingested split (every question in one JSONL) and the checkpoint folder."""
    from medr1.data.ingest import ingest
    from medr1.data.records import read_jsonl
    from medr1.synthetic.checkpoints import write_checkpoint
    from medr1.synthetic.dataset import write_synthetic

    per_modality = -(-questions // (QUESTIONS_PER_IMAGE * MODALITIES))
    write_synthetic(work / "source", images_per_modality=per_modality, seed=0)
    ingest(work / "source", work / "processed", image_size=384, test_fraction=0.3, seed=0)
    records = [*read_jsonl(work / "processed/train.jsonl"), *read_jsonl(work / "processed/test.jsonl")]
    everything = work / "processed/all.jsonl"
    everything.write_text("".join(record.model_dump_json() + "\n" for record in records))
    texts = [record.question + " " + " ".join(record.options.values()) for record in records[:2000]]
    return everything, write_checkpoint("qwen2-vl", work / "checkpoint", texts)


def peak_rss_mib(work: Path, split: Path, checkpoint: Path, questions: int, window: int) -> tuple[float, float]:
    """(peak resident MiB, seconds) of `medr1 evaluate` on the split's first `questions` questions."""
    part = work / f"split-{questions}.jsonl"
    part.write_text("".join(split.read_text().splitlines(keepends=True)[:questions]))
    command = [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "medr1.cli", "evaluate", "--model",
               str(checkpoint), "--data", str(part), "--images", str(split.parent), "--reasoning", "no_think",
               "--prompts", "tiny",  # the layout these numbers were measured with
               "--batch-size", "32", "--max-new-tokens", "8", "--device", "cpu", "--image-window", str(window),
               "--json"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)  # no params.yaml there
    if result.returncode != 0:
        sys.exit(f"medr1 evaluate failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return int(result.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 20000], help="questions per split")
    parser.add_argument("--window", type=int, default=256, help="evaluate.image_window of the bounded runs")
    parser.add_argument("--unbounded-up-to", type=int, default=8000,
                        help="run the unbounded baseline on sizes up to this (20k questions would hold ~15 GB)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medr1-eval-memory-") as scratch:
        work = Path(scratch)
        split, checkpoint = build(work, max(args.sizes))
        rows = []
        for questions in sorted(args.sizes):
            bounded, bounded_s = peak_rss_mib(work, split, checkpoint, questions, args.window)
            unbounded = unbounded_s = None
            if questions <= args.unbounded_up_to:
                unbounded, unbounded_s = peak_rss_mib(work, split, checkpoint, questions, 10**9)
            rows.append({"questions": questions, "images": questions // QUESTIONS_PER_IMAGE, "bounded_mib": bounded,
                         "bounded_s": bounded_s, "unbounded_mib": unbounded, "unbounded_s": unbounded_s})
    cpu = cpu_model()
    print(f"\npeak resident memory of `medr1 evaluate`, 384 px Qwen2-VL image processing ({cpu})\n")
    print(f"| questions | images | image_window {args.window}: peak MiB (s) | unbounded: peak MiB (s) |")
    print("|---|---|---|---|")
    for row in rows:
        unbounded = ("-" if row["unbounded_mib"] is None
                     else f"{row['unbounded_mib']:,.0f} ({row['unbounded_s']:.0f} s)")
        print(f"| {row['questions']:,} | {row['images']:,} | {row['bounded_mib']:,.0f} ({row['bounded_s']:.0f} s) "
              f"| {unbounded} |")
    smallest, largest = rows[0], rows[-1]
    ratio = largest["bounded_mib"] / smallest["bounded_mib"]
    print(f"\nbounded: {largest['questions']:,} questions peak at {ratio:.2f}x the {smallest['questions']:,}-question "
          "peak")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "window": args.window, "rows": rows, "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
