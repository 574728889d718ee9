"""`medr1 evaluate`: any model (a folder or a registered version) on any split, with a progress bar."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medr1.cli.common import PARAMS_FILE, console, open_configured_store
from medr1.config import EvaluateParams, load_params
from medr1.errors import MissingFileError, PipelineError
from medr1.task.model_task import TASK_FILE, recorded_task
from medr1.task.prompts import PROMPT_STYLES, REASONING_MODES
from medr1.task.spec import TaskSpec

# Outside the pipeline's checkout (no params.yaml): our grading, a bounded image window. The prompts are the
# model's own (--prompts, or what its folder records): no layout is right for every model.
OUTSIDE_A_CHECKOUT = {"protocol": "strict", "base_prompt": "trained", "image_window": 256}


def images_root_of(split: Path) -> Path:
    """The processed root a split's image paths are relative to: the nearest folder above it with images/."""
    for folder in split.resolve().parents:
        if (folder / "images").is_dir():
            return folder
    raise MissingFileError(f"no images/ folder above {split}: pass --images <the processed root>")


def resolve_model(model: str, store: str | None, workdir: Path) -> tuple[Path, dict | None]:
    """A folder as it is; otherwise a registry version, pulled into `workdir` with checksums verified,
    with its manifest."""
    folder = Path(model)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise MissingFileError(f"{folder} has no config.json: give a model folder or a registered version")
        return folder, None
    if "/" in model or "\\" in model:  # version ids have no separators: this was meant as a folder
        raise MissingFileError(f"no model folder {folder}: give a model folder or a registered version")
    from medr1.registry.versions import pull

    target = workdir / model
    return target, pull(open_configured_store(store), model, target)


def task_outside_a_checkout(folder: Path, manifest: dict | None, reasoning: str | None, prompts: str | None,
                            protocol: str) -> TaskSpec:
    """The task a model is asked as without params.yaml: the options given, else what the model's folder (or
    its registry manifest) records of its training; an error naming the option when neither says."""
    recorded = recorded_task(folder, manifest)
    mode, style = reasoning or recorded.get("reasoning"), prompts or recorded.get("prompts")
    missing = [name for name, value in (("reasoning", mode), ("prompts", style)) if value is None]
    if missing:
        raise PipelineError(f"no params.yaml here, and {folder} records no {' or '.join(missing)} (training "
                            f"writes them into {TASK_FILE}): pass {' and '.join(f'--{name}' for name in missing)}; "
                            "--prompts med-r1 asks in Med-R1's templates (a real Qwen2-VL), tiny in the embedded demo "
                            "model's layout")
    task = TaskSpec(mode, style, "evaluate", protocol=protocol)
    return replace(task, rewards=recorded["rewards"]) if "rewards" in recorded else task


def _table(title: str, values: dict) -> Table:
    table = Table(title=title)
    table.add_column("group")
    table.add_column("accuracy", justify="right")
    for name, value in values.items():
        table.add_row(name, f"{value:.4f}")
    return table


def evaluate(
    model: Annotated[str, typer.Option("--model", help="A model folder (from_pretrained layout, e.g. a real Qwen2-VL "
                                       "checkpoint) or a registered version id (pulled and verified first).")],
    data: Annotated[Path, typer.Option("--data", help="A split's JSONL, e.g. data/processed/test.jsonl or "
                                       "data/processed/splits/modality/test/CT.jsonl.")],
    images: Annotated[Path | None, typer.Option("--images", help="Root the records' image paths are relative to "
                                                "(default: the nearest folder above --data holding images/).")] = None,
    reasoning: Annotated[str | None, typer.Option("--reasoning", help="think_before, no_think or think_after "
                                                  "(default: train.reasoning in params.yaml; outside a checkout, "
                                                  "what the model folder records).")] = None,
    prompts: Annotated[str | None, typer.Option(
        "--prompts", help="How questions are put to the model: med-r1 (Med-R1's templates, for a real Qwen2-VL) or "
                          "tiny (the embedded demo model's layout). Default: train.prompts in params.yaml; outside a "
                          f"checkout, what the model folder records ({TASK_FILE}, written by training, or a "
                          "registered version's manifest), and without either this option is required.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Default: evaluate.batch_size.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens",
                                                       help="Default: evaluate.max_new_tokens.")] = None,
    device: Annotated[str | None, typer.Option("--device",
                                               help="auto, cpu or cuda (default: evaluate.device).")] = None,
    image_window: Annotated[int | None, typer.Option(
        "--image-window", help="Processed images held at once; memory stays flat in the split's size "
                               "(default: evaluate.image_window, else 256).")] = None,
    predictions: Annotated[Path | None, typer.Option("--predictions",
                                                     help="Write every graded completion here (JSONL).")] = None,
    store: Annotated[str | None, typer.Option("--store", help="Store URL for a registered version "
                                              "(default: register.store).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON instead of tables.")] = False,
) -> None:
    """Evaluate one model on one split: accuracy with its 95% interval, format rate, per modality,
    question type and source dataset, with the same decoding and grading as the evaluate stage.

    Settings not given as options come from params.yaml (evaluate, train.reasoning, train.prompts); outside the
    pipeline's checkout give --batch-size, --max-new-tokens and --device, and --reasoning and --prompts unless the
    model folder records the task it was trained on (training writes it)."""
    from medr1.data.records import read_jsonl
    from medr1.task.spec import evaluation_tasks

    given = {key: value for key, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens),
                                           ("device", device), ("image_window", image_window)) if value is not None}
    for option, value, allowed in (("--reasoning", reasoning, REASONING_MODES), ("--prompts", prompts, PROMPT_STYLES)):
        if value is not None and value not in allowed:
            raise PipelineError(f"{option} {value!r}: use one of {', '.join(allowed)}")
    params = load_params(PARAMS_FILE) if PARAMS_FILE.is_file() else None
    if params is not None:
        settings = params.evaluate.model_copy(update=given)
    else:
        missing = [f"--{key.replace('_', '-')}" for key in ("batch_size", "max_new_tokens", "device")
                   if key not in given]
        if missing:
            raise MissingFileError(f"no params.yaml here to take {', '.join(missing)} from: run in the pipeline's "
                                   "checkout, or give them")
        settings = EvaluateParams(**{**OUTSIDE_A_CHECKOUT, **given})
    if not data.is_file():
        raise MissingFileError(f"no split file {data}: `dvc repro ingest` writes data/processed/test.jsonl "
                               "and the per-group splits under data/processed/splits/")
    records = list(read_jsonl(data))
    if not records:
        raise PipelineError(f"{data} holds no records")
    root = images or images_root_of(data)
    with tempfile.TemporaryDirectory(prefix="medr1-evaluate-") as workdir:
        folder, manifest = resolve_model(model, store, Path(workdir))
        if params is not None:  # the stage's prompts and grading
            trained = evaluation_tasks(params)[0]
            task = replace(trained, mode=reasoning or trained.mode, prompts=prompts or trained.prompts)
        else:
            task = task_outside_a_checkout(folder, manifest, reasoning, prompts, settings.protocol)
        from medr1.evaluate.evaluation import predict, write_predictions  # torch: once nothing is left to refuse
        from medr1.evaluate.metrics import chance_accuracy, summarize
        from medr1.model.loading import load_for_evaluation

        loaded_model, processor = load_for_evaluation(folder, settings.device)
        graded = predict(loaded_model, processor, records, root, task, settings, desc=f"evaluate {model}")
    if predictions is not None:
        write_predictions(graded, predictions)
    summary = {"model": model, "data": str(data), "reasoning": task.mode, "prompts": task.prompts,
               "chance_accuracy": round(chance_accuracy(records), 4), **summarize(graded)}
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    low, high = summary["accuracy_ci95"]
    console.print(f"[bold]{model}[/bold] on {data} ({summary['count']} questions, {task.mode}, prompts "
                  f"{task.prompts}): accuracy "
                  f"[bold]{summary['accuracy']:.4f}[/bold] (95% CI {low:.4f}-{high:.4f}), chance "
                  f"{summary['chance_accuracy']:.4f}, format rate {summary['format_rate']}")
    for key, title in (("per_modality", "per modality"), ("per_question_type", "per question type"),
                       ("per_dataset", "per source dataset")):
        console.print(_table(title, summary[key]))
