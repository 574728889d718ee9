"""Stage validate: the Great Expectations checkpoint over train and test; failure stops the pipeline."""

import json
import shutil
from pathlib import Path

from medr1.checks import describe_failures, run_checks, splits_frame
from medr1.config import load_params
from medr1.errors import PipelineError, run_main

DATA = Path("data/processed")
REPORT = Path("reports/validation/summary.json")
DATA_DOCS = Path("reports/validation/data_docs")


def main() -> None:
    all_params = load_params()
    params = all_params.validate_
    shutil.rmtree(DATA_DOCS, ignore_errors=True)
    summary = run_checks(splits_frame(DATA, all_params.ingest.image_size), params.min_rows_per_modality,
                         params.max_answer_share, params.max_modality_share, data_docs=DATA_DOCS)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(summary, indent=1))
    if not summary["success"]:
        raise PipelineError(describe_failures(summary) + f"\nfull results: {REPORT}, {DATA_DOCS}/index.html")
    print(f"[validate] {summary['evaluated_expectations']} expectations passed over {summary['rows']} rows")


if __name__ == "__main__":
    run_main(main, "validate")
