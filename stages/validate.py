"""Stage validate: the Great Expectations checkpoint over train and test; failure stops the pipeline."""

import json
import shutil
from pathlib import Path

from medr1.config import load_params
from medr1.data.checks import check_ingested, describe_failures
from medr1.errors import PipelineError, run_main

DATA = Path("data/processed")
REPORT = Path("reports/validation/summary.json")
DATA_DOCS = Path("reports/validation/data_docs")


def main() -> None:
    shutil.rmtree(DATA_DOCS, ignore_errors=True)
    summary = check_ingested(DATA, load_params(), data_docs=DATA_DOCS)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(summary, indent=1))
    if not summary["success"]:
        raise PipelineError(describe_failures(summary) + f"\nfull results: {REPORT}, {DATA_DOCS}/index.html")
    print(f"[validate] {summary['evaluated_expectations']} expectations passed over {summary['rows']} rows")
    if summary["shared_images"]:
        print(f"[validate] {summary['shared_images']} images are in both the train and the test split "
              "(validate.shared_images: report)")
    for column, count in summary["unknown"].items():
        if count:
            print(f"[validate] {count} rows of unknown {column} (Med-R1 split records in no {column} file)")
    if summary["repeated_options"]:
        print(f"[validate] {summary['repeated_options']} rows repeat an option text (graded by letter)")


if __name__ == "__main__":
    run_main(main, "validate")
