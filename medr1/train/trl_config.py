"""params.yaml's train and sft sections as TRL's GRPOConfig and SFTConfig, and peft's LoraConfig.

train.trl and sft.trl hold every TRL setting by its TRL name: one typed pass-through, checked against
the installed TRL's dataclass (an unknown name is refused with the nearest known one, a value of the
wrong type with the field's type). Our own params hold only what TRL has no name for; the few TRL
settings that follow from them (use_cpu and bf16 from train.device, the output folder, what the
stages need of checkpoints and logs) are set here, and the pass-through may not contradict them.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from pathlib import Path

from medr1.config import ParamsError, SftParams, TrainParams
from medr1.errors import PipelineError
from medr1.model.loading import resolve_attention, resolve_device
from medr1.train.loggers import split_report_to

# TRL settings set here, not from <section>.trl: each with the param (or the reason) that decides it
DEVICE = "train.device (use_cpu on the CPU, bf16 on CUDA)"
DERIVED = {
    "train": {
        "output_dir": "the train stage's folder",
        "use_cpu": DEVICE,
        "bf16": DEVICE,
        "save_strategy": "fixed at steps: a killed run resumes from its last checkpoint; set how often with "
                         "train.trl.save_steps",
        "save_only_model": "fixed at false: the newest checkpoint keeps the optimizer state (resumable), the others "
                           "the model only (medr1/train/checkpoint_pruning.py, as Med-R1's --save_only_model)",
        "disable_tqdm": "fixed at false: the stage's log shows the progress bar",
    },
    "sft": {
        "output_dir": "the sft stage's folder",
        "use_cpu": DEVICE,
        "bf16": DEVICE,
        "report_to": "fixed at none: the sft stage logs no metrics of its own",
    },
}
STYLE = "sft.style, which fixes it (style_settings)"


def config_class(section: TrainParams | SftParams):
    """The TRL config a params section sets: GRPOConfig for train, SFTConfig for sft."""
    from trl import GRPOConfig, SFTConfig

    return GRPOConfig if isinstance(section, TrainParams) else SFTConfig


def settable_fields(config) -> dict[str, dataclasses.Field]:
    """The fields of TRL config class `config` that a recipe may set by name (all init fields)."""
    return {field.name: field for field in dataclasses.fields(config) if field.init}


@functools.cache
def _field_type(config, name: str):
    from pydantic import TypeAdapter

    annotation = typing.get_type_hints(config)[name]
    return annotation, TypeAdapter(annotation)


def checked_settings(section: str, config, settings: dict, derived: dict[str, str]) -> dict:
    """`settings` (a <section>.trl mapping) checked against TRL config class `config`: every name a field
    of the installed TRL's dataclass, every value of its field's type, none of the `derived` ones; a
    ParamsError naming each bad key otherwise. The values as given (a str for an int field: as its int)."""
    import trl
    from pydantic import ValidationError

    fields, problems, checked = settable_fields(config), [], {}
    for key, value in settings.items():
        if key in derived:
            problems.append(f"{section}.trl.{key}: set from {derived[key]}, not here")
        elif key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {near[0]}?" if near else " (https://huggingface.co/docs/trl)"
            problems.append(f"{section}.trl.{key}: not a {config.__name__} setting of the installed TRL "
                            f"{trl.__version__}{hint}")
        else:
            annotation, adapter = _field_type(config, key)
            try:
                valid = adapter.validate_python(value)
            except ValidationError as error:
                shown = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
                problems.append(f"{section}.trl.{key}: {value!r} is not of type {shown} ({error.errors()[0]['msg']})")
                continue
            checked[key] = value if valid == value else valid  # 0 stays 0 for a float field, "5" becomes 5
    if problems:
        raise ParamsError(f"{len(problems)} bad {section}.trl setting(s):\n" + "\n".join(f"  {p}" for p in problems))
    return checked


def style_settings(style: str) -> dict:
    """The SFTConfig settings an sft.style fixes (the rest come from sft.trl)."""
    if style == "med-r1":  # sft.py: its own collator on the raw rows, TRL's preparation skipped
        return {"dataset_kwargs": {"skip_prepare_dataset": True}, "remove_unused_columns": False}
    return {"max_length": None}  # never cut the image tokens out of a prompt


def check_trl_settings(params) -> None:
    """Both pass-throughs of `params` (a Params) checked as grpo_config and sft_config will check them."""
    from trl import GRPOConfig, SFTConfig

    checked_settings("train", GRPOConfig, params.train.trl, DERIVED["train"])
    style = dict.fromkeys(style_settings(params.sft.style), STYLE)
    checked_settings("sft", SFTConfig, params.sft.trl, {**DERIVED["sft"], **style})


def trl_settings(section: TrainParams | SftParams) -> types.SimpleNamespace:
    """Every setting of the section's TRL config as training sees it: <section>.trl's value, else TRL's default
    (the dataclass's; a few, such as steps_per_generation, TRL completes when the config is built)."""
    config = config_class(section)
    values = {name: field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
              for name, field in settable_fields(config).items()}
    settings = {**values, **section.trl}
    # transformers 5 resolves its deprecated gradient_checkpointing* aliases into activation_checkpointing* (the old
    # name counts where the new one is unset, TRL's default of the old one included), and so does this view
    for alias, name in (("gradient_checkpointing", "activation_checkpointing"),
                        ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if settings.get(name) is None:
            settings[name] = settings.get(alias)
        settings[alias] = settings[name]
    settings["activation_checkpointing"] = bool(settings["activation_checkpointing"])
    return types.SimpleNamespace(**settings)


def _steps_or_epochs(section: str, settings: dict, defaults: types.SimpleNamespace) -> None:
    steps = settings.get("max_steps", defaults.max_steps)
    if steps == 0:
        raise ParamsError(f"{section}.trl.max_steps: 0 trains nothing: give a number of steps, or -1 to train "
                          f"{section}.trl.num_train_epochs epochs")
    if steps == -1 and "num_train_epochs" not in settings:
        raise ParamsError(f"{section}.trl.max_steps is -1 (TRL's default where unset), which trains by epochs: set "
                          f"{section}.trl.num_train_epochs, or {section}.trl.max_steps")


def grpo_config(params: TrainParams, output_dir: Path):
    from trl import GRPOConfig

    device = resolve_device(params.device)
    settings = checked_settings("train", GRPOConfig, params.trl, DERIVED["train"])
    effective = trl_settings(params)
    _steps_or_epochs("train", settings, effective)
    if effective.use_vllm:
        if device != "cuda":
            raise PipelineError("train.trl.use_vllm needs a CUDA GPU; set train.trl.use_vllm: false on the CPU")
        refuse_vllm_without_its_client()
    resolve_attention(params.attn_implementation, device)  # flash_attention_2 that cannot run: refused first
    derived = {
        **_run_settings(output_dir, device),
        "save_strategy": "steps",  # checkpoints make a killed run resumable (`train_grpo` picks up the last one)
        # every checkpoint saves the optimizer state; ModelOnlyOlderCheckpoints then keeps it in the newest only
        # (resumable) and leaves the model in the others, as Med-R1's --save_only_model
        "save_only_model": False,
        "disable_tqdm": False,
    }
    # dvclive is wired by medr1.train.loggers (the stage's folder, the global step), not by name
    settings["report_to"], _ = split_report_to(settings.get("report_to", "none"))
    return _built(GRPOConfig, "train", derived, settings)


def sft_config(params: SftParams, device: str, output_dir: Path, **fixed_by_style):
    """SFTConfig from the sft section; `fixed_by_style` are the settings its style fixes (`style_settings`)."""
    from trl import SFTConfig

    derived = {**_run_settings(output_dir, device), "report_to": "none", **fixed_by_style}
    fixed = {**DERIVED["sft"], **dict.fromkeys(fixed_by_style, STYLE)}
    settings = checked_settings("sft", SFTConfig, params.trl, fixed)
    _steps_or_epochs("sft", settings, trl_settings(params))
    return _built(SFTConfig, "sft", derived, settings)


def _run_settings(output_dir: Path, device: str) -> dict:
    """The settings both configs take from the stage and train.device (DERIVED names them)."""
    return {"output_dir": str(output_dir), "use_cpu": device == "cpu", "bf16": device == "cuda"}


def _built(config, section: str, derived: dict, settings: dict):
    """The TRL config; a ValueError from its own checks (batch sizes that must divide across processes, ...)
    named as params. Anything else is a bug here or in TRL and keeps its traceback."""
    try:
        return config(**derived, **settings)
    except ValueError as error:
        from accelerate import PartialState

        raise ParamsError(f"{section}.trl does not make a valid {config.__name__} on {PartialState().num_processes} "
                          f"process(es): {error} (set in params.yaml's {section}.trl)") from error


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
        raise PipelineError("train.trl.use_vllm needs vLLM importable in the training environment (TRL's client uses "
                            "it even with train.trl.vllm_mode: server), and no vLLM release TRL 1.16 accepts installs "
                            "beside this project's torch and transformers (docs/gpu-training.md, vLLM); set "
                            "train.trl.use_vllm: false")
