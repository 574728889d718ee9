"""Loading a checkpoint folder for training or evaluation, on the device params ask for."""

from __future__ import annotations

from contextlib import contextmanager
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


def load_for_training(model_dir: Path, params: TrainParams, pixel_limits: tuple[int, int] | None = None):
    """(model, processor) from `model_dir`. Weights stay float32 (the optimizer's updates at a
    learning rate of 1e-6 would vanish in bf16 weights); on CUDA bf16 is the compute type.
    `pixel_limits` (min, max) bound the image processor's resize instead of the checkpoint's own."""
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(params.seed)
    device = resolve_device(params.device)
    processor = load_training_processor(model_dir, pixel_limits)
    with _loading(model_dir):
        model = AutoModelForImageTextToText.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation=resolve_attention(params.attn_implementation, device))
    return model, processor


def load_training_processor(model_dir: Path, pixel_limits: tuple[int, int] | None = None):
    """The folder's processor, its image resize bounded by `pixel_limits` (min, max) when given."""
    from transformers import AutoProcessor

    with _loading(model_dir):
        processor = AutoProcessor.from_pretrained(model_dir)
    if pixel_limits is not None:
        processor.image_processor.size = {"shortest_edge": pixel_limits[0], "longest_edge": pixel_limits[1]}
    return processor


def peak_gpu_memory() -> str | None:
    """This process's peak CUDA memory, for the stage's log line; None on the CPU."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    gib = 2**30
    return (f"peak GPU memory {torch.cuda.max_memory_allocated() / gib:.1f} GiB allocated, "
            f"{torch.cuda.max_memory_reserved() / gib:.1f} GiB reserved ({torch.cuda.get_device_name()})")


def load_for_evaluation(folder: Path, device: str = "auto"):
    """(model, processor) on `device` (auto: a CUDA GPU when there is one), bf16 on CUDA."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = resolve_device(device)
    with _loading(folder):
        processor = AutoProcessor.from_pretrained(folder)
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype).to(device)
    return model, processor


@contextmanager
def _loading(folder: Path):
    """A folder from_pretrained cannot read (a missing or truncated file) as a message naming it."""
    try:
        yield
    except (OSError, ValueError) as error:
        if isinstance(error, ValueError) and not str(error).startswith("Unrecognized model"):  # no config.json
            raise
        raise PipelineError(f"cannot load a model from {folder}: {error}; check the folder is a complete "
                            "Qwen2-VL / Qwen2.5-VL checkpoint (config.json, weights, processor files)") from None
