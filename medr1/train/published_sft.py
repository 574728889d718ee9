"""Med-R1's SFT baseline as `src/r1-v/src/open_r1/sft.py` builds its batches (sft.style: med-r1).

Each example is `convert_example`'s conversation (medr1.task.published.sft_messages), rendered by
the chat template *with* a generation prompt after the assistant turn, as its `collate_fn` does;
the image goes through qwen_vl_utils' `fetch_image` resize (multiples of 28;
medr1.model.published_images) before the processor; the labels are the input ids with padding and
image tokens masked, so the loss covers the system prompt, the question and the target alike. TRL's
own dataset preparation is skipped, which is why Med-R1's `packing: true` never packed anything
(docs/fidelity.md).
"""

from __future__ import annotations

from pathlib import Path

from medr1.data.records import Record
from medr1.model.published_images import fetch_image
from medr1.task.prompts import medr1_problem
from medr1.task.published import sft_messages, solution_text


def published_sft_dataset(records: list[Record], image_root: Path):
    """The split as Med-R1's datasets hold it: problem, solution and image."""
    from datasets import Dataset

    return Dataset.from_dict({
        "problem": [medr1_problem(r.question, r.options) for r in records],
        "solution": [solution_text(r.answer) for r in records],
        "image": [str(image_root / r.image) for r in records],
    })


class PublishedSftCollator:
    """sft.py collate_fn: chat texts and images through the processor, loss on all but padding and image."""

    def __init__(self, processor):
        self.processor = processor

    def texts(self, examples: list[dict]) -> list[str]:
        return [self.processor.apply_chat_template(self.messages(example), tokenize=False, add_generation_prompt=True)
                for example in examples]

    @staticmethod
    def messages(example: dict) -> list[dict]:
        return sft_messages(example["problem"], example["solution"], example["image"], example.get("thinking"))

    def __call__(self, examples: list[dict]) -> dict:
        images = [[fetch_image(example["image"])] for example in examples]
        batch = self.processor(text=self.texts(examples), images=images, return_tensors="pt", padding=True)
        tokenizer = self.processor.tokenizer
        labels = batch["input_ids"].clone()
        labels[labels == tokenizer.pad_token_id] = -100
        labels[labels == tokenizer.convert_tokens_to_ids(self.processor.image_token)] = -100
        batch["labels"] = labels
        return batch
