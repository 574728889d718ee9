"""Stage validate: the Great Expectations checkpoint over train and test; failure stops the pipeline."""

import json
from pathlib import Path

from medr1.checks import describe_failures, run_checks, splits_frame
from medr1.config import load_params
from medr1.errors import PipelineError, run_main

DATA = Path("data/processed")
REPORT = Path("reports/validation/summary.json")


def main() -> None:
    params = load_params().validate_
    summary = run_checks(splits_frame(DATA), params.min_rows_per_modality)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(summary, indent=1))
    if not summary["success"]:
        raise PipelineError(describe_failures(summary) + f"\nfull results: {REPORT}")
    print(f"[validate] {summary['evaluated_expectations']} expectations passed over {summary['rows']} rows")


if __name__ == "__main__":
    run_main(main, "validate")
