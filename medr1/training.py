"""What GRPO and SFT share: the device, loading the base for training, saving the result."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.config import TrainParams
from medr1.errors import PipelineError


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("the device is set to cuda but no CUDA GPU is visible; set it to cpu or auto "
                            "(train.device, evaluate.device or --device)")
    return device


def resolve_attention(choice: str, device: str) -> str:
    """flash_attention_2 on CUDA when flash-attn is installed, else PyTorch's sdpa."""
    if choice != "auto":
        return choice
    import importlib.util

    return "flash_attention_2" if device == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def load_for_training(model_dir: Path, params: TrainParams):
    """(model, processor) from `model_dir`. Weights stay float32 (the optimizer's updates at a
    learning rate of 1e-6 would vanish in bf16 weights); on CUDA bf16 is the compute type."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(params.seed)
    device = resolve_device(params.device)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=resolve_attention(params.attn_implementation, device))
    return model, processor


def peak_gpu_memory() -> str | None:
    """This process's peak CUDA memory, for the stage's log line; None on the CPU."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    gib = 2**30
    return (f"peak GPU memory {torch.cuda.max_memory_allocated() / gib:.1f} GiB allocated, "
            f"{torch.cuda.max_memory_reserved() / gib:.1f} GiB reserved ({torch.cuda.get_device_name()})")


def save_trained(trainer, processor, output_dir: Path) -> list[dict]:
    """Save the trained model (gathering sharded weights), processor and log; returns the log."""
    trainer.save_model(str(output_dir))  # writes on the main process only
    history = trainer.state.log_history
    if trainer.accelerator.is_main_process:
        (output_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the params are in the manifest
        processor.save_pretrained(output_dir)
        (output_dir / "trainer_log.json").write_text(json.dumps(history, indent=1))
    return history
