"""Med-R1's rule-based rewards and the one answer extractor that evaluation shares.

Each reward is a pure function of a completion (and the gold letter); the `*_reward`
wrappers adapt them to TRL's reward-function signature.
"""

from __future__ import annotations

import re

from medr1.data.records import LETTERS
from medr1.task.prompts import ReasoningMode

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


def make_format_reward(mode: ReasoningMode):
    def format_reward(completions, **kwargs) -> list[float]:
        return [format_score(_text(completion), mode) for completion in completions]

    return format_reward


def accuracy_reward(completions, answer, letters=None, **kwargs) -> list[float]:
    letters = letters or [None] * len(completions)
    return [
        accuracy_score(_text(completion), gold, valid)
        for completion, gold, valid in zip(completions, answer, letters, strict=True)
    ]
