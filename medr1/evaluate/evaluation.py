"""Evaluating models on a split: load each, decode, grade, summarize; images processed once."""

from __future__ import annotations

import json
from pathlib import Path

from medr1.data.records import Record, family_of, read_jsonl
from medr1.evaluate.decoding import evaluation_images, generate_completions, image_loader
from medr1.evaluate.metrics import (
    Prediction,
    chance_accuracy,
    gain_over_base,
    grade,
    summarize,
    training_group_accuracy,
)
from medr1.evaluate.paired import compare_predictions
from medr1.model.encoding import ImageCache
from medr1.model.loading import load_for_evaluation
from medr1.task.spec import TaskSpec


def predict(model, processor, records: list[Record], image_root: Path, task: TaskSpec, settings,
            cache: ImageCache | None = None, progress: bool = True, desc: str = "evaluate") -> list[Prediction]:
    cache = cache if cache is not None else evaluation_images(processor, task, settings.image_window)
    completions = generate_completions(model, processor, records, image_root, task, settings.batch_size,
                                       settings.max_new_tokens, cache, progress, desc)
    return [grade(record, completion, task) for record, completion in zip(records, completions)]


def write_predictions(predictions: list[Prediction], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as stream:
        for prediction in predictions:
            stream.write(json.dumps(prediction.__dict__) + "\n")


def paired_comparisons(graded: dict[str, list[Prediction]]) -> dict:
    """Each model against "base" question by question (paired_gain_over_base for grpo,
    sft_paired_gain_over_base, ...) and GRPO against SFT (paired_grpo_vs_sft): paired.compare_predictions,
    overall, per modality and per question type, each difference with its paired interval."""
    comparisons = {f"{'' if name == 'grpo' else f'{name}_'}paired_gain_over_base":
                   compare_predictions(predictions, graded["base"])
                   for name, predictions in graded.items() if name != "base" and "base" in graded}
    if "grpo" in graded and "sft" in graded:
        comparisons["paired_grpo_vs_sft"] = compare_predictions(graded["grpo"], graded["sft"])
    return comparisons


def evaluate_models(
    models: dict[str, Path],
    split: Path,
    image_root: Path,
    task: TaskSpec,
    settings,
    predictions_dir: Path | None = None,
    progress: bool = True,
    base_task: TaskSpec | None = None,
    trained_on: str | None = None,
) -> dict:
    """Evaluate each named model on one split; processed images are shared (evaluate.image_window
    of them at most: a split with more images is processed again for each model).

    Returns metrics/eval.json's content: the "grpo" model's numbers at the top level, every
    other model's under its name as a prefix (base_accuracy, base_per_modality, ...), and
    each model's gain over "base" (gain_over_base for grpo, sft_gain_over_base, ...) and the same gain
    question by question with its paired interval (paired_gain_over_base, sft_paired_gain_over_base, ...:
    medr1/evaluate/paired.py, overall, per modality and per question type), GRPO against SFT likewise
    (paired_grpo_vs_sft); with each
    model, the share of its outputs the protocol could not read (unreadable_share) and
    mostly_unreadable when that share reaches metrics.UNREADABLE_FLAG_SHARE. The model
    named "base" is asked as `base_task` says when given (Med-R1's zero-shot prompt). With `trained_on` (the
    models' train.group), each model's accuracy inside that group and over the others is added.
    """
    records = list(read_jsonl(split))
    caches: dict[tuple, ImageCache] = {}
    group = None if trained_on is None else {"group": trained_on, "family": family_of(trained_on)}
    metrics: dict = {"chance_accuracy": round(chance_accuracy(records), 4), "split": str(split),
                     "protocol": task.protocol, "trained_on": group}
    summaries: dict[str, dict] = {}
    graded: dict[str, list[Prediction]] = {}
    for name, folder in models.items():
        model, processor = load_for_evaluation(folder, settings.device)
        asked = base_task if name == "base" and base_task is not None else task
        cache = caches.setdefault((processor.image_processor.to_json_string(), image_loader(asked)),
                                  evaluation_images(processor, asked, settings.image_window))  # shared in the window
        predictions = predict(model, processor, records, image_root, asked, settings, cache, progress, desc=name)
        summaries[name] = summarize(predictions)
        graded[name] = predictions
        if trained_on is not None:
            summaries[name].update(training_group_accuracy(predictions, trained_on))
        if predictions_dir is not None:
            write_predictions(predictions, predictions_dir / f"{name}.jsonl")
        del model  # one model on the device at a time
    for name, summary in summaries.items():
        prefix = "" if name == "grpo" else f"{name}_"
        metrics.update({f"{prefix}{key}": value for key, value in summary.items()})
        if name != "base" and "base" in summaries:
            metrics[f"{prefix}gain_over_base"] = gain_over_base(summary, summaries["base"])
    return {**metrics, **paired_comparisons(graded)}
