"""No shell from parameters: train.launcher and the study groups reach commands as checked argument
lists, never as shell text, through params.yaml, `make run-flow SET=...` and flow overrides alike.
Each injection below would create MARKER if any shell ran it."""

import json
import os

import pytest
import yaml
from conftest import REPO, copy_repository, run

from medr1.config import launcher_command
from medr1.errors import PipelineError
from medr1.pipeline.recipes import read_recipe, recipe_names

MARKER = "MARKER"
INJECTED_LAUNCHERS = [
    f"python; touch {MARKER}",
    f"python && touch {MARKER}",
    f"python\ntouch {MARKER}",
    f"python $(touch {MARKER})",
    f"python `touch {MARKER}`",
    f"torchrun --standalone --nproc_per_node 2;touch {MARKER}",
    f"accelerate launch --config_file infra/accelerate/single-gpu.yaml --num_processes $(touch {MARKER})",
    f"accelerate launch --config_file ../../tmp/x.yaml --main_process_ip 1.2.3.4|touch {MARKER}",
    f"bash -c 'touch {MARKER}'",
    "python -c print(1)",
]


def test_the_launchers_the_pipeline_ships_are_accepted_and_injections_refused():
    shipped = {"python", "torchrun --standalone --nproc_per_node 2",
               ("accelerate launch --config_file infra/accelerate/multi-node.yaml --num_machines 2 --machine_rank 1 "
                "--main_process_ip 10.0.0.1 --main_process_port 29500")}
    recipes = [read_recipe(name)["params"] for name in recipe_names(REPO / "recipes")]
    shipped |= {recipe["train"]["launcher"] for recipe in recipes} | {
        recipe["sft"]["launcher"] for recipe in recipes if recipe["sft"].get("launcher")}
    for launcher in shipped:
        assert launcher_command(launcher) == launcher.split()
    for launcher in INJECTED_LAUNCHERS:
        with pytest.raises(ValueError, match="train.launcher"):
            launcher_command(launcher)


def test_no_dvc_command_carries_a_param():
    """DVC runs a stage's cmd through a shell: a ${...} in it would put a params.yaml value there."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = {name: (stage.get("do") or stage)["cmd"] for name, stage in stages.items()}
    assert not {name: cmd for name, cmd in commands.items() if "${" in cmd}


def test_make_run_flow_refuses_injected_settings_before_anything_runs(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    settings = [f"train.launcher=python;touch {MARKER}",
                f"'train.launcher=python $(touch {MARKER})'",
                f"'study.modalities=[CT, \"x; touch {MARKER}\"]'",
                f"train.trl.max_steps=3;touch {MARKER}"]
    for setting in settings:
        result = run(["make", "--no-print-directory", "run-flow", f"VENV={REPO / '.venv'}", f"SET={setting}"], repo,
                     check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "Traceback" not in output, output
        assert "error: " in output and "medr1-pipeline" not in output, output  # refused before the flow started
        assert "train.launcher" in output or "study.modalities" in output or "section.key=value" in output, output
        assert not (repo / MARKER).exists(), setting


@pytest.mark.slow
def test_injected_params_yaml_values_are_refused_by_dvc_repro(pipeline_copy):
    repo = pipeline_copy
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["launcher"] = f"python; touch {MARKER}"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro", "--single-item", "train"], repo, check=False)
    assert result.returncode != 0 and "train.launcher" in result.stdout + result.stderr
    params["train"]["launcher"] = "python"
    group = f'x"; touch {MARKER}; echo "'
    params["study"]["modalities"] = ["CT", group]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro", "--single-item", f"study_modality_grpo@{group}"], repo, check=False)
    assert result.returncode != 0 and "study.modalities" in result.stdout + result.stderr, result.stdout[-2000:]
    assert not list(repo.rglob(MARKER))


def test_a_study_cell_under_dvc_comes_from_the_stage_name(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from stages.study import cell_of

    assert cell_of([], "study_question_type_sft@Disease Diagnosis") == ("question_type", "sft", "Disease Diagnosis")
    assert cell_of([], "study_modality_grpo@X-Ray") == ("modality", "grpo", "X-Ray")
    assert cell_of(["modality", "grpo", "CT"], "") == ("modality", "grpo", "CT")
    assert json.dumps(cell_of([], 'study_modality_sft@x"; touch y')) == '["modality", "sft", "x\\"; touch y"]'  # data
    with pytest.raises(PipelineError, match="usage"):
        cell_of([], "study_modality@CT")  # a cell names its method
    assert os.environ.get("DVC_STAGE") is None
