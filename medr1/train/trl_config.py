"""params.yaml's train section as TRL's GRPOConfig and peft's LoraConfig."""

from __future__ import annotations

from pathlib import Path

from medr1.config import TrainParams
from medr1.errors import PipelineError
from medr1.model.loading import resolve_device


def grpo_config(params: TrainParams, output_dir: Path):
    from trl import GRPOConfig

    device = resolve_device(params.device)
    if params.use_vllm and device != "cuda":
        raise PipelineError("train.use_vllm needs a CUDA GPU; set train.use_vllm: false on the CPU")
    return GRPOConfig(
        output_dir=str(output_dir),
        max_steps=params.max_steps,
        learning_rate=params.learning_rate,
        weight_decay=0.0,  # the tiny model's frozen option reader must not decay
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=0,
        per_device_train_batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        num_generations=params.num_generations,
        temperature=params.temperature,
        beta=params.beta,
        num_iterations=params.num_iterations,
        epsilon=params.epsilon,
        max_completion_length=params.max_completion_length,
        reward_weights=params.reward_weights,
        logging_steps=params.logging_steps,
        seed=params.seed,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        gradient_checkpointing=params.gradient_checkpointing,
        use_vllm=params.use_vllm,
        vllm_mode=params.vllm_mode,
        report_to="none",
        save_strategy="steps",  # checkpoints make a killed run resumable (`train_grpo` picks up the last one)
        save_steps=params.checkpoint_steps,
        save_total_limit=2,
        disable_tqdm=False,
    )


def lora_config(params: TrainParams):
    from peft import LoraConfig

    lora = params.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type="CAUSAL_LM")
