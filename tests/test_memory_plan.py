"""`medr1 plan`: the per-GPU memory of a recipe's GRPO run, from params.yaml, the launcher and a
config.json alone. The model is Qwen2-VL-2B-Instruct's published architecture (a config.json-only
folder in tests/fixtures: the real download is not here, and the meta device needs no weights)."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medr1.config import load_params
from medr1.pipeline.recipes import apply_recipe

REPO = Path(__file__).resolve().parents[1]
QWEN2_VL_2B = REPO / "tests/fixtures/qwen2-vl-2b-instruct"
PARAMETERS = 2_208_985_600  # Qwen2-VL-2B-Instruct: 1,543,714,304 language model + 665,271,296 vision tower


@pytest.fixture
def med_r1(tmp_path):
    """params.yaml with med-r1/qwen2-vl-2b-think applied, typed."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    apply_recipe("med-r1/qwen2-vl-2b-think", tmp_path / "params.yaml", REPO / "recipes")
    return load_params(tmp_path / "params.yaml")


def _with(params, **train):
    return params.model_copy(update={"train": params.train.model_copy(update=train)})


def _shares(plan) -> dict[str, float]:
    return {share.name: share.size for share in [*plan.persistent, *plan.training_pass, *plan.generation]}


def test_the_parameters_are_counted_on_the_meta_device(med_r1):
    from medr1.train.model_sizes import architecture_of

    model = architecture_of(QWEN2_VL_2B, med_r1)
    assert (model.parameters, model.vision_parameters, model.trainable) == (PARAMETERS, 665_271_296, PARAMETERS)
    assert (model.hidden, model.layers, model.kv_width, model.intermediate, model.vocab) == (1536, 28, 256, 8960,
                                                                                             151936)
    lora = architecture_of(QWEN2_VL_2B, _with(med_r1, lora=med_r1.train.lora.model_copy(update={"enabled": True})))
    # r 16 on q, k, v, o of 28 layers: 16 x ((1536 + 1536) + 2 x (1536 + 256) + (1536 + 1536)) x 28
    assert lora.trainable == 16 * 9728 * 28


@pytest.mark.parametrize("launcher, processes, zero", [
    ("python", 1, None),
    ("torchrun --standalone --nproc_per_node 4", 4, None),
    ("torchrun --nnodes=2 --nproc_per_node=8 --node_rank 0 --master_addr host --master_port 29500", 16, None),
    ("accelerate launch --config_file infra/accelerate/deepspeed-zero2.yaml --num_processes 2", 2, 2),
    ("accelerate launch --config_file infra/accelerate/deepspeed-zero3.yaml", 8, 3),  # the config's num_processes
    ("accelerate launch --config_file infra/accelerate/single-gpu.yaml", 1, None),
])
def test_the_launcher_gives_the_processes_and_the_zero_stage(launcher, processes, zero):
    from medr1.train.launch_plan import launch_of

    launch = launch_of(launcher, REPO)
    assert (launch.processes, launch.zero_stage) == (processes, zero)


def test_med_r1_on_two_gpus_with_zero2_shards_the_optimizer_and_gradients(med_r1):
    """Med-R1's setting: 2 GPUs, ZeRO-2, bf16 (fp32 master weights and AdamW state in DeepSpeed's
    optimizer), 2 prompts x 4 generations a GPU, 2 accumulation steps, a bf16 reference (beta 0.04)."""
    from medr1.train.memory_plan import memory_plan

    plan = memory_plan(med_r1, QWEN2_VL_2B, "cuda", questions=1000, root=REPO)
    assert (plan.launch.processes, plan.launch.zero_stage) == (2, 2)
    shares = _shares(plan)
    assert shares["weights"] == PARAMETERS * 2 and shares["reference model"] == PARAMETERS * 2
    assert shares["optimizer"] == PARAMETERS * 12 / 2 and shares["gradients"] == PARAMETERS * 2 / 2
    assert shares["reduce bucket"] == 500_000_000 * 2
    # the language model's activations: 8 rows x (196 image + 128 text + 256 completion tokens) x 28 layers x
    # (8 x 1536 + 2 x 256 + 4 x 8960) values x 2 bytes
    assert plan.prompt_tokens == 196 + 128
    assert shares["activations, language model"] == 8 * 580 * 28 * (8 * 1536 + 2 * 256 + 4 * 8960) * 2
    assert plan.estimate == sum(shares[name] for name in ("weights", "optimizer", "reference model")) + sum(
        share.size for share in plan.training_pass)  # the training pass outweighs generation here
    # 8 completions x 2 GPUs x 2 accumulation / 4 generations; 1000 questions in whole batches of 8
    assert plan.questions_per_step == 8 and plan.steps_per_epoch == 125


def test_zero3_shards_the_weights_and_the_reference_too(med_r1):
    from medr1.train.memory_plan import memory_plan

    launcher = "accelerate launch --config_file infra/accelerate/deepspeed-zero3.yaml --num_processes 4"
    shares = _shares(memory_plan(_with(med_r1, launcher=launcher), QWEN2_VL_2B, "cuda", root=REPO))
    assert shares["weights"] == shares["reference model"] == PARAMETERS * 2 / 4
    assert shares["optimizer"] == PARAMETERS * 12 / 4 and shares["gradients"] == PARAMETERS * 2 / 4


def test_without_deepspeed_the_weights_dtype_sets_every_persistent_share(med_r1):
    """One GPU: bf16 weights (train.weights_dtype auto on CUDA) hold weights, AdamW's moments and the
    reference at 2 bytes; float32 (the CPU's) at 4. Two DDP processes add a copy of the gradients."""
    from medr1.train.memory_plan import memory_plan

    one_gpu = _with(med_r1, launcher="accelerate launch --config_file infra/accelerate/single-gpu.yaml")
    bf16 = _shares(memory_plan(one_gpu, QWEN2_VL_2B, "cuda", root=REPO))
    fp32 = _shares(memory_plan(_with(one_gpu, weights_dtype="float32"), QWEN2_VL_2B, "cuda",
                               root=REPO))
    assert (bf16["weights"], bf16["optimizer"], bf16["reference model"], bf16["gradients"]) == (
        PARAMETERS * 2, PARAMETERS * 4, PARAMETERS * 2, PARAMETERS * 2)
    assert (fp32["weights"], fp32["optimizer"], fp32["reference model"]) == (PARAMETERS * 4, PARAMETERS * 8,
                                                                             PARAMETERS * 4)
    caution = memory_plan(one_gpu, QWEN2_VL_2B, "cuda", root=REPO).caution  # Med-R1's lr 1e-6 on bf16 weights
    assert caution.startswith("bf16 weights without DeepSpeed: AdamW's steps of about lr 1e-06 round away on every "
                              "weight above 2.6e-04")
    assert memory_plan(_with(one_gpu, weights_dtype="float32"), QWEN2_VL_2B, "cuda", root=REPO).caution is None
    assert memory_plan(med_r1, QWEN2_VL_2B, "cuda", root=REPO).caution is None  # ZeRO-2: float32 master weights
    ddp = _shares(memory_plan(_with(one_gpu, launcher="torchrun --standalone --nproc_per_node 2"), QWEN2_VL_2B,
                              "cuda", root=REPO))
    assert ddp["DDP buckets"] == ddp["gradients"] == PARAMETERS * 2
    no_reference = _shares(memory_plan(_with(one_gpu, trl={**one_gpu.train.trl, "beta": 0.0}), QWEN2_VL_2B, "cuda",
                                       root=REPO))
    assert "reference model" not in no_reference  # TRL builds none at beta 0


def test_gradient_checkpointing_keeps_each_layers_input_only(med_r1):
    from medr1.train.memory_plan import memory_plan

    plain = _shares(memory_plan(med_r1, QWEN2_VL_2B, "cuda", root=REPO))
    checkpointed = _shares(memory_plan(_with(med_r1, trl={**med_r1.train.trl, "activation_checkpointing": True}),
                                       QWEN2_VL_2B, "cuda", root=REPO))
    assert checkpointed["activations, language model"] == 8 * 580 * (28 * 1536 * 2 + (8 * 1536 + 2 * 256 + 4 * 8960)
                                                                      * 2)
    assert checkpointed["activations, vision tower"] < plain["activations, vision tower"] / 10


def test_medr1_plan_prints_the_estimate_for_the_applied_recipe(med_r1, tmp_path, monkeypatch):
    from medr1.cli import common
    from medr1.cli.app import app

    monkeypatch.setattr(common.console, "width", 240)  # the shared console's width was fixed when it was made
    shutil.copytree(REPO / "infra/accelerate", tmp_path / "infra/accelerate")
    monkeypatch.chdir(tmp_path)  # params.yaml of the fixture, the launcher's config beside it
    result = CliRunner().invoke(app, ["plan", "--model", str(QWEN2_VL_2B), "--questions", "1000"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps lines at the terminal's width (a long path moves them)
    assert "med-r1/qwen2-vl-2b-think" in output and "2 process(es), DeepSpeed ZeRO-2" in output
    assert "questions per step: 8 x 2 processes x 2 accumulation / 4 generations = 8" in output
    assert "steps per epoch: 1,000 questions -> 125" in output and "leaves out:" in output
    assert "estimate" in output and "(4 B float32 master weights + 8 B AdamW moments) / 2 GPUs" in output
    missing = CliRunner().invoke(app, ["plan", "--model", str(tmp_path)])
    assert missing.exit_code == 1 and "no config.json in" in missing.output


def test_the_stage_line_summarises_the_plan_and_never_stops_training(med_r1, tmp_path, monkeypatch):
    from medr1.train.memory_plan import stage_line

    monkeypatch.chdir(REPO)  # the stage runs in the repository, where the launcher's config is
    line = stage_line(med_r1, QWEN2_VL_2B, "cuda", 1000)
    assert line.startswith("[train] plan: accelerate launch infra/accelerate/deepspeed-zero2-no-clipping.yaml, 2 "
                           "process(es), DeepSpeed ZeRO-2")
    assert "GiB per GPU (weights 4.1 GiB, optimizer 12.3 GiB" in line
    assert "8 question(s) a step, 125 steps an epoch" in line
    assert "\n" not in line  # ZeRO-2: no caution
    one_gpu = stage_line(_with(med_r1, launcher="python"), QWEN2_VL_2B, "cuda", None)
    assert one_gpu.splitlines()[1].startswith("[train] caution: bf16 weights without DeepSpeed")
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')  # a text-only model: no vision tower to count
    assert "no estimate for" in stage_line(med_r1, tmp_path, "cuda", None)
