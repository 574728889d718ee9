"""`medr1 score`: why a completion scored what it did, one JSON line in, one out."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from medr1.errors import DataError
from medr1.task.grading import PROTOCOLS, score
from medr1.task.prompts import REASONING_MODES
from medr1.task.rewards import REWARD_VARIANTS


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{value!r}: choose from {', '.join(allowed)}", param_hint=option)
    return value


def score_command(
    rewards: Annotated[str, typer.Option(help=f"Reward variant: {', '.join(REWARD_VARIANTS)}.")] = "med-r1",
    reasoning: Annotated[str, typer.Option(
        help=f"The layout the completion was asked for: {', '.join(REASONING_MODES)}, or zero_shot "
             "(Med-R1's base-model prompt: graded, not rewarded).")] = "think_before",
    protocol: Annotated[str, typer.Option(help=f"Grading protocol: {', '.join(PROTOCOLS)}.")] = "med-r1",
) -> None:
    """Score completions read from stdin, one JSON object per line:
    {"completion": "<think>...</think><answer>C</answer>", "solution": "<answer> C </answer>"}.

    Writes one JSON line per input: format_reward and accuracy_reward as GRPO training computes
    them under --rewards, and the evaluation's `extracted` answer and `correct` verdict under
    --protocol. The solution is written as Med-R1's split files have it (a bare letter works too).
    """
    _choice(rewards, REWARD_VARIANTS, "--rewards")
    _choice(reasoning, (*REASONING_MODES, "zero_shot"), "--reasoning")
    _choice(protocol, PROTOCOLS, "--protocol")
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"stdin line {number} is not JSON ({error.msg}): {line.strip()[:80]}") from error
        if not isinstance(item, dict) or not all(isinstance(item.get(key), str) for key in ("completion", "solution")):
            raise DataError(f'stdin line {number} needs string fields "completion" and "solution": '
                            f"{line.strip()[:80]}")
        scored = score(item["completion"], item["solution"], reasoning, rewards, protocol)
        print(json.dumps(scored), flush=True)
