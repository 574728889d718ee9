"""`medr1 plan`: what the applied recipe's training will hold on each GPU, before any GPU is used."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medr1.cli.common import PARAMS_FILE, console
from medr1.errors import MissingFileError

BUILT_BASE = Path("models/base")  # the base_model stage's output: the tiny model, or a pointer to a local one
DATA = Path("data/processed")


def plan(
    params_file: Annotated[Path, typer.Option("--params", help="The params file to plan for.")] = PARAMS_FILE,
    model: Annotated[Path | None, typer.Option(
        "--model", help="A folder with the base model's config.json (weights are not read); default: "
                        "base_model.path, or models/base for the tiny model.")] = None,
    questions: Annotated[int | None, typer.Option(
        "--questions", help="Questions in the train split, for the steps per epoch; default: "
                            "data/processed/train.jsonl's (train.group's file when set).")] = None,
    prompt_tokens: Annotated[int | None, typer.Option(
        "--prompt-tokens", help="Prompt length in tokens; default: an ingest.image_size picture's tokens + 128, "
                                "within train.max_prompt_length.")] = None,
) -> None:
    """Per-GPU memory of the GRPO run params.yaml describes (weights, gradients, optimizer, reference,
    activations), each with its formula; questions per step and steps per epoch. Reads config.json
    only: run it before the GPUs are booked."""
    from medr1.config import load_params
    from medr1.data.splits import train_split
    from medr1.train.memory_plan import LEAVES_OUT, memory_plan, planned_device, size_text, train_split_size
    from medr1.train.trl_config import trl_settings

    params = load_params(params_file)
    folder = model or _base_model_folder(params)
    if not (folder / "config.json").is_file():
        raise MissingFileError(f"no config.json in {folder}: pass --model <a Qwen2-VL / Qwen2.5-VL folder>")
    split = train_split(DATA, params.train.group, check=False)
    if questions is None:
        questions = train_split_size(split)
    device = planned_device(params.train.device)
    result = memory_plan(params, folder, device, questions, prompt_tokens)
    m, train = result.architecture, trl_settings(params.train)
    console.print(f"[bold]{params.recipe}[/bold] ({params_file}), model {folder}: {m.parameters:,} parameters "
                  f"({m.vision_parameters:,} in the vision tower), {m.trainable:,} trained")
    console.print(f"launch: {result.launch.description}; device {device}; per_device_train_batch_size "
                  f"{train.per_device_train_batch_size} completions x {result.prompt_tokens} prompt + "
                  f"{train.max_completion_length} completion tokens")
    where = "GPU" if device == "cuda" else "process (host memory)"
    table = Table("share", f"per {where}", "formula")
    for title, shares in (("persistent", result.persistent), ("training pass", result.training_pass),
                          ("generation (no gradients)", result.generation)):
        table.add_row(f"[bold]{title}[/bold]", size_text(sum(share.size for share in shares)), "")
        for share in shares:
            table.add_row(f"  {share.name}", size_text(share.size), share.how)
    table.add_row("[bold]estimate[/bold]", f"[bold]{size_text(result.estimate)}[/bold]",
                  "persistent + the larger of the training pass and generation")
    console.print(table)
    console.print(f"questions per step: {train.per_device_train_batch_size} x {result.launch.processes} processes x "
                  f"{train.gradient_accumulation_steps} accumulation / {train.num_generations} generations = "
                  f"{result.questions_per_step:g}")
    if result.steps_per_epoch is None:
        console.print(f"steps per epoch: unknown until {split} exists (or pass --questions)")
    else:
        console.print(f"steps per epoch: {result.questions:,} questions -> {result.steps_per_epoch:,} "
                      f"(num_iterations {train.num_iterations}; TRL drops an incomplete last batch)")
    console.print(f"leaves out: {LEAVES_OUT}")
    if result.caution:
        console.print(f"[yellow]caution:[/yellow] {result.caution}")


def _base_model_folder(params) -> Path:
    if params.base_model.kind == "local" and params.base_model.path:
        return Path(params.base_model.path)
    if (BUILT_BASE / "config.json").is_file():
        return BUILT_BASE
    raise MissingFileError("the tiny base model is built by `dvc repro base_model`: run it first, or pass --model")
