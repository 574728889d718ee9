"""Med-R1's generalization study: GRPO and the SFT baseline trained on one modality (or question type),
each tested on every group.

One cell of the study trains a GRPO model and an SFT model on the train questions of one group, on
the same question budget, and evaluates both on the test questions of every group of the same family;
the cells together give the paper's cross-modality (8x8) and cross-task (5x5) matrices for each
method, which is how Med-R1 shows that RL generalizes where SFT memorizes.
"""

from __future__ import annotations

import math
from pathlib import Path

from medr1.config import Params
from medr1.data.records import Record, read_jsonl
from medr1.errors import PipelineError
from medr1.evaluate.evaluation import predict
from medr1.evaluate.metrics import grouped_accuracy
from medr1.model.loading import load_for_evaluation
from medr1.study.generalization import METHODS
from medr1.task.spec import evaluation_tasks
from medr1.train.grpo import train_grpo
from medr1.train.sft import train_sft

FAMILIES = {"modality": "modalities", "question_type": "question_types"}  # family -> its list in params.study


def group_split(data: Path, family: str, side: str, group: str) -> Path:
    path = data / "splits" / family / side / f"{group}.jsonl"
    if not path.is_file():
        raise PipelineError(f"no {side} questions for {family} {group!r} ({path} is missing): "
                            f"check study.{FAMILIES[family]} in params.yaml against the data")
    return path


def study_groups(params: Params, family: str) -> list[str]:
    if family not in FAMILIES:
        raise PipelineError(f"unknown study family {family!r}: use one of {', '.join(FAMILIES)}")
    return list(getattr(params.study, FAMILIES[family]))


def sft_steps(params: Params) -> int:
    """SFT steps that show the SFT model as many train questions as study.max_steps GRPO steps show
    the GRPO model (GRPO's prompts per step: its batch of completions over num_generations)."""
    grpo_questions = params.study.max_steps * params.train.per_device_train_batch_size \
        * params.train.gradient_accumulation_steps // params.train.num_generations
    return max(1, math.ceil(grpo_questions / params.sft.per_device_train_batch_size))


def train_cell(params: Params, family: str, group: str, base: Path, data: Path, out: Path) -> None:
    """GRPO with the train section's recipe for study.max_steps steps, and SFT with the sft section's on
    the same number of questions, both on one group's train questions: `out`/grpo and `out`/sft."""
    records = list(read_jsonl(group_split(data, family, "train", group)))
    train_grpo(base, records, data, params.train.model_copy(update={"max_steps": params.study.max_steps}), out / "grpo")
    train_sft(base, records, data, params.sft.model_copy(update={"max_steps": sft_steps(params)}), params.train,
              out / "sft")


def evaluate_cell(params: Params, family: str, cell_dir: Path, data: Path) -> dict:
    """Accuracy of the cell's GRPO and SFT models on every group's test questions, one batched pass each."""
    records: list[Record] = []
    for group in study_groups(params, family):
        records += list(read_jsonl(group_split(data, family, "test", group)))
    task = evaluation_tasks(params)[0]
    accuracy = {}
    for method in METHODS:
        model, processor = load_for_evaluation(cell_dir / method, params.evaluate.device)
        predictions = predict(model, processor, records, data, task, params.evaluate, desc=f"study {method}")
        accuracy[method] = grouped_accuracy(predictions, family)
        del model
    return {"accuracy": accuracy,
            "questions": {group: sum(getattr(r, family) == group for r in records)
                          for group in study_groups(params, family)}}
