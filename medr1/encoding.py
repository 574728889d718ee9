"""Turning (image, prompt, completion) into Qwen2-VL model inputs, with processed images cached.

The image processor is the slow part of a small model's step; an image is processed once
and its patch tensor reused by every question and every model that looks at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from medr1.prompts import ReasoningMode, chat_prompt

IGNORE_INDEX = -100


@dataclass(frozen=True)
class ProcessedImage:
    pixel_values: torch.Tensor  # (patches, channels * temporal * patch * patch)
    grid_thw: torch.Tensor  # (1, 3)


class ImageCache:
    """Processed images keyed by path (or any key), filled on first use."""

    def __init__(self, processor):
        self.processor = processor
        self._items: dict[str, ProcessedImage] = {}

    def get(self, key: str, image: Image.Image | None = None) -> ProcessedImage:
        if key not in self._items:
            if image is None:
                with Image.open(Path(key)) as opened:
                    image = opened.convert("RGB")
            self._items[key] = self.process(image)
        return self._items[key]

    def process(self, image: Image.Image) -> ProcessedImage:
        out = self.processor.image_processor(images=[image], return_tensors="pt")
        return ProcessedImage(out["pixel_values"], out["image_grid_thw"])

    def __len__(self) -> int:
        return len(self._items)


def prompt_text(processor, question: str, options: dict[str, str], mode: ReasoningMode, image: ProcessedImage) -> str:
    """The chat-templated prompt with the image placeholder expanded to the image's token count."""
    text = processor.apply_chat_template(chat_prompt(question, options, mode), tokenize=False, add_generation_prompt=True)
    merge = processor.image_processor.merge_size**2
    count = int(image.grid_thw.prod().item()) // merge
    return text.replace(processor.image_token, processor.image_token * count, 1)


def encode(
    processor,
    prompts: list[str],
    images: list[ProcessedImage],
    completions: list[str] | None = None,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Batch of model inputs; with completions, labels mask everything but the completion and its end token."""
    tokenizer = processor.tokenizer
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows, label_rows = [], []
    for index, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        labels = [IGNORE_INDEX] * len(ids)
        if completions is not None:
            completion_ids = tokenizer(completions[index], add_special_tokens=False)["input_ids"] + [end_id]
            ids = ids + completion_ids
            labels = labels + completion_ids
        rows.append(ids)
        label_rows.append(labels)
    width = max(len(row) for row in rows)
    pad_id = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for index, (row, label_row) in enumerate(zip(rows, label_rows)):
        span = slice(0, len(row)) if padding_side == "right" else slice(width - len(row), width)
        input_ids[index, span] = torch.tensor(row)
        attention[index, span] = 1
        labels[index, span] = torch.tensor(label_row)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "mm_token_type_ids": (input_ids == processor.image_token_id).long(),
        "pixel_values": torch.cat([image.pixel_values for image in images]),
        "image_grid_thw": torch.cat([image.grid_thw for image in images]),
    }
    if completions is not None:
        batch["labels"] = labels
    return batch
