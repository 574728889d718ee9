"""The rule-based rewards, by name and variant, and the answer extractor of the `strict` grading.

Two variants of each reward: `med-r1`, Med-R1's published functions (medr1/task/published.py,
quirks included), and `strict`, ours: one tag layout, no repeated or nested tags, so that
repeating a tag cannot earn the format reward (docs/fidelity.md). Each reward is a pure
function of a completion and its gold answer; `reward_functions` adapts them to TRL's
reward-function signature.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from medr1.data.records import LETTERS
from medr1.task import published
from medr1.task.prompts import ReasoningMode

RewardVariant = Literal["strict", "med-r1"]
REWARD_VARIANTS: tuple[RewardVariant, ...] = get_args(RewardVariant)
REWARD_NAMES = ("format", "accuracy")

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_LETTER = re.compile(r"^\(?([A-Fa-f])(?:\)|\.|:|\s|$)")

_FORMATS: dict[str, re.Pattern] = {
    "think_before": re.compile(r"^\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*"
                               r"<answer>(?:(?!</?answer>).)*</answer>\s*$", re.DOTALL),
    "no_think": re.compile(r"^\s*<answer>(?:(?!</?answer>|</?think>).)*</answer>\s*$", re.DOTALL),
    "think_after": re.compile(r"^\s*<answer>(?:(?!</?answer>).)*</answer>\s*"
                              r"<think>(?:(?!</?think>|</?answer>).)*</think>\s*$", re.DOTALL),
}


def extract_answer_letter(completion: str, valid_letters: str | None = None) -> str | None:
    """The option letter inside the first <answer> tag, or None.

    Tolerates surrounding whitespace, lower case, "C)", "(C)", "C." and "C) CT"; a letter
    outside `valid_letters` (when given) counts as no answer.
    """
    match = _ANSWER_TAG.search(completion)
    if match is None:
        return None
    letter_match = _LETTER.match(match.group(1).strip())
    if letter_match is None:
        return None
    letter = letter_match.group(1).upper()
    allowed = valid_letters if valid_letters is not None else "".join(LETTERS)
    return letter if letter in allowed else None


def _graded_end(completion: str, mode: ReasoningMode) -> int | None:
    """Where the graded part ends: after the first closed answer tag (for think_after, after the
    rationale that follows it); None while that part is still open."""
    match = _ANSWER_TAG.search(completion)
    if match is None:
        return None
    if mode != "think_after":
        return match.end()
    close = completion.find("</think>", match.end())
    return None if close < 0 else close + len("</think>")


def verdict_settled(completion: str, mode: ReasoningMode = "no_think") -> bool:
    """True when no further token can change the extracted answer or the format verdict.

    That is when the graded part is closed and text other than whitespace follows it: the
    format has then failed for good. A well-formed completion ends with the end-of-turn token
    instead, which stops generation by itself. Evaluation stops a row here, so a rambling
    model costs a few tokens, not max_new_tokens, and the metrics equal a full generation's.
    """
    end = _graded_end(completion, mode)
    return end is not None and completion[end:].strip() != ""


def format_score(completion: str, mode: ReasoningMode = "no_think") -> float:
    """1.0 when the completion follows the mode's tag layout exactly, else 0.0."""
    return 1.0 if _FORMATS[mode].match(completion) else 0.0


def accuracy_score(completion: str, answer: str, valid_letters: str | None = None) -> float:
    """1.0 when the extracted letter equals the gold letter, else 0.0."""
    return 1.0 if extract_answer_letter(completion, valid_letters) == answer.strip().upper() else 0.0


def _text(completion) -> str:
    # TRL passes conversational completions as [{"role": "assistant", "content": "..."}].
    if isinstance(completion, list):
        return "".join(message["content"] if isinstance(message["content"], str) else "" for message in completion)
    return completion


def format_reward_of(completion: str, mode: ReasoningMode, variant: RewardVariant) -> float:
    return published.format_reward(completion, mode) if variant == "med-r1" else format_score(completion, mode)


def accuracy_reward_of(completion: str, answer: str, variant: RewardVariant, valid_letters: str | None = None) -> float:
    """`answer` is the gold letter; Med-R1's variant compares with its solution text `<answer> C </answer>`."""
    if variant == "med-r1":
        return published.accuracy_reward(completion, published.solution_text(answer))
    return accuracy_score(completion, answer, valid_letters)


def reward_functions(names: list[str], variant: RewardVariant, mode: ReasoningMode) -> list:
    """TRL reward functions, in `names` order (open-r1's `reward_funcs`); TRL logs each under its
    name, rewards/<name>_reward/mean."""
    unknown = [name for name in names if name not in REWARD_NAMES]
    if unknown:
        raise ValueError(f"unknown reward {unknown}: choose from {', '.join(REWARD_NAMES)}")

    def format_reward(completions, **kwargs) -> list[float]:
        return [format_reward_of(_text(completion), mode, variant) for completion in completions]

    def accuracy_reward(completions, answer, letters=None, **kwargs) -> list[float]:
        letters = letters or [None] * len(completions)
        return [accuracy_reward_of(_text(completion), gold, variant, valid)
                for completion, gold, valid in zip(completions, answer, letters, strict=True)]

    chosen = {"format": format_reward, "accuracy": accuracy_reward}
    return [chosen[name] for name in names]
