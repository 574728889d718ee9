"""Prompt templates for Med-R1's reasoning modes, and the chat messages built from a record."""

from __future__ import annotations

from typing import Literal, get_args

ReasoningMode = Literal["think_before", "no_think", "think_after"]
REASONING_MODES: tuple[ReasoningMode, ...] = get_args(ReasoningMode)

INSTRUCTIONS: dict[str, str] = {
    # Med-R1's "think" prompt: reasoning first, then the answer.
    "think_before": "Output the thinking process in <think> </think> and final answer (option) "
                    "in <answer> </answer> tags.",
    "no_think": "Output the final answer (option) in <answer> </answer> tags.",
    # Med-R1's think-after finding: answer first, rationale after.
    "think_after": "Output the final answer (option) in <answer> </answer> tags first, "
                   "then a short rationale in <think> </think> tags.",
}


def problem_text(question: str, options: dict[str, str]) -> str:
    """The question with its options inline: "What modality? CT(A), MRI(B), OCT(C)".

    Med-R1's split files write "A)CT, B)MRI"; we put each letter right after its option's
    text so that the letter's token comes two tokens after the text's last token, which the
    tiny model's option reader relies on (medr1/option_reader.py). Real models read either.
    """
    listed = ", ".join(f"{text}({letter})" for letter, text in options.items())
    return f"{question} {listed}".rstrip()


def user_prompt(question: str, options: dict[str, str], mode: ReasoningMode = "no_think") -> str:
    return f"{problem_text(question, options)}\n{INSTRUCTIONS[mode]}"


def chat_prompt(question: str, options: dict[str, str], mode: ReasoningMode = "no_think") -> list[dict]:
    """Conversational prompt with one image placeholder, as TRL and the Qwen2-VL chat template expect."""
    return image_question_messages(user_prompt(question, options, mode))


def image_question_messages(text: str) -> list[dict]:
    """One user turn: an image placeholder, then `text`."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def target_completion(answer: str, mode: ReasoningMode = "no_think", rationale: str = "") -> str:
    """A well-formed completion for the given answer letter (used by warm-up and SFT)."""
    if mode == "think_before":
        return f"<think>{rationale}</think><answer>{answer}</answer>"
    if mode == "think_after":
        return f"<answer>{answer}</answer><think>{rationale}</think>"
    return f"<answer>{answer}</answer>"
