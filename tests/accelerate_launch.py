"""What a training process started by `accelerate launch --config_file <config>` runs with, worked out
by accelerate's, transformers' and DeepSpeed's own code rather than restated: the ACCELERATE_*
environment accelerate's launcher sets, the DeepSpeedPlugin that environment builds, the DeepSpeed
config after transformers' Trainer fills its "auto" values from the TrainingArguments, and the
gradient clipping and precision that follow."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace


@dataclass(frozen=True)
class Effective:
    """What a launch trains with."""

    clipping: float  # the gradient norm it clips at; 0: none
    precision: str  # e.g. "bf16, fp32 master weights" (DeepSpeed) or "fp32 weights, bf16 autocast" (DDP)
    mismatches: tuple[str, ...] = ()  # transformers' refusals: DeepSpeed values that differ from the arguments


def launch_environment(config_file: Path, num_processes: int | None = None) -> dict[str, str]:
    """The ACCELERATE_* variables `accelerate launch --config_file config_file [--num_processes n]` gives
    its workers (run from the repository root, where a deepspeed_config_file path is read)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import (
        prepare_deepspeed_cmd_env,
        prepare_multi_gpu_env,
        prepare_simple_launcher_cmd_env,
    )

    argv = ["--config_file", str(config_file), *(["--num_processes", str(num_processes)] if num_processes else []),
            "-m", "stages.train"]
    args, defaults, mixed_precision_from_config = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:
        # accelerate.commands.launch.launch_command's own step before deepspeed_launcher
        named = [*defaults.deepspeed_config, *(["mixed_precision"] if mixed_precision_from_config else [])]
        args.deepspeed_fields_from_accelerate_config = ",".join(named)
        environment = prepare_deepspeed_cmd_env(args)[1]
    elif args.multi_gpu:
        environment = prepare_multi_gpu_env(args)
    else:
        environment = prepare_simple_launcher_cmd_env(args)[1]
    return {key: value for key, value in environment.items() if key.startswith("ACCELERATE_")}


@contextmanager
def _environment(variables: dict[str, str]):
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def trainer_arguments(config, environment: dict[str, str], processes: int, bf16: bool) -> SimpleNamespace:
    """A TrainingArguments (GRPOConfig, SFTConfig) built here on the CPU, as a worker of a `processes`-process
    launch with `environment` on CUDA sees it: world_size is the launch's, bf16 what train.device: cuda sets
    (medr1/train/trl_config.py), and mixed_precision as TrainingArguments.__post_init__ derives it (the
    launcher's ACCELERATE_MIXED_PRECISION, overridden by bf16)."""
    values = {field.name: getattr(config, field.name) for field in fields(config)}
    mixed_precision = "bf16" if bf16 else environment.get("ACCELERATE_MIXED_PRECISION", "no")
    return SimpleNamespace(**{**values, "world_size": processes, "bf16": bf16, "use_cpu": False,
                              "mixed_precision": mixed_precision})


def effective(environment: dict[str, str], arguments: SimpleNamespace, weights_dtype) -> Effective:
    """The clipping and precision of a worker with `environment` and `arguments` whose model loads in
    `weights_dtype` (a torch dtype)."""
    import torch

    if environment.get("ACCELERATE_USE_DEEPSPEED") == "true":
        return _under_deepspeed(environment, arguments)
    # transformers' Trainer clips at max_grad_norm when it is above 0 (trainer.py: `if self.args.max_grad_norm > 0`)
    clipping = arguments.max_grad_norm if arguments.max_grad_norm > 0 else 0.0
    autocast = arguments.mixed_precision if arguments.mixed_precision != "no" else None
    if weights_dtype == torch.float32:
        precision = f"fp32 weights, {autocast} autocast" if autocast else "fp32"
    else:
        precision = f"{str(weights_dtype).removeprefix('torch.').replace('bfloat16', 'bf16')} weights, no fp32 master"
    return Effective(clipping, precision)


def _under_deepspeed(environment: dict[str, str], arguments: SimpleNamespace) -> Effective:
    from accelerate.utils import DeepSpeedPlugin
    from deepspeed.runtime.config import get_gradient_clipping
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    with _environment(environment):
        plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision(arguments.mixed_precision)  # accelerate's AcceleratorState, with the Trainer's
    try:
        filled = HfTrainerDeepSpeedConfig(plugin.hf_ds_config.config)  # transformers' propagate_args_to_deepspeed
        filled.trainer_config_process(arguments)
        config = filled.config
    finally:
        unset_hf_deepspeed_config()  # the global that from_pretrained would read in later tests
    clipping = float(get_gradient_clipping(config))  # DeepSpeed's own reading, its installed default for no key
    half = "bf16" if config.get("bf16", {}).get("enabled") is True else \
        "fp16" if config.get("fp16", {}).get("enabled") is True else None
    # ZeRO's optimizer (and DeepSpeed's bf16 optimizer at stage 0) keeps fp32 partitions of the weights
    precision = f"{half}, fp32 master weights" if half else "fp32"
    return Effective(clipping, precision, tuple(filled.mismatches))
