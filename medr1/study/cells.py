"""Med-R1's generalization study: a model trained on one modality (or question type) by one method, GRPO
or the SFT baseline, and tested on every group.

A cell (DVC stage study_<family>_<method>@<group>) trains one model on the train questions of one group
and evaluates it on the test questions of every group of the same family. A group's GRPO and SFT cells
train on the same questions and the same question budget (medr1/train/budget.py): study.max_steps GRPO
steps and SFT steps on as many questions, or study.num_train_epochs epochs of both. The cells together
give the paper's cross-modality (8x8) and cross-task (5x5) matrices for each method, which is how Med-R1
shows that RL generalizes where SFT memorizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from medr1.config import Params, SftParams, TrainParams
from medr1.data.records import Record, read_jsonl
from medr1.data.splits import group_split
from medr1.errors import PipelineError
from medr1.evaluate.evaluation import predict
from medr1.evaluate.metrics import UNREADABLE_FLAG_SHARE, grouped_accuracy, unreadable_share
from medr1.model.loading import load_for_evaluation
from medr1.study.generalization import FAMILIES, METHODS
from medr1.task.spec import evaluation_tasks
from medr1.train.budget import generation_questions, questions_per_step, steps_per_epoch
from medr1.train.grpo import train_grpo
from medr1.train.launch_plan import launch_of
from medr1.train.sft import train_sft
from medr1.train.trl_config import trl_settings

CELL_PROCESSES = 1  # dvc.yaml runs a cell as one process (`python -m stages.study`): one GPU, or the CPU


@dataclass(frozen=True)
class Budget:
    """What one cell's model trains on."""

    questions_per_step: float
    steps: int
    questions: int  # by steps: steps x questions_per_step; by epochs: epochs x the group's train questions
    epochs: int | None  # None: by steps (study.max_steps)


def study_groups(params: Params, family: str) -> list[str]:
    if family not in FAMILIES:
        raise PipelineError(f"unknown study family {family!r}: use one of {', '.join(FAMILIES)}")
    return list(getattr(params.study, FAMILIES[family]))


def by_epochs(params: Params) -> bool:
    return params.study.max_steps == -1


def one_process(params: Params, method: str) -> TrainParams | SftParams:
    """The train (GRPO) or sft section as one process runs it with the optimizer step of the recipe's launcher:
    a cell is one process, so it accumulates as many micro-batches more as the launcher has processes (Med-R1's
    2 GPUs x 2 micro-batches of a GRPO step are 4 micro-batches here), and each optimizer step sees the
    questions it sees under `train.launcher` (`sft.launcher` for SFT)."""
    section = params.train if method == "grpo" else params.sft
    processes = launch_of(params.launcher_of("train" if method == "grpo" else "sft")).processes
    if processes == CELL_PROCESSES:
        return section
    trl = dict(section.trl)
    trl["gradient_accumulation_steps"] = trl_settings(section).gradient_accumulation_steps * processes
    if isinstance(section, TrainParams) and trl.get("steps_per_generation"):
        trl["steps_per_generation"] = trl["steps_per_generation"] * processes
    return section.model_copy(update={"trl": trl})


def sft_steps(params: Params) -> int:
    """SFT steps that show the SFT model as many train questions as study.max_steps GRPO steps show the
    GRPO model (each method's questions per optimizer step from medr1/train/budget.py)."""
    grpo_questions = params.study.max_steps * questions_per_step(one_process(params, "grpo"), CELL_PROCESSES)
    return max(1, math.ceil(grpo_questions / questions_per_step(one_process(params, "sft"), CELL_PROCESSES)))


def cell_settings(params: Params, method: str) -> TrainParams | SftParams:
    """The train (GRPO) or sft section a cell of `method` trains with: the recipe's on one process
    (`one_process`), for the study's steps or epochs."""
    section = one_process(params, method)
    if by_epochs(params):
        return section.model_copy(update={
            "trl": {**section.trl, "max_steps": -1, "num_train_epochs": params.study.num_train_epochs}})
    steps = params.study.max_steps if method == "grpo" else sft_steps(params)
    return section.model_copy(update={"trl": {**section.trl, "max_steps": steps}})


def cell_records(params: Params, family: str, group: str, data: Path) -> list[Record]:
    """A group's train questions, as both of its cells train on them. By epochs, whole GRPO generation batches
    only: TRL's GRPO sampler leaves out the questions that do not fill one, and SFT then sees the same ones."""
    records = list(read_jsonl(group_split(data, family, "train", group, f"study.{FAMILIES[family]}")))
    if not by_epochs(params):
        return records
    batch = generation_questions(one_process(params, "grpo"), CELL_PROCESSES)
    if len(records) < batch:
        raise PipelineError(f"{family} {group!r} has {len(records)} train questions, fewer than one GRPO generation "
                            f"batch of {batch}: lower train.trl.per_device_train_batch_size or leave {group} out of "
                            f"study.{FAMILIES[family]}")
    return records[:len(records) - len(records) % batch]


def cell_budget(params: Params, method: str, questions: int) -> Budget:
    """The questions per step, steps and questions of a `method` cell whose group has `questions` train
    questions (as cell_records gives them)."""
    settings = cell_settings(params, method)
    per_step = questions_per_step(settings, CELL_PROCESSES)
    steps = settings.trl["max_steps"]
    if steps != -1:
        return Budget(per_step, steps, round(steps * per_step), None)
    epochs = params.study.num_train_epochs
    return Budget(per_step, steps_per_epoch(settings, CELL_PROCESSES, questions) * epochs, questions * epochs, epochs)


def train_cell(params: Params, family: str, group: str, method: str, base: Path, data: Path, out: Path) -> Budget:
    """One model, GRPO with the train section's recipe or SFT with the sft section's, on one group's train
    questions, saved in `out`; its budget."""
    if method not in METHODS:
        raise PipelineError(f"unknown study method {method!r}: use one of {', '.join(METHODS)}")
    records = cell_records(params, family, group, data)
    settings = cell_settings(params, method)
    if method == "grpo":
        train_grpo(base, records, data, settings, out)
    else:
        train_sft(base, records, data, settings, params.train, out)
    return cell_budget(params, method, len(records))


def answers_by_group(predictions, family: str) -> dict[str, dict]:
    """Each tested-on group's questions and whether the cell's model answered each right, compactly:
    {group: {"question_ids": [...], "correct": "0110..."}} ("1": right), in test-split order. What the
    report pairs with the base model's answers to the same questions (medr1/study/generalization.py)."""
    groups: dict[str, dict] = {}
    for prediction in predictions:
        group = groups.setdefault(getattr(prediction, family), {"question_ids": [], "correct": ""})
        group["question_ids"].append(prediction.question_id)
        group["correct"] += "1" if prediction.correct else "0"
    return groups


def evaluate_cell(params: Params, family: str, model_dir: Path, data: Path, method: str) -> dict:
    """Accuracy of a cell's model on every group's test questions, in one batched pass, and its answer
    to each question (`answers_by_group`)."""
    records: list[Record] = []
    for group in study_groups(params, family):
        records += list(read_jsonl(group_split(data, family, "test", group, f"study.{FAMILIES[family]}")))
    model, processor = load_for_evaluation(model_dir, params.evaluate.device)
    predictions = predict(model, processor, records, data, evaluation_tasks(params)[0], params.evaluate,
                          desc=f"study {method}")
    unreadable = unreadable_share(predictions)
    return {"accuracy": grouped_accuracy(predictions, family),
            "unreadable_share": unreadable, "mostly_unreadable": unreadable >= UNREADABLE_FLAG_SHARE,
            "questions": {group: sum(getattr(r, family) == group for r in records)
                          for group in study_groups(params, family)},
            "answers": answers_by_group(predictions, family)}
