"""Stage study@<group>: one cell of the generalization study (GRPO and SFT on one group, each tested on all).

    python -m stages.study                     # under DVC: the cell from $DVC_STAGE, "study_modality@CT"
    python -m stages.study modality CT
    python -m stages.study question_type "Disease Diagnosis"

dvc.yaml's command names no group: a group is a params.yaml value, and a value in a shell command
could run anything; DVC names the stage it runs in $DVC_STAGE, which no shell reads.
"""

import json
import os
import shutil
import sys
from pathlib import Path

from medr1.config import load_params
from medr1.errors import PipelineError, run_main
from medr1.model.base import base_model_dir
from medr1.pipeline.staging import publish, staging_for
from medr1.study.cells import METHODS, evaluate_cell, sft_steps, study_groups, train_cell

DATA = Path("data/processed")


def cell_of(arguments: list[str], dvc_stage: str) -> tuple[str, str]:
    """(family, group) from the command line, or from DVC's stage name "study_<family>@<group>"."""
    if len(arguments) == 2:
        return arguments[0], arguments[1]
    stage, _, group = dvc_stage.partition("@")
    if arguments or not stage.startswith("study_") or not group:
        raise PipelineError("usage: python -m stages.study <modality|question_type> <group> "
                            "(under DVC, the stage study_<family>@<group> names them)")
    return stage.removeprefix("study_"), group


def main() -> None:
    family, group = cell_of(sys.argv[1:], os.environ.get("DVC_STAGE", ""))
    params = load_params()
    if group not in study_groups(params, family):
        raise PipelineError(f"{group!r} is not in study's {family} list in params.yaml")
    out = Path("models/study") / family / group
    staging = staging_for(out)
    train_cell(params, family, group, base_model_dir(Path("models/base")), DATA, staging)
    for method in METHODS:
        shutil.rmtree(staging / method / "checkpoints", ignore_errors=True)
    publish(staging, out)
    result = {"family": family, "trained_on": group, "steps": params.study.max_steps, "sft_steps": sft_steps(params),
              **evaluate_cell(params, family, out, DATA)}
    metrics = Path("metrics/study") / family / f"{group}.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(result, indent=1))
    for method in METHODS:
        print(f"[study] {method.upper()} on {family} {group}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy"][method].items()))

if __name__ == "__main__":
    run_main(main, "study")
