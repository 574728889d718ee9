"""What a training model loads with: the attention kernel (train.attn_implementation) and the
weights' dtype (train.weights_dtype), chosen before anything loads and said in one line."""

import sys
import types

import pytest
from conftest import repo_params, write_untrained_tiny

from medr1.data.records import read_jsonl
from medr1.errors import PipelineError

PARAMS = repo_params()


@pytest.fixture
def flash_attn(monkeypatch):
    """Make flash-attn look installed (transformers' check), importable or not."""
    import transformers.utils

    def install(imports: bool):
        monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
        monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn") if imports else None)

    return install


def test_auto_is_sdpa_without_flash_attn_and_says_med_r1_used_it():
    from medr1.model.loading import resolve_attention

    on_cpu = resolve_attention("auto", "cpu")
    assert on_cpu.implementation == "sdpa" and "CUDA GPUs only" in on_cpu.reason
    on_gpu = resolve_attention("auto", "cuda")  # this machine has no flash-attn
    assert on_gpu.implementation == "sdpa"
    assert "flash-attn (2.3.3 or later) is not installed" in on_gpu.reason
    assert "Med-R1 trained with flash_attention_2, which `make install-gpu` installs" in on_gpu.reason
    assert resolve_attention("eager", "cuda").implementation == "eager"


def test_auto_takes_flash_attention_where_it_imports_on_cuda(flash_attn):
    from medr1.model.loading import resolve_attention

    flash_attn(imports=True)
    assert resolve_attention("auto", "cuda").implementation == "flash_attention_2"
    assert resolve_attention("flash_attention_2", "cuda").implementation == "flash_attention_2"
    assert resolve_attention("auto", "cpu").implementation == "sdpa"
    flash_attn(imports=False)  # a wheel built for another torch: installed, but the import fails
    broken = resolve_attention("auto", "cuda")
    assert broken.implementation == "sdpa" and "installed but does not import" in broken.reason
    with pytest.raises(PipelineError, match="installed but does not import"):
        resolve_attention("flash_attention_2", "cuda")


@pytest.mark.parametrize("device, problem", [("cpu", "flash-attention runs on CUDA GPUs only"),
                                             ("cuda", "flash-attn .* is not installed")])
def test_explicit_flash_attention_that_cannot_run_is_refused_naming_the_install(device, problem):
    from medr1.model.loading import resolve_attention

    with pytest.raises(PipelineError, match=f"flash_attention_2, but {problem}.*`make install-gpu`.*auto"):
        resolve_attention("flash_attention_2", device)


def test_explicit_flash_attention_is_refused_before_anything_loads(tmp_path):
    """Both training stages stop on it first: the folder holds no model, so reaching any loading
    would fail with "cannot load a model" instead."""
    from medr1.train.grpo import train_grpo
    from medr1.train.sft import train_sft

    flash = PARAMS.train.model_copy(update={"attn_implementation": "flash_attention_2"})
    with pytest.raises(PipelineError, match="make install-gpu"):
        train_grpo(tmp_path / "no-model", [], tmp_path, flash, tmp_path / "out")
    with pytest.raises(PipelineError, match="make install-gpu"):
        train_sft(tmp_path / "no-model", [], tmp_path, PARAMS.sft, flash, tmp_path / "out")


def test_weights_are_bf16_on_cuda_and_float32_on_the_cpu():
    import torch

    from medr1.model.loading import resolve_weights_dtype

    assert resolve_weights_dtype("auto", "cuda") == torch.bfloat16  # DeepSpeed or not: its bf16 section casts so
    assert resolve_weights_dtype("auto", "cpu") == torch.float32
    assert resolve_weights_dtype("float32", "cuda") == torch.float32
    assert resolve_weights_dtype("bfloat16", "cpu") == torch.bfloat16


def test_the_policy_and_trls_reference_load_in_the_chosen_dtype(processed, tmp_path, capsys):
    """A CPU bf16 stand-in for CUDA's auto: the policy loads in bf16, says so with its attention in
    one line, and TRL builds the reference model (beta > 0) in the policy's dtype."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from medr1.model.loading import load_for_training
    from medr1.task.spec import TaskSpec
    from medr1.train.datasets import grpo_dataset

    records = list(read_jsonl(processed / "train.jsonl"))[:4]
    (tmp_path / "copies").mkdir()
    base = write_untrained_tiny(tmp_path / "base", records)
    model, processor = load_for_training(base, PARAMS.train.model_copy(update={"weights_dtype": "bfloat16"}), 0)
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "sdpa"
    said = capsys.readouterr().out.splitlines()
    assert said == [(f"[model] {base}: bfloat16 weights (train.weights_dtype: bfloat16), sdpa attention "
                     "(train.attn_implementation: auto, and flash-attention runs on CUDA GPUs only (train.device "
                     "resolves to cpu); Med-R1 trained with flash_attention_2, which `make install-gpu` installs on "
                     "a CUDA machine)")]
    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, beta=0.04, per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=4, report_to="none")
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions), args=args,
                          train_dataset=grpo_dataset(records, processed, TaskSpec("think_after", "tiny", "train"),
                                                     tmp_path / "copies"),
                          processing_class=processor)
    assert trainer.ref_model.dtype == torch.bfloat16
    float32, _ = load_for_training(base, PARAMS.train, 0)  # auto on the CPU
    assert float32.dtype == torch.float32


def test_a_folder_that_is_no_checkpoint_is_named_with_its_cause(tmp_path):
    from transformers import Qwen2VLConfig

    from medr1.model.loading import load_for_evaluation

    Qwen2VLConfig().save_pretrained(tmp_path / "config-only")  # no processor files, no weights
    (tmp_path / "empty").mkdir()
    for folder, cause in ((tmp_path / "config-only", OSError), (tmp_path / "empty", ValueError)):
        with pytest.raises(PipelineError, match=f"cannot load a model from {folder}: .*complete") as error:
            load_for_evaluation(folder, "cpu")
        assert type(error.value.__cause__) is cause  # chained, for whoever needs transformers' own account


@pytest.mark.parametrize("bug", [TypeError("a bug"), OSError(5, "Input/output error"),
                                 PermissionError(13, "Permission denied"), ValueError("not an unrecognized folder")])
def test_an_error_that_is_not_a_missing_file_keeps_its_traceback(tmp_path, bug):
    """Only transformers' own word for a missing or garbled file becomes the one-line message; a bug, or the
    operating system's own error (it carries an errno), passes through as it is."""
    from medr1.model.loading import _loading

    with pytest.raises(type(bug)) as error, _loading(tmp_path):
        raise bug
    assert error.value is bug
