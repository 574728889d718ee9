"""Stage study_<family>_<method>@<group>: one cell of the generalization study (a GRPO or an SFT model trained
on one group, tested on every group of its family).

    python -m stages.study                          # under DVC: the cell from $DVC_STAGE, "study_modality_grpo@CT"
    python -m stages.study modality grpo CT
    python -m stages.study question_type sft "Disease Diagnosis"

dvc.yaml's command names no group: a group is a params.yaml value, and a value in a shell command
could run anything; DVC names the stage it runs in $DVC_STAGE, which no shell reads.
"""

import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from medr1.config import load_params
from medr1.errors import PipelineError, run_main
from medr1.model.base import base_model_dir
from medr1.pipeline.staging import publish, staging_for
from medr1.study.cells import FAMILIES, METHODS, evaluate_cell, study_groups, train_cell

DATA = Path("data/processed")
USAGE = ("usage: python -m stages.study <modality|question_type> <grpo|sft> <group> (under DVC, the stage "
         "study_<family>_<method>@<group> names them)")


def cell_of(arguments: list[str], dvc_stage: str) -> tuple[str, str, str]:
    """(family, method, group) from the command line, or from DVC's stage name "study_<family>_<method>@<group>"
    (a group may hold dashes and spaces, "X-Ray"; the family an underscore, "question_type")."""
    if len(arguments) == 3:
        family, method, group = arguments
    else:
        stage, _, group = dvc_stage.partition("@")
        family, _, method = stage.removeprefix("study_").rpartition("_")
        if arguments or not stage.startswith("study_") or not group:
            raise PipelineError(USAGE)
    if family not in FAMILIES or method not in METHODS:
        raise PipelineError(f"{family!r} {method!r}: {USAGE}")
    return family, method, group


def main() -> None:
    family, method, group = cell_of(sys.argv[1:], os.environ.get("DVC_STAGE", ""))
    params = load_params()
    if group not in study_groups(params, family):
        raise PipelineError(f"{group!r} is not in study.{FAMILIES[family]} in params.yaml")
    out = Path("models/study") / family / group / method
    staging = staging_for(out)
    budget = train_cell(params, family, group, method, base_model_dir(Path("models/base")), DATA, staging)
    shutil.rmtree(staging / "checkpoints", ignore_errors=True)
    publish(staging, out)
    result = {"family": family, "trained_on": group, "method": method,
              "study": {"max_steps": params.study.max_steps, "num_train_epochs": params.study.num_train_epochs},
              "budget": asdict(budget), **evaluate_cell(params, family, out, DATA, method)}
    metrics = Path("metrics/study") / family / group / f"{method}.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(result, indent=1))
    print(f"[study] {method.upper()} on {family} {group} ({budget.questions} questions, {budget.steps} steps): "
          + ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy"].items()))


if __name__ == "__main__":
    run_main(main, "study")
