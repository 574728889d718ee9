"""Med-R1's generalization study: GRPO trained on one modality (or question type), tested on each.

One cell of the study is one GRPO model trained on the train questions of one group and
evaluated on the test questions of every group of the same family; the cells together give
the cross-modality (8x8) and cross-task (5x5) accuracy matrices of the paper.
"""

from __future__ import annotations

from pathlib import Path

from medr1.config import Params
from medr1.data.records import Record, read_jsonl
from medr1.errors import PipelineError
from medr1.evaluate.evaluation import predict
from medr1.evaluate.metrics import grouped_accuracy
from medr1.model.loading import load_for_evaluation
from medr1.task.spec import evaluation_tasks
from medr1.train.grpo import train_grpo

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


def train_cell(params: Params, family: str, group: str, base: Path, data: Path, out: Path) -> list[dict]:
    """GRPO with the train section's recipe, for study.max_steps steps, on one group's questions."""
    records = list(read_jsonl(group_split(data, family, "train", group)))
    settings = params.train.model_copy(update={"max_steps": params.study.max_steps})
    return train_grpo(base, records, data, settings, out)


def evaluate_cell(params: Params, family: str, model_dir: Path, data: Path) -> dict:
    """Accuracy of one model on every group's test questions, in one batched pass."""
    records: list[Record] = []
    for group in study_groups(params, family):
        records += list(read_jsonl(group_split(data, family, "test", group)))
    model, processor = load_for_evaluation(model_dir, params.evaluate.device)
    predictions = predict(model, processor, records, data, evaluation_tasks(params)[0], params.evaluate, desc="study")
    return {"accuracy": grouped_accuracy(predictions, family),
            "questions": {group: sum(getattr(r, family) == group for r in records)
                          for group in study_groups(params, family)}}
