"""Med-R1's rewards and grading as its published code has them, quirks included.

Source: github.com/Yuxiang-Lai117/Med-R1 at 88d76c7 (docs/fidelity.md gives file and line of each):
- rewards: `src/r1-v/src/open_r1/grpo_vqa.py` (think) and `grpo_vqa_nothink.py` (no-think);
- the SFT baseline's examples: `src/r1-v/src/open_r1/sft.py` (convert_example);
- grading: `src/eval_vqa/test_qwen2vl_vqa.py` (think), `test_qwen2vl_vqa_nothink.py` and
  `test_qwen2vl_vqa_zero_shot.py` (the raw output compared with the gold letter), and
  `test_qwen2_5vl_vqa_nothink.py` (the tag read when the output mentions "answer").

The quirks kept on purpose (our `strict` variants in rewards.py are the documented alternative):
the format pattern is matched lazily over the whole completion, so `<answer>A</answer> B </answer>`
is well formed; the accuracy reward first asks math_verify, then compares the text inside the
first `<answer>...</answer>` on one line, or the whole completion when there is no such tag; the
no-think and zero-shot scripts count an output correct only when it is exactly the letter.
"""

from __future__ import annotations

import re

# grpo_vqa.py format_reward / grpo_vqa_nothink.py format_reward
FORMAT_PATTERNS = {
    "think_before": r"<think>.*?</think>\s*<answer>.*?</answer>",
    "no_think": r"\s*<answer>.*?</answer>",
}
_TAGGED = re.compile(r"<answer>(.*?)</answer>")  # accuracy_reward: no DOTALL
_GRADED = re.compile(r"<answer>\s*(\w+)\s*</answer>")  # test_qwen2vl_vqa.py extract_option_answer


# sft.py convert_example: the system prompt of every example (Med-R1's split records carry no "system")
SFT_SYSTEM_PROMPT = ("Your task: Provide the correct single-letter choice (A, B, C, D,...) "
                     "inside <answer>...</answer> tags.")


def sft_messages(problem: str, solution: str, image, thinking: str | None = None) -> list[dict]:
    """sft.py convert_example: the system prompt, the problem text before its image, and the target
    f"{thinking}\\n\\n{solution}". Med-R1's split records have no `thinking`, so the published script's
    target starts with the text "None"; kept as published (docs/fidelity.md)."""
    return [
        {"role": "system", "content": [{"type": "text", "text": SFT_SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "text", "text": problem}, {"type": "image", "image": image}]},
        {"role": "assistant", "content": f"{thinking}\n\n{solution}"},
    ]


def solution_text(letter: str) -> str:
    """The gold answer as Med-R1's split files write it: `<answer> C </answer>`."""
    return f"<answer> {letter} </answer>"


def format_reward(content: str, mode: str) -> float:
    """1.0 when `re.fullmatch(pattern, content, re.DOTALL)`; think_after (no upstream code) uses
    the think pattern with its two parts swapped."""
    pattern = FORMAT_PATTERNS.get(mode) or r"<answer>.*?</answer>\s*<think>.*?</think>"
    return 1.0 if re.fullmatch(pattern, content, re.DOTALL) else 0.0


def _math_verified(content: str, solution: str) -> bool:
    from math_verify import parse, verify

    try:
        return float(verify(parse(content), parse(solution))) > 0
    except Exception:  # noqa: BLE001 - as upstream: any failure falls through to string matching
        return False


def accuracy_reward(content: str, solution: str) -> float:
    if _math_verified(content, solution):
        return 1.0
    solution_match = _TAGGED.search(solution)
    ground_truth = solution_match.group(1).strip() if solution_match else solution.strip()
    content_match = _TAGGED.search(content)
    student_answer = content_match.group(1).strip() if content_match else content.strip()
    return 1.0 if student_answer == ground_truth else 0.0


def extract_tagged(output: str) -> str | None:
    """test_qwen2vl_vqa.py's extract_option_answer: the word in the first `<answer> X </answer>`."""
    match = _GRADED.search(output)
    return match.group(1) if match else None


def reading(output: str, how: str) -> str:
    """How a script reads this output: "tagged" or "raw" ("tagged_if_mentioned" decided by the output)."""
    if how == "tagged_if_mentioned":
        return "tagged" if "answer" in output else "raw"
    if how in ("tagged", "raw"):
        return how
    raise ValueError(f"unknown grading {how!r}")


def graded_answer(output: str, how: str) -> str | None:
    """What an evaluation script compares with the gold letter.

    how: "tagged" (test_qwen2vl_vqa.py, think), "raw" (test_qwen2vl_vqa_nothink.py and
    _zero_shot.py: the output as it is), "tagged_if_mentioned" (test_qwen2_5vl_vqa_nothink.py).
    """
    return extract_tagged(output) if reading(output, how) == "tagged" else output
