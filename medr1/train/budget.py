"""How many questions a GRPO or an SFT configuration trains on: per optimizer step, per epoch. The one
reckoning that the study's cells (equal budgets for both methods), the report and `medr1 plan` use.

GRPO (TRL 1.x): an optimizer step's loss covers per_device_train_batch_size completions on each process,
gradient_accumulation_steps times, num_generations completions to a question. SFT: per_device_train_batch_size
questions on each process, gradient_accumulation_steps times. Each setting is the section's trl value, else
TRL's default (`trl_settings`). The processes are train.launcher's (`launch_of(...).processes`), or one for a
study cell.
"""

from __future__ import annotations

import math

from medr1.config import SftParams, TrainParams
from medr1.train.trl_config import trl_settings


def questions_per_step(section: TrainParams | SftParams, processes: int) -> float:
    """Questions one optimizer step trains on: of a GRPO configuration (the train section: completions per
    step / num_generations) or of an SFT one (the sft section), run on `processes` processes."""
    settings = trl_settings(section)
    per_step = settings.per_device_train_batch_size * processes * settings.gradient_accumulation_steps
    return per_step / settings.num_generations if isinstance(section, TrainParams) else per_step


def generation_questions(train: TrainParams, processes: int) -> int:
    """Questions of one GRPO generation batch. TRL's RepeatSampler yields whole generation batches only, so an
    epoch leaves out the train questions that do not fill one."""
    settings = trl_settings(train)
    return settings.per_device_train_batch_size * processes * steps_per_generation(train) // settings.num_generations


def steps_per_epoch(section: TrainParams | SftParams, processes: int, questions: int) -> int:
    """Optimizer steps of one epoch over `questions` train questions, as the Trainer counts them."""
    settings = trl_settings(section)
    if isinstance(section, TrainParams):
        # each generation batch gives num_iterations x steps_per_generation dataloader batches
        return math.ceil(questions // generation_questions(section, processes) * settings.num_iterations
                         * steps_per_generation(section) / settings.gradient_accumulation_steps)
    batches = math.ceil(questions / (settings.per_device_train_batch_size * processes))  # the last one partial
    return math.ceil(batches / settings.gradient_accumulation_steps)


def steps_per_generation(train: TrainParams) -> int:
    """Micro-batches generated at once (TRL's steps_per_generation, by default the accumulation)."""
    settings = trl_settings(train)
    return int(settings.steps_per_generation or settings.gradient_accumulation_steps)
