"""How many questions a GRPO or an SFT configuration trains on: per optimizer step, per epoch. The one
reckoning that the study's cells (equal budgets for both methods), the report and `medr1 plan` use.

GRPO (TRL 1.x): an optimizer step's loss covers per_device_train_batch_size completions on each process,
gradient_accumulation_steps times, num_generations completions to a question. SFT: per_device_train_batch_size
questions on each process, sft.trl.gradient_accumulation_steps times (TrainingArguments' default: 1).
The processes are train.launcher's (`launch_of(...).processes`), or one for a study cell.
"""

from __future__ import annotations

import math

from medr1.config import SftParams, TrainParams


def accumulation(section: TrainParams | SftParams) -> int:
    """Micro-batches per optimizer step: train.gradient_accumulation_steps, or sft.trl's (default 1)."""
    if isinstance(section, TrainParams):
        return section.gradient_accumulation_steps
    return int(section.trl.get("gradient_accumulation_steps", 1))


def questions_per_step(section: TrainParams | SftParams, processes: int) -> float:
    """Questions one optimizer step trains on: of a GRPO configuration (the train section: completions per
    step / num_generations) or of an SFT one (the sft section), run on `processes` processes."""
    per_step = section.per_device_train_batch_size * processes * accumulation(section)
    return per_step / section.num_generations if isinstance(section, TrainParams) else per_step


def generation_questions(train: TrainParams, processes: int) -> int:
    """Questions of one GRPO generation batch. TRL's RepeatSampler yields whole generation batches only, so an
    epoch leaves out the train questions that do not fill one."""
    return train.per_device_train_batch_size * processes * steps_per_generation(train) // train.num_generations


def steps_per_epoch(section: TrainParams | SftParams, processes: int, questions: int) -> int:
    """Optimizer steps of one epoch over `questions` train questions, as the Trainer counts them."""
    if isinstance(section, TrainParams):
        # each generation batch gives num_iterations x steps_per_generation dataloader batches
        return math.ceil(questions // generation_questions(section, processes) * section.num_iterations
                         * steps_per_generation(section) / section.gradient_accumulation_steps)
    batches = math.ceil(questions / (section.per_device_train_batch_size * processes))  # the last one partial
    return math.ceil(batches / accumulation(section))


def steps_per_generation(train: TrainParams) -> int:
    """Micro-batches generated at once (TRL's steps_per_generation, by default the accumulation)."""
    return int(train.trl.get("steps_per_generation") or train.gradient_accumulation_steps)
