"""Greedy decoding over a split and Med-R1's accuracy, overall and per modality and question type."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from medr1.encoding import ImageCache, encode, prompt_text
from medr1.prompts import ReasoningMode
from medr1.records import Record
from medr1.rewards import extract_answer_letter, format_score


@dataclass(frozen=True)
class Prediction:
    question_id: str
    modality: str
    question_type: str
    answer: str
    predicted: str | None
    completion: str
    well_formed: bool

    @property
    def correct(self) -> bool:
        return self.predicted == self.answer


@torch.no_grad()
def predict(
    model,
    processor,
    records: list[Record],
    image_root: Path,
    mode: ReasoningMode = "no_think",
    batch_size: int = 32,
    max_new_tokens: int = 16,
    cache: ImageCache | None = None,
    progress: bool = True,
    desc: str = "evaluate",
) -> list[Prediction]:
    """Greedy answers for every record, batched with left padding."""
    cache = cache or ImageCache(processor)
    model.eval()
    tokenizer = processor.tokenizer
    predictions: list[Prediction] = []
    for start in tqdm(range(0, len(records), batch_size), desc=desc, disable=not progress):
        chunk = records[start : start + batch_size]
        images = [cache.get(str(image_root / record.image)) for record in chunk]
        prompts = [prompt_text(processor, r.question, r.options, mode, image) for r, image in zip(chunk, images)]
        batch = encode(processor, prompts, images, padding_side="left")
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
        )
        completions = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for record, completion in zip(chunk, completions):
            predictions.append(
                Prediction(
                    question_id=record.question_id,
                    modality=record.modality,
                    question_type=record.question_type,
                    answer=record.answer,
                    predicted=extract_answer_letter(completion, "".join(record.options)),
                    completion=completion,
                    well_formed=format_score(completion, mode) == 1.0,
                )
            )
    return predictions


def accuracy(predictions: list[Prediction]) -> float:
    return sum(p.correct for p in predictions) / len(predictions) if predictions else 0.0


def chance_accuracy(records: list[Record]) -> float:
    return sum(1 / len(r.options) for r in records) / len(records) if records else 0.0


def grouped_accuracy(predictions: list[Prediction], key: str) -> dict[str, float]:
    groups: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        groups[getattr(prediction, key)].append(prediction)
    return {name: round(accuracy(group), 4) for name, group in sorted(groups.items())}


def summarize(predictions: list[Prediction]) -> dict:
    return {
        "accuracy": round(accuracy(predictions), 4),
        "format_rate": round(sum(p.well_formed for p in predictions) / max(len(predictions), 1), 4),
        "per_modality": grouped_accuracy(predictions, "modality"),
        "per_question_type": grouped_accuracy(predictions, "question_type"),
        "count": len(predictions),
    }


def evaluate_models(
    models: dict[str, Path],
    split: Path,
    image_root: Path,
    mode: ReasoningMode,
    settings,
    predictions_dir: Path | None = None,
) -> dict:
    """Evaluate each named model on one split; images are processed once and shared.

    Returns metrics/eval.json's content: the "grpo" model's numbers at the top level, every
    other model's under its name as a prefix (base_accuracy, base_per_modality, ...).
    """
    import json

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medr1.records import read_jsonl

    records = list(read_jsonl(split))
    caches: dict[str, ImageCache] = {}
    metrics: dict = {"chance_accuracy": round(chance_accuracy(records), 4), "split": str(split)}
    for name, folder in models.items():
        processor = AutoProcessor.from_pretrained(folder)
        model = AutoModelForImageTextToText.from_pretrained(folder)
        key = processor.image_processor.to_json_string()
        cache = caches.setdefault(key, ImageCache(processor))
        predictions = predict(
            model, processor, records, image_root, mode, settings.batch_size, settings.max_new_tokens, cache, desc=name
        )
        summary = summarize(predictions)
        prefix = "" if name == "grpo" else f"{name}_"
        metrics.update({f"{prefix}{key_}": value for key_, value in summary.items()})
        if predictions_dir is not None:
            predictions_dir.mkdir(parents=True, exist_ok=True)
            with (predictions_dir / f"{name}.jsonl").open("w") as stream:
                for prediction in predictions:
                    stream.write(json.dumps(prediction.__dict__) + "\n")
    return metrics
