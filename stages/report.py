"""Stage report: the study's matrices (metrics/generalization.json), then reports/index.html and summary.md."""

import json
from pathlib import Path

from medr1.config import load_params
from medr1.errors import run_main
from medr1.report.build import build_report
from medr1.report.render import write_report
from medr1.study.generalization import generalization

METRICS = Path("metrics")
REPORTS = Path("reports")


def main() -> None:
    params = load_params()
    evaluation = json.loads((METRICS / "eval.json").read_text())
    study = generalization(METRICS / "study", params.study, evaluation)
    (METRICS / "generalization.json").write_text(json.dumps(study, indent=1))
    report = build_report({"eval.json": evaluation, "generalization.json": study}, params.train.reasoning,
                          REPORTS / "figures", REPORTS / "train_curve.png")
    write_report(report, REPORTS)
    print(f"[report] {REPORTS / 'index.html'} and {REPORTS / 'summary.md'}: {len(report.sections)} sections")


if __name__ == "__main__":
    run_main(main, "report")
