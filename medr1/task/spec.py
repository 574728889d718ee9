"""What a question is asked as and how its answer is judged, in one value that training,
evaluation and `medr1 score` share: reasoning layout, prompt style, purpose, reward variant and
grading protocol (params: train.reasoning, train.prompts, train.rewards, evaluate.protocol,
evaluate.base_prompt)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from medr1.task.grading import Grade, Protocol, grade_output
from medr1.task.prompts import PromptStyle, Purpose, ReasoningMode, chat_prompt, user_prompt
from medr1.task.rewards import RewardVariant, verdict_settled


@dataclass(frozen=True)
class TaskSpec:
    mode: ReasoningMode
    prompts: PromptStyle  # no default: a real model asked in the tiny demo's layout answers worse, silently
    purpose: Purpose = "evaluate"
    rewards: RewardVariant = "strict"
    protocol: Protocol = "strict"

    def user_text(self, question: str, options: dict[str, str]) -> str:
        return user_prompt(question, options, self.mode, self.prompts, self.purpose)

    def messages(self, question: str, options: dict[str, str]) -> list[dict]:
        return chat_prompt(question, options, self.mode, self.prompts, self.purpose)

    def grade(self, output: str, gold: str, letters: str) -> Grade:
        graded_as = "zero_shot" if self.purpose == "zero_shot" else self.mode
        return grade_output(output, gold, letters, graded_as, self.protocol, self.rewards)

    @property
    def published_images(self) -> bool:
        """True when images go through Med-R1's image loader before the processor, as its evaluation
        scripts do (under Med-R1's grading protocols); under `strict`, the processor alone resizes them."""
        return self.protocol != "strict"

    def settled(self, output: str) -> bool:
        """True when more tokens cannot change the grade or the format verdict, so decoding may stop.
        Only the strict rules can say so early: under Med-R1's, a later `</answer>` can still make an
        output well formed (its lazy pattern) and a raw comparison reads the output to its end."""
        strict = self.protocol == "strict" and self.rewards == "strict" and self.purpose != "zero_shot"
        return strict and verdict_settled(output, self.mode)


def training_task(train) -> TaskSpec:
    """The task a model trains on, from params.yaml's train section (its prompts as the train purpose gives them)."""
    return TaskSpec(train.reasoning, train.prompts, "train", train.rewards)


def evaluation_tasks(params) -> tuple[TaskSpec, TaskSpec]:
    """The trained models' task and the base model's (Med-R1's zero-shot prompt when
    evaluate.base_prompt is zero_shot), from params.yaml."""
    trained = TaskSpec(params.train.reasoning, params.train.prompts, "evaluate", params.train.rewards,
                       params.evaluate.protocol)
    zero_shot = params.evaluate.base_prompt == "zero_shot"
    return trained, replace(trained, purpose="zero_shot") if zero_shot else trained

