"""Recipes as files: each applies to params.yaml and validates, the embedded one restores the
default, Med-R1's values reach the GRPOConfig the trainer builds, and bad keys are named."""

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from medr1.config import ParamsError, load_params
from medr1.pipeline.recipes import RecipeError, apply_recipe, read_recipe, recipe_names
from medr1.train.trl_config import check_trl_settings, grpo_config, sft_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"

# Med-R1's trainer settings (docs/fidelity.md: run_grpo_Omni_deepspeed_train_vqa.sh, trl 0.14's GRPOConfig
# defaults, trainer/grpo_trainer.py), in TRL 1.x's names, as the think recipe on Qwen2-VL-2B must pass them.
MEDR1_GRPO_CONFIG = {
    "learning_rate": 1e-6, "lr_scheduler_type": "linear", "warmup_steps": 0, "weight_decay": 0.0,
    "beta": 0.04, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0,
    "num_generations": 4, "max_completion_length": 256, "per_device_train_batch_size": 8,  # 2 prompts x 4
    "gradient_accumulation_steps": 2, "num_train_epochs": 1, "max_steps": -1, "loss_type": "grpo",
    "scale_rewards": "group", "num_iterations": 1, "logging_steps": 1, "save_steps": 1000, "seed": 42,
    "gradient_checkpointing": False, "reward_weights": [1.0, 1.0],
}

# Med-R1's SFT baseline (configs/qwen2/qwen2vl_sft_config_*.yaml; docs/fidelity.md), as the sft stage builds it.
MEDR1_SFT_CONFIG = {
    "learning_rate": 2e-5, "lr_scheduler_type": "cosine", "warmup_steps": 0.1, "weight_decay": 0.0,
    "num_train_epochs": 1, "max_steps": -1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 16,
    "activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False},
    "logging_steps": 1, "save_strategy": "steps", "save_steps": 100, "seed": 42, "packing": False,
    "dataset_kwargs": {"skip_prepare_dataset": True}, "remove_unused_columns": False,
}


@pytest.fixture
def params_file(tmp_path) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path / "params.yaml"


def test_the_shipped_recipes_are_there():
    assert {"embedded-cpu", "med-r1/qwen2-vl-2b-think", "med-r1/qwen2-vl-2b-no-think",
            "med-r1/qwen2-vl-2b-think-after", "med-r1/qwen2.5-vl-3b-think",
            "med-r1/qwen2.5-vl-3b-no-think"} <= set(recipe_names(RECIPES))


@pytest.mark.parametrize("name", recipe_names(RECIPES))
def test_each_recipe_applies_and_the_embedded_one_restores_the_default(name, params_file):
    original = yaml.safe_load(params_file.read_text())
    def section_comments(text: str) -> list[str]:  # a changed key's own comment goes with its old value
        return [line for line in text.splitlines() if line.startswith(("#", "  #"))]

    comments = section_comments(params_file.read_text())
    applied = apply_recipe(name, params_file, RECIPES)
    assert (applied.changed == {}) == (name == "embedded-cpu")  # every other recipe changes something
    load_params(params_file)  # valid
    # going back changes exactly the keys the recipe changed, each to its old value, and moves nothing
    restored = apply_recipe("embedded-cpu", params_file, RECIPES)
    assert restored.moved == [] and restored.changed == {key: (new, old) for key, (old, new) in applied.changed.items()}
    assert yaml.safe_load(params_file.read_text()) == original
    assert section_comments(params_file.read_text()) == comments


def test_embedded_recipe_is_what_params_yaml_ships(params_file):
    before = params_file.read_text()
    assert apply_recipe("embedded-cpu", params_file, RECIPES).changed == {}
    assert params_file.read_text() == before


def test_med_r1_values_reach_the_grpo_config_the_trainer_builds(params_file, tmp_path):
    changed = apply_recipe("med-r1/qwen2-vl-2b-think", params_file, RECIPES).changed
    assert changed["train.prompts"] == ("tiny", "med-r1") and changed["evaluate.protocol"] == ("strict", "med-r1")
    train = load_params(params_file).train.model_copy(update={"device": "cpu"})  # the recipe's cuda: not here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = grpo_config(train, tmp_path / "out")
    # no deprecated name of ours: TRL's own default of the old field warns only where the new one is left unset
    assert not [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    built = {key: getattr(config, key) for key in MEDR1_GRPO_CONFIG}
    built["lr_scheduler_type"] = str(getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type))
    assert built == MEDR1_GRPO_CONFIG


@pytest.mark.parametrize("name", [name for name in recipe_names(RECIPES) if name.startswith("med-r1/")])
def test_med_r1_recipes_load_on_a_machine_without_flash_attn(name, params_file):
    """Med-R1 trained with flash_attention_2; the recipes ask for auto, which takes it where it imports
    on CUDA and sdpa elsewhere, so applying one never ends in transformers' FlashAttention2 error."""
    from medr1.model.loading import resolve_attention

    apply_recipe(name, params_file, RECIPES)
    train = load_params(params_file).train
    assert train.attn_implementation == "auto"  # their weights_dtype: tests/test_recipe_launch.py (precision)
    assert resolve_attention(train.attn_implementation, "cpu").implementation == "sdpa"
    own = read_recipe(name, RECIPES).get("extends", name)  # a study recipe takes its trainer from its main run
    assert "flash_attention_2" in (RECIPES / f"{own}.yaml").read_text()  # the comment naming Med-R1's setting


@pytest.mark.parametrize("name", [name for name in recipe_names(RECIPES) if name.startswith("med-r1/")])
def test_med_r1_sft_values_reach_the_sft_config_the_trainer_builds(name, params_file, tmp_path):
    from medr1.train.sft import style_settings

    apply_recipe(name, params_file, RECIPES)
    sft = load_params(params_file).sft
    assert sft.style == "med-r1"
    config = sft_config(sft, "cpu", tmp_path / "out", **style_settings(sft.style))
    built = {key: getattr(config, key) for key in MEDR1_SFT_CONFIG}
    built["lr_scheduler_type"] = str(getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type))
    assert built == MEDR1_SFT_CONFIG
    assert config.get_warmup_steps(1000) == 100  # transformers 4.49's warmup_ratio 0.1: ceil(0.1 x steps)


@pytest.mark.parametrize("trl, named", [
    ({"losstype": "grpo"}, (r"train.trl.losstype: not a GRPOConfig setting of the installed TRL .*; did you mean "
                            r"loss_type\?")),
    ({"learning_rate": "fast"}, r"train.trl.learning_rate: 'fast' is not of type float"),
    ({"num_generations": 2.5}, r"train.trl.num_generations: 2.5 is not of type int \| None"),
    ({"use_cpu": True}, r"train.trl.use_cpu: set from train.device"),
    ({"save_strategy": "no"}, r"train.trl.save_strategy: set from fixed at steps: .*train.trl.save_steps"),
])
def test_a_bad_trl_key_is_named(params_file, tmp_path, trl, named):
    train = load_params(params_file).train
    with pytest.raises(ParamsError, match=named):
        grpo_config(train.model_copy(update={"trl": {**train.trl, **trl}}), tmp_path / "out")


def test_a_bad_sft_trl_key_is_named(params_file, tmp_path):
    sft = load_params(params_file).sft
    with pytest.raises(ParamsError, match="sft.trl.warmup_ratio: not a SFTConfig setting"):
        sft_config(sft.model_copy(update={"trl": {"warmup_ratio": 0.1}}), "cpu", tmp_path / "out")
    with pytest.raises(ParamsError, match=r"sft.trl.max_steps is -1 \(TRL's default where unset\), which trains by "
                                          r"epochs: set sft.trl.num_train_epochs"):
        sft_config(sft.model_copy(update={"trl": {}}), "cpu", tmp_path / "out")
    with pytest.raises(ParamsError, match="sft.trl.max_steps: 0 trains nothing"):
        sft_config(sft.model_copy(update={"trl": {**sft.trl, "max_steps": 0}}), "cpu", tmp_path / "out")
    with pytest.raises(ParamsError, match=r"sft.trl.max_length: set from sft.style"):
        sft_config(sft.model_copy(update={"trl": {"max_length": 512}}), "cpu", tmp_path / "out", max_length=None)
    with pytest.raises(ParamsError, match="sft.trl does not make a valid SFTConfig") as refused:
        sft_config(sft.model_copy(update={"trl": {**sft.trl, "lr_scheduler_type": "sideways"}}), "cpu",
                   tmp_path / "out")
    assert isinstance(refused.value.__cause__, ValueError)  # TRL's own check, kept as the cause


def test_batch_sizes_that_do_not_divide_are_refused_with_the_numbers(params_file, tmp_path):
    train = load_params(params_file).train
    train = train.model_copy(update={"trl": {**train.trl, "per_device_train_batch_size": 6, "num_generations": 4}})
    with pytest.raises(ParamsError, match=r"on 1 process\(es\): generation_batch_size \(6\) must be divisible "
                                          r"by num_generations \(4\)"):
        grpo_config(train, tmp_path / "out")


def test_epochs_need_num_train_epochs(params_file, tmp_path):
    train = load_params(params_file).train
    with pytest.raises(ParamsError, match="train.trl.num_train_epochs"):
        grpo_config(train.model_copy(update={"trl": {**train.trl, "max_steps": -1}}), tmp_path / "out")


def test_a_recipe_that_breaks_params_writes_nothing_and_names_the_key(params_file, tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes/typo.yaml").write_text("params:\n  train:\n    learning_rat: 0.1\n    min_pixels: -1\n")
    (tmp_path / "recipes/trl-typo.yaml").write_text("params:\n  train:\n    trl: {learnig_rate: 0.1, "
                                                    "num_generations: many}\n")
    before = params_file.read_text()
    with pytest.raises(RecipeError) as error:
        apply_recipe("typo", params_file, tmp_path / "recipes")
    assert "train.learning_rat" in str(error.value) and "train.min_pixels" in str(error.value)
    with pytest.raises(RecipeError) as error:
        apply_recipe("trl-typo", params_file, tmp_path / "recipes", check=check_trl_settings)
    assert "train.trl.learnig_rate: not a GRPOConfig setting" in str(error.value)
    assert "did you mean learning_rate?" in str(error.value) and "train.trl.num_generations: 'many'" in str(error.value)
    assert params_file.read_text() == before


def test_recipe_command_applies_lists_and_refuses_an_unknown_name(params_file):
    medr1 = [sys.executable, "-m", "medr1.cli", "recipe"]
    listed = subprocess.run([*medr1, "list"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "med-r1/qwen2-vl-2b-think" in listed.stdout
    shutil.copy(REPO / "tests/fixtures/params-01f3b63.yaml", params_file)  # an earlier version's layout
    applied = subprocess.run([*medr1, "apply", "med-r1/qwen2.5-vl-3b-no-think", "--params", str(params_file)],
                             cwd=REPO, capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "200"})
    assert "written by an earlier version: 23 key(s) moved" in applied.stdout
    assert "train.learning_rate -> train.trl.learning_rate" in applied.stdout
    assert "train.reasoning: 'think_after' -> 'no_think'" in applied.stdout
    assert load_params(params_file).evaluate.protocol == "med-r1-qwen2.5"
    unknown = subprocess.run([*medr1, "apply", "med-r1/qwen3", "--params", str(params_file)], cwd=REPO,
                             capture_output=True, text=True, check=False)
    assert unknown.returncode == 1 and "no recipe 'med-r1/qwen3'" in unknown.stdout
    assert "Traceback" not in unknown.stdout + unknown.stderr
