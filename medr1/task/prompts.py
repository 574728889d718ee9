"""Prompt templates for Med-R1's reasoning modes, and the chat messages built from a record."""

from __future__ import annotations

from typing import Literal, get_args

ReasoningMode = Literal["think_before", "no_think", "think_after"]
REASONING_MODES: tuple[ReasoningMode, ...] = get_args(ReasoningMode)
PromptStyle = Literal["tiny", "med-r1"]
PROMPT_STYLES: tuple[PromptStyle, ...] = get_args(PromptStyle)
Purpose = Literal["train", "evaluate", "zero_shot"]

# Med-R1's templates, verbatim (github.com/Yuxiang-Lai117/Med-R1 at 88d76c7; docs/fidelity.md).
MEDR1_TEMPLATES: dict[tuple[str, str], str] = {
    # src/r1-v/src/open_r1/grpo_vqa.py and grpo_vqa_nothink.py: QUESTION_TEMPLATE
    ("train", "think_before"): "{Question} Your task: 1. Think through the question step by step, enclose your "
                               "reasoning process in <think>...</think> tags. 2. Then provide the correct "
                               "single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags. "
                               "3. No extra information or "
                               "text outside of these tags.",
    ("train", "no_think"): "{Question} Your task: 1. Provide the correct single-letter choice (A, B, C, D,...) inside "
                           "<answer>...</answer> tags. 2. No extra information or text outside of this tag.",
    # src/eval_vqa/test_qwen2vl_vqa.py, test_qwen2vl_vqa_nothink.py, test_qwen2vl_vqa_zero_shot.py
    ("evaluate", "think_before"): "{Question} Think through the question step by step in <think>...</think> tags. "
                                  "Then provide the correct single-letter choice (A, B, C, D,...) inside "
                                  "<answer>...</answer> tags.",
    ("evaluate", "no_think"): "{Question} Provide the correct single-letter choice (A, B, C, D,...) inside "
                              "<answer>...</answer> tags.",
    ("zero_shot", "any"): "{Question} Provide the correct single-letter choice (A, B, C, D,...).",
    # Think-after has no upstream code (the paper's text only): these two are ours, in Med-R1's wording.
    ("train", "think_after"): "{Question} Your task: 1. Provide the correct single-letter choice (A, B, C, D,...) "
                              "inside <answer>...</answer> tags. 2. Then explain your reasoning step by step, "
                              "enclosed in <think>...</think> tags. 3. No extra information or text outside of "
                              "these tags.",
    ("evaluate", "think_after"): "{Question} Provide the correct single-letter choice (A, B, C, D,...) inside "
                                 "<answer>...</answer> tags. Then explain your reasoning step by step in "
                                 "<think>...</think> tags.",
}

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


def medr1_problem(question: str, options: dict[str, str]) -> str:
    """The question with its options the way Med-R1's split files write `problem`:
    "What modality? A)CT, B)MRI, C)OCT"."""
    return f"{question} " + ", ".join(f"{letter}){text}" for letter, text in options.items())


def user_prompt(question: str, options: dict[str, str], mode: ReasoningMode, style: PromptStyle,
                purpose: Purpose = "train") -> str:
    """The text of the user turn.

    style "med-r1": Med-R1's templates around Med-R1's problem text, with its three purposes
    (training, evaluation of a trained model, zero-shot evaluation of the base model). style
    "tiny": the embedded default's own layout, one prompt for all purposes (its option reader
    needs the letter after the option's text).
    """
    if style == "med-r1":
        template = MEDR1_TEMPLATES[("zero_shot", "any") if purpose == "zero_shot" else (purpose, mode)]
        return template.format(Question=medr1_problem(question, options))
    return f"{problem_text(question, options)}\n{INSTRUCTIONS[mode]}"


def chat_prompt(question: str, options: dict[str, str], mode: ReasoningMode, style: PromptStyle,
                purpose: Purpose = "train") -> list[dict]:
    """Conversational prompt with one image placeholder, as TRL and the Qwen2-VL chat template expect."""
    return image_question_messages(user_prompt(question, options, mode, style, purpose))


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
