"""Stage report: the study's matrices (metrics/generalization.json, every gain paired with the base model's
answers in reports/predictions/base.jsonl), then reports/index.html and summary.md."""

import json
from pathlib import Path

from medr1.config import load_params
from medr1.data.records import json_lines
from medr1.errors import PipelineError, run_main
from medr1.report.build import build_report
from medr1.report.render import write_report
from medr1.study.generalization import generalization

METRICS = Path("metrics")
REPORTS = Path("reports")
BASE_PREDICTIONS = REPORTS / "predictions" / "base.jsonl"  # the evaluate stage's


def base_predictions(path: Path = BASE_PREDICTIONS) -> list[dict]:
    if not path.is_file():
        raise PipelineError(f"{path} is missing: run `dvc repro evaluate` (the study's gains are paired with the "
                            "base model's answers)")
    return json_lines(path.read_text())


def main() -> None:
    params = load_params()
    evaluation = json.loads((METRICS / "eval.json").read_text())
    study = generalization(METRICS / "study", params.study, evaluation, base_predictions())
    (METRICS / "generalization.json").write_text(json.dumps(study, indent=1))
    report = build_report({"eval.json": evaluation, "generalization.json": study}, params.train.reasoning,
                          REPORTS / "figures", REPORTS / "train_curve.png")
    write_report(report, REPORTS)
    print(f"[report] {REPORTS / 'index.html'} and {REPORTS / 'summary.md'}: {len(report.sections)} sections")


if __name__ == "__main__":
    run_main(main, "report")
