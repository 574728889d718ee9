"""Each med-r1 recipe launches its train and sft stages as docs/fidelity.md's table says Med-R1's
scripts did: the accelerate config, the process count, the gradient clipping and the precision.

The recipe is applied to a copy of params.yaml; its launcher is read with medr1's launch plan; the
accelerate config (and DeepSpeed file) it names is run through accelerate's own launcher code, the
DeepSpeed config filled by transformers from the GRPOConfig / SFTConfig the stage builds, and the
clipping read by DeepSpeed's own config reader (tests/accelerate_launch.py)."""

import re
import shutil
from pathlib import Path

import pytest
import yaml
from accelerate_launch import Effective, effective, launch_environment, trainer_arguments

from medr1.config import Params, load_params, parsed_launcher
from medr1.pipeline.recipes import apply_recipe, recipe_names
from medr1.train.launch_plan import launch_of

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
def _base(name: str) -> str | None:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text()).get("extends")


# the recipes of Med-R1's runs; the study recipes extend one of them and launch as it does
MED_R1 = [name for name in recipe_names(RECIPES) if name.startswith("med-r1/") and _base(name) is None]
STUDIES = [name for name in recipe_names(RECIPES) if name.startswith("med-r1/") and _base(name) is not None]
HEADING = "### Launch, processes, clipping and precision"
COLUMNS = ["recipe", "Med-R1 script", "launcher config", "processes", "gradient clipping", "precision"]


def documented() -> dict[str, dict[str, str]]:
    """docs/fidelity.md's table, one row a recipe (and `sft`), cells without their backticks."""
    text = (REPO / "docs/fidelity.md").read_text()
    assert HEADING in text, f"docs/fidelity.md has no {HEADING!r}"
    section = re.split(r"\n#{2,3} ", text.split(HEADING, 1)[1], maxsplit=1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == COLUMNS, header
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        key = re.match(r"`([^`]+)`", cells[0]).group(1)
        rows[key] = dict(zip(COLUMNS, cells, strict=True))
    return rows


def stated(row: dict[str, str]) -> tuple[str, int, float, str]:
    """A row's launcher config, processes, clipping ("0 (none)" is 0) and precision."""
    return (row["launcher config"].strip("`"), int(row["processes"]), float(row["gradient clipping"].split()[0]),
            row["precision"])


@pytest.fixture
def applied(tmp_path):
    """A med-r1 recipe applied to a copy of params.yaml, typed."""
    def apply(name: str) -> Params:
        params_file = tmp_path / "params.yaml"
        shutil.copy(REPO / "params.yaml", params_file)
        apply_recipe(name, params_file, RECIPES)
        return load_params(params_file)
    return apply


def resolved(params: Params, stage: str, out: Path, launcher: str | None = None) -> tuple[str, int, Effective]:
    """The accelerate config, process count and effective clipping and precision of `stage` (train or
    sft) under `params`, as it would run on CUDA; `launcher` replaces the stage's own."""
    from medr1.model.loading import resolve_weights_dtype
    from medr1.train.sft import style_settings
    from medr1.train.trl_config import grpo_config, sft_config

    launcher = launcher or params.launcher_of(stage)
    program, options = parsed_launcher(launcher)
    assert program == "accelerate launch" and "--config_file" in options, launcher
    processes = launch_of(launcher, REPO).processes
    environment = launch_environment(Path(options["--config_file"]), options.get("--num_processes"))
    # the stage's own TRL config, built on this CPU machine; the recipe's train.device (cuda) sets bf16
    train = params.train.model_copy(update={"device": "cpu"})
    config = grpo_config(train, out) if stage == "train" else \
        sft_config(params.sft, "cpu", out, **style_settings(params.sft.style))
    arguments = trainer_arguments(config, environment, processes, bf16=params.train.device == "cuda")
    weights = resolve_weights_dtype(params.train.weights_dtype, params.train.device)
    return options["--config_file"], processes, effective(environment, arguments, weights)


@pytest.fixture(autouse=True)
def _at_the_repository_root(monkeypatch):
    monkeypatch.chdir(REPO)  # where the stages run: accelerate configs name their DeepSpeed file from here


def test_the_table_has_a_row_for_every_med_r1_recipe_and_the_sft_stage():
    assert set(documented()) == {*MED_R1, "sft"}


@pytest.mark.parametrize("name", MED_R1)
def test_the_train_stage_launches_as_documented(name, applied, tmp_path):
    config_file, processes, result = resolved(applied(name), "train", tmp_path / "out")
    assert not result.mismatches, result.mismatches  # transformers would refuse to start
    assert (config_file, processes, result.clipping, result.precision) == stated(documented()[name])


@pytest.mark.parametrize("name", MED_R1)
def test_the_sft_stage_launches_as_documented(name, applied, tmp_path):
    config_file, processes, result = resolved(applied(name), "sft", tmp_path / "out")
    assert not result.mismatches, result.mismatches
    assert (config_file, processes, result.clipping, result.precision) == stated(documented()["sft"])


@pytest.mark.parametrize("name", MED_R1)
def test_each_launcher_comment_names_the_script_it_copies(name):
    """The recipe's `launcher:` lines (train, then sft) name a Med-R1 file of their row's script cell."""
    lines = [line for line in (RECIPES / f"{name}.yaml").read_text().splitlines()
             if line.strip().startswith("launcher:")]
    assert len(lines) == 2, lines
    for line, row in zip(lines, (documented()[name], documented()["sft"]), strict=True):
        scripts = set(re.findall(r"`([\w./-]+\.(?:sh|md))", row["Med-R1 script"]))
        assert scripts and any(script in line.partition("#")[2] for script in scripts), (line, scripts)


@pytest.mark.parametrize("name", STUDIES)
def test_a_study_recipe_launches_as_the_run_it_extends(name, applied):
    study, base = applied(name), applied(_base(name))
    assert _base(name) in MED_R1
    assert (study.launcher_of("train"), study.launcher_of("sft"), study.train.trl, study.sft.trl) \
        == (base.launcher_of("train"), base.launcher_of("sft"), base.train.trl, base.sft.trl)


def test_the_think_recipe_on_the_clipping_zero2_config_fails_the_table(applied, tmp_path):
    """The check can fail: the think recipe as it was before its own config (infra/accelerate/deepspeed-zero2.yaml,
    TRL's max_grad_norm 1.0) clips at 1.0 where Med-R1 did not."""
    params = applied("med-r1/qwen2-vl-2b-think")
    trl = {key: value for key, value in params.train.trl.items() if key != "max_grad_norm"}
    params = params.model_copy(update={"train": params.train.model_copy(update={"trl": trl})})
    launcher = "accelerate launch --config_file infra/accelerate/deepspeed-zero2.yaml --num_processes 2"
    config_file, processes, result = resolved(params, "train", tmp_path / "out", launcher)
    assert (result.clipping, result.precision) == (1.0, "bf16, fp32 master weights")
    assert (config_file, processes, result.clipping, result.precision) != stated(
        documented()["med-r1/qwen2-vl-2b-think"])


def test_the_no_clipping_config_refuses_a_max_grad_norm_that_would_clip(applied, tmp_path):
    """Its DeepSpeed file states gradient_clipping 0; a recipe asking for 1.0 is named by transformers."""
    params = applied("med-r1/qwen2-vl-2b-think")
    trl = {**params.train.trl, "max_grad_norm": 1.0}
    params = params.model_copy(update={"train": params.train.model_copy(update={"trl": trl})})
    result = resolved(params, "train", tmp_path / "out")[2]
    assert any("gradient_clipping=0.0 vs hf max_grad_norm=1.0" in mismatch for mismatch in result.mismatches)


def test_the_installed_deepspeed_clips_where_the_key_is_absent():
    """Why the no-clipping config states its 0: Med-R1's ds_zero2.json has no key, which DeepSpeed 0.15.4
    read as 0 and DeepSpeed 0.19.3 on reads as 1.0."""
    from deepspeed.runtime.config import get_gradient_clipping

    assert get_gradient_clipping({"zero_optimization": {"stage": 2}}) == 1.0
    assert get_gradient_clipping({"gradient_clipping": 0.0}) == 0.0


def test_bf16_weights_under_ddp_are_not_what_med_r1_ran(applied, tmp_path):
    """The no-think recipes' float32 weights are what makes their precision Med-R1's: with bf16 weights
    (train.weights_dtype auto on CUDA) DDP keeps no fp32 master copy."""
    params = applied("med-r1/qwen2-vl-2b-no-think")
    params = params.model_copy(update={"train": params.train.model_copy(update={"weights_dtype": "auto"})})
    assert resolved(params, "train", tmp_path / "out")[2].precision == "bf16 weights, no fp32 master"


def test_the_sft_stage_takes_train_launcher_unless_sft_launcher_is_set(applied, tmp_path):
    default = load_params(REPO / "params.yaml")
    assert default.sft.launcher is None and default.launcher_of("sft") == default.train.launcher == "python"
    think = applied("med-r1/qwen2-vl-2b-think")
    assert think.launcher_of("train") == think.train.launcher != think.launcher_of("sft") == think.sft.launcher


def test_a_bad_sft_launcher_is_refused_by_its_key(tmp_path):
    from medr1.config import ParamsError

    text = (REPO / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("  launcher: null", "  launcher: python; rm -rf ~", 1))
    with pytest.raises(ParamsError, match=r"sft\.launcher: .*not a launcher the pipeline runs"):
        load_params(tmp_path / "params.yaml")
