"""Loading a checkpoint folder for training or evaluation, on the device params ask for."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
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


GPU_INSTALL = "make install-gpu"  # the README's GPU environment: the pinned torch with DeepSpeed and flash-attn


@dataclass(frozen=True)
class Attention:
    """The attention kernel a model loads with, and why (for the stage's log line)."""

    implementation: str
    reason: str


def resolve_attention(choice: str, device: str) -> Attention:
    """train.attn_implementation on `device`. auto: flash_attention_2 on CUDA where flash-attn imports,
    else sdpa. An explicit flash_attention_2 that cannot run is refused here, before any model loads
    (transformers would fail only inside from_pretrained, with its own traceback)."""
    if choice not in ("auto", "flash_attention_2"):
        return Attention(choice, f"train.attn_implementation: {choice}")
    problem = _flash_attention_problem(device)
    if choice == "flash_attention_2" and problem:
        raise PipelineError(f"train.attn_implementation is flash_attention_2, but {problem}: install it on a CUDA "
                            f"machine with `{GPU_INSTALL}`, or set train.attn_implementation: auto (sdpa where "
                            "flash-attn cannot run)")
    if choice == "flash_attention_2":
        return Attention(choice, "train.attn_implementation: flash_attention_2")
    if problem:
        return Attention("sdpa", f"train.attn_implementation: auto, and {problem}; Med-R1 trained with "
                                 f"flash_attention_2, which `{GPU_INSTALL}` installs on a CUDA machine")
    return Attention("flash_attention_2", "train.attn_implementation: auto, flash-attn imports on CUDA")


def _flash_attention_problem(device: str) -> str | None:
    """Why flash_attention_2 cannot run here, or None. transformers' own check (the package, its
    version, CUDA) first; then the import itself, which fails when the wheel was built for another torch."""
    if device != "cuda":
        return f"flash-attention runs on CUDA GPUs only (train.device resolves to {device})"
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return "flash-attn (2.3.3 or later) is not installed"
    try:
        import flash_attn  # noqa: F401
    except (ImportError, OSError) as error:
        return f"flash-attn is installed but does not import ({error})"
    return None


def resolve_weights_dtype(choice: str, device: str):
    """train.weights_dtype on `device` as a torch dtype. auto: bfloat16 on CUDA (what the bf16
    compute casts to anyway; under DeepSpeed its bf16 section adds fp32 master weights), float32 on
    the CPU, where bf16 matmuls are slow and the exactness tests run."""
    import torch

    if choice == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, choice)


def load_for_training(model_dir: Path, params: TrainParams, seed: int, pixel_limits: tuple[int, int] | None = None):
    """(model, processor) from `model_dir`, in train.weights_dtype with train.attn_implementation
    (TRL builds the reference model in the same dtype and attention), torch seeded with `seed` first (the
    trainer's config's: train.trl.seed or sft.trl.seed). `pixel_limits` (min, max) bound the image
    processor's resize instead of the checkpoint's own.

    from_pretrained leaves weights in their dtype on disk as views of the memory-mapped file, so a
    bf16 load of a bf16 checkpoint holds no host copy of its own; float32 makes one (twice the file)."""
    import torch
    from transformers import AutoModelForImageTextToText

    device = resolve_device(params.device)
    attention = resolve_attention(params.attn_implementation, device)  # a refusal comes before anything loads
    dtype = resolve_weights_dtype(params.weights_dtype, device)
    torch.manual_seed(seed)
    processor = load_training_processor(model_dir, pixel_limits)
    with _loading(model_dir):
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype,
                                                            attn_implementation=attention.implementation)
    if os.environ.get("RANK", "0") == "0":  # one line per run, not per process (torchrun and accelerate set RANK)
        print(f"[model] {model_dir}: {str(dtype).removeprefix('torch.')} weights "
              f"(train.weights_dtype: {params.weights_dtype}), {attention.implementation} attention "
              f"({attention.reason})", flush=True)
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
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = resolve_device(device)
    with _loading(folder):
        processor = AutoProcessor.from_pretrained(folder)
        # sdpa, not train.attn_implementation: the decoder's rows carry padding inside them (each continues its
        # image's cached head, medr1/evaluate/heads.py), which is tested under sdpa only
        model = AutoModelForImageTextToText.from_pretrained(
            folder, dtype=resolve_weights_dtype("auto", device), attn_implementation="sdpa").to(device)
    return model, processor


def _not_a_checkpoint(error: Exception) -> bool:
    """transformers' or safetensors' word that a folder lacks or garbles a file: an OSError transformers raises with
    a message only (the operating system's own errors carry an errno, and keep their traceback), a config or
    processor it does not recognise (no config.json), a safetensors file cut short. Anything else is a bug."""
    from safetensors import SafetensorError

    if type(error) is OSError:
        return error.errno is None
    if isinstance(error, ValueError):
        return str(error).startswith("Unrecognized")
    return isinstance(error, SafetensorError)


@contextmanager
def _loading(folder: Path):
    """A folder from_pretrained cannot read (a missing or truncated file) as a message naming it."""
    try:
        yield
    except Exception as error:
        if not _not_a_checkpoint(error):
            raise
        raise PipelineError(f"cannot load a model from {folder}: {error}; check the folder is a complete "
                            "Qwen2-VL / Qwen2.5-VL checkpoint (config.json, weights, processor files)") from error
