"""Stage ingest: source folder -> 384x384 images + train/test JSONL by modality and question type."""

import json
from pathlib import Path

from medr1.config import load_params
from medr1.data.ingest import ingest
from medr1.data.records import UNKNOWN
from medr1.errors import MissingFileError, PipelineError, run_main
from medr1.pipeline.staging import publish, staging_for

OUT = Path("data/processed")
SUMMARY = Path("metrics/ingest.json")


def main() -> None:
    params = load_params().ingest
    root = Path(params.root)
    if not root.is_dir():
        raise MissingFileError(f"ingest.root {root} is not a folder; set ingest.root in params.yaml")
    staging = staging_for(OUT)
    summary = ingest(root, staging, params.image_size, params.test_fraction, params.seed, kind=params.source,
                     family=params.medr1_splits.family, keep_source_split=params.medr1_splits.keep_source_split,
                     images_root=Path(params.medr1_splits.images_root) if params.medr1_splits.images_root else None,
                     cache=Path(params.image_cache) if params.image_cache else None,
                     accept_unreadable_files=params.accept_unreadable_files)
    if not summary["records"]:
        reasons = "; ".join(f"{reason} ({entry['count']})" for reason, entry in summary["dropped"].items())
        raise PipelineError(f"no usable records in {root}: every record was dropped: {reasons}. "
                            f"Each one is listed with its reason in {staging / 'dropped.jsonl'}")
    publish(staging, OUT)
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(summary, indent=1))
    print(f"[ingest] {summary['records']} records ({summary['train']} train / {summary['test']} test), "
          f"{summary['images']} images, {summary['dropped_total']} dropped")
    for family in ("modality", "question_type"):
        if UNKNOWN in summary[family]:
            unknown = summary[family][UNKNOWN]
            print(f"[ingest] kept with {family} {UNKNOWN} (in no {family} file): {unknown['train']} train / "
                  f"{unknown['test']} test")
    if summary["unreadable_files"]:
        lost = "; ".join(f"{entry['file']} ({entry['questions']} questions)" for entry in summary["unreadable_files"])
        print(f"[ingest] accepted without their questions (ingest.accept_unreadable_files): {lost}")


if __name__ == "__main__":
    run_main(main, "ingest")
