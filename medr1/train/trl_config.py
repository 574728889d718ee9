"""params.yaml's train and sft sections as TRL's GRPOConfig and SFTConfig, and peft's LoraConfig."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from medr1.config import SftParams, TrainParams
from medr1.errors import PipelineError
from medr1.model.loading import resolve_attention, resolve_device
from medr1.train.loggers import split_report_to


def typed_settings(params: TrainParams, output_dir: Path) -> dict:
    """The GRPOConfig settings that params.yaml types itself (train.<key>), and the ones that follow from them."""
    device = resolve_device(params.device)
    if params.use_vllm and device != "cuda":
        raise PipelineError("train.use_vllm needs a CUDA GPU; set train.use_vllm: false on the CPU")
    if params.use_vllm:
        refuse_vllm_without_its_client()
    resolve_attention(params.attn_implementation, device)  # flash_attention_2 that cannot run: refused first
    return {
        "output_dir": str(output_dir),
        "max_steps": params.max_steps,
        "learning_rate": params.learning_rate,
        "per_device_train_batch_size": params.per_device_train_batch_size,
        "gradient_accumulation_steps": params.gradient_accumulation_steps,
        "num_generations": params.num_generations,
        "temperature": params.temperature,
        "beta": params.beta,
        "num_iterations": params.num_iterations,
        "epsilon": params.epsilon,
        "max_completion_length": params.max_completion_length,
        "reward_weights": params.reward_weights,
        "logging_steps": params.logging_steps,
        "seed": params.seed,
        "use_cpu": device == "cpu",
        "bf16": device == "cuda",
        "activation_checkpointing": params.gradient_checkpointing,  # transformers 5's name (the old one warns)
        "use_vllm": params.use_vllm,
        "vllm_mode": params.vllm_mode,
        "save_strategy": "steps",  # checkpoints make a killed run resumable (`train_grpo` picks up the last one)
        "save_steps": params.checkpoint_steps,
        # every checkpoint saves the optimizer state; ModelOnlyOlderCheckpoints then keeps it in the newest only
        # (resumable) and leaves the model in the others, as Med-R1's --save_only_model
        "save_only_model": False,
        "disable_tqdm": False,
    }


def passthrough_settings(section: str, config_class, trl_settings: dict, typed: dict, max_steps: int) -> dict:
    """<section>.trl, checked against the installed TRL's `config_class`: an unknown key, or one that
    params.yaml types itself, is refused with its name."""
    import trl

    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(trl_settings) - known)
    if unknown:
        raise PipelineError(f"{section}.trl: {', '.join(unknown)} is not a {config_class.__name__} setting of the "
                            f"installed TRL {trl.__version__}; check the spelling (https://huggingface.co/docs/trl)")
    typed_twice = sorted(set(trl_settings) & set(typed))
    if typed_twice:
        where = ("sft.<key>, or sft.style for the settings a style fixes, train.device for use_cpu/bf16"
                 if section == "sft" else "train.<key>, or train.checkpoint_steps for save_steps and save_only_model "
                 "(the newest checkpoint keeps the optimizer state, the others the model only), train.device for "
                 "use_cpu/bf16")
        raise PipelineError(f"{section}.trl: {', '.join(typed_twice)} is set from its own param ({where}); "
                            "set it there")
    if max_steps == -1 and "num_train_epochs" not in trl_settings:
        raise PipelineError(f"{section}.max_steps: -1 trains by epochs: set {section}.trl.num_train_epochs")
    return dict(trl_settings)


def grpo_config(params: TrainParams, output_dir: Path):
    from trl import GRPOConfig

    typed = typed_settings(params, output_dir)
    passthrough = passthrough_settings("train", GRPOConfig, params.trl, typed, params.max_steps)
    # dvclive is wired by medr1.train.loggers (the stage's folder, the global step), not by name
    passthrough["report_to"], _ = split_report_to(passthrough.get("report_to", "none"))
    return _built(GRPOConfig, "train", typed, passthrough)


def _built(config_class, section: str, typed: dict, passthrough: dict):
    """The TRL config, its own checks (batch sizes that must divide across processes, ...) named as params."""
    try:
        return config_class(**typed, **passthrough)
    except (ValueError, TypeError) as error:
        from accelerate import PartialState

        raise PipelineError(f"{section} params do not make a valid {config_class.__name__} on "
                            f"{PartialState().num_processes} process(es): {error} (set in params.yaml's {section} "
                            f"section or {section}.trl)") from None


def sft_config(params: SftParams, device: str, output_dir: Path, **style_settings):
    """SFTConfig from the sft section; `style_settings` are those its style (completion_only, med-r1) fixes."""
    from trl import SFTConfig

    typed = {
        "output_dir": str(output_dir),
        "max_steps": params.max_steps,
        "learning_rate": params.learning_rate,
        "per_device_train_batch_size": params.per_device_train_batch_size,
        "logging_steps": params.logging_steps,
        "seed": params.seed,
        "use_cpu": device == "cpu",
        "bf16": device == "cuda",
        "report_to": "none",
        **style_settings,
    }
    passthrough = passthrough_settings("sft", SFTConfig, params.trl, typed, params.max_steps)
    return _built(SFTConfig, "sft", typed, passthrough)


def lora_config(params: TrainParams):
    from peft import LoraConfig

    lora = params.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")


def refuse_vllm_without_its_client() -> None:
    """TRL's vLLM generation imports vLLM in the training process in both modes (in server mode its client
    sends the weights through vLLM's own code), and no vLLM release that TRL 1.16 accepts (0.22-0.31)
    installs beside this project's pinned torch and transformers: refused here, before any model loads,
    rather than by an ImportError after it."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise PipelineError("train.use_vllm needs vLLM importable in the training environment (TRL's client uses it "
                            "even with train.vllm_mode: server), and no vLLM release TRL 1.16 accepts installs beside "
                            "this project's torch and transformers (docs/gpu-training.md, vLLM); set "
                            "train.use_vllm: false")
