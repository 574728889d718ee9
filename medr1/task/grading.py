"""Grading an evaluation output: what answer it gives, whether that is the gold letter, and
whether its layout is well formed, under a named protocol.

- `strict` (ours): the option letter in the first <answer> tag, tolerant of case and "(C)",
  restricted to the record's letters (medr1/task/rewards.py).
- `med-r1`: Med-R1's Qwen2-VL scripts. A think run reads `<answer>\\s*(\\w+)\\s*</answer>`;
  the no-think and the zero-shot runs compare the raw output with the letter.
- `med-r1-qwen2.5`: Med-R1's Qwen2.5-VL scripts: as `med-r1`, except that a no-think output
  mentioning "answer" is read through the tag.
Think-after has no upstream script: it is graded like a think run (through the tag).

An output is *readable* when the protocol's reading gives something that can be compared with a
letter: under `strict`, a letter of the record's options in the first answer tag; through Med-R1's
tag, a match of `<answer>\\s*(\\w+)\\s*</answer>`; in a raw comparison, the output is exactly one
of the record's option letters (Med-R1 compares it unstripped, so " C" could never count as C).
The share of unreadable outputs says whether an accuracy measures the answers or the format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from medr1.data.records import LETTERS
from medr1.task import published
from medr1.task.rewards import RewardVariant, accuracy_reward_of, extract_answer_letter, format_reward_of

Protocol = Literal["strict", "med-r1", "med-r1-qwen2.5"]
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)
# How each Med-R1 script reads an output, by the prompt it was asked with.
_MEDR1_READING = {
    "med-r1": {"think_before": "tagged", "think_after": "tagged", "no_think": "raw", "zero_shot": "raw"},
    "med-r1-qwen2.5": {"think_before": "tagged", "think_after": "tagged", "no_think": "tagged_if_mentioned",
                       "zero_shot": "raw"},
}


@dataclass(frozen=True)
class Grade:
    extracted: str | None  # what the protocol compares with the gold letter (None: nothing readable)
    correct: bool
    well_formed: bool | None  # the format reward of the run's reward variant; None for a zero-shot prompt
    readable: bool  # the protocol's reading gave something to compare with a letter (module docstring)


def grade_output(output: str, gold: str, letters: str, mode: str, protocol: Protocol = "strict",
                 rewards: RewardVariant = "strict") -> Grade:
    """`mode` is the reasoning layout the output was asked for, or "zero_shot"."""
    if protocol == "strict":
        extracted = extract_answer_letter(output, letters or None)
        readable = extracted is not None
    else:
        how = published.reading(output, _MEDR1_READING[protocol][mode])
        extracted = published.graded_answer(output, how)
        readable = extracted is not None if how == "tagged" else extracted in list(letters or LETTERS)
    well_formed = None if mode == "zero_shot" else format_reward_of(output, mode, rewards) == 1.0
    return Grade(extracted, extracted is not None and extracted == gold, well_formed, readable)


def gold_of(solution: str) -> str:
    """The gold letter of a solution as Med-R1's files write it (`<answer> C </answer>`), or a bare letter."""
    tagged = published.extract_tagged(solution)
    return tagged if tagged is not None else solution.strip()


def score(completion: str, solution: str, mode: str, rewards: RewardVariant, protocol: Protocol) -> dict:
    """Why a completion scored what it did: both rewards as training computes them (for a zero-shot
    prompt, none) and the evaluation's reading of it. `solution` is the gold answer as Med-R1's
    files write it; Med-R1's accuracy reward compares with that text itself."""
    gold = gold_of(solution)
    graded = grade_output(completion, gold, "", mode, protocol, rewards)
    if mode == "zero_shot":
        rewarded = {"format_reward": None, "accuracy_reward": None}
    else:  # Med-R1's accuracy reward reads the solution text as given, not rebuilt from the letter
        accuracy = (published.accuracy_reward(completion, solution) if rewards == "med-r1"
                    else accuracy_reward_of(completion, gold, rewards))
        rewarded = {"format_reward": format_reward_of(completion, mode, rewards), "accuracy_reward": accuracy}
    return {**rewarded, "extracted": graded.extracted, "correct": graded.correct}
