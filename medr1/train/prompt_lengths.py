"""Prompt lengths of the train split as the trainer will tokenize them, image tokens included.

Med-R1 runs with `--max_prompt_length 1024`, and its trainer cuts a longer prompt's ids from the
left while `generate` still reads the whole prompt (grpo_trainer.py:380-389): the "completion" it
scores then starts with the prompt's tail, and a cut through the image placeholders would no
longer match the image features. We refuse such prompts before any model loads, naming them.
"""

from __future__ import annotations

from pathlib import Path

from medr1.data.records import Record
from medr1.errors import PipelineError
from medr1.task.prompts import PromptStyle, chat_prompt


def prompt_lengths(processor, records: list[Record], image_root: Path, mode: str, style: PromptStyle) -> list[int]:
    """Tokens of each record's prompt: the chat template's text with its image placeholder expanded
    to the image's tokens at the processor's resize (read from the image header, no pixels decoded)."""
    from PIL import Image

    texts = [processor.apply_chat_template(chat_prompt(r.question, r.options, mode, style, "train"), tokenize=False,
                                           add_generation_prompt=True) for r in records]
    ids = processor.tokenizer(texts, add_special_tokens=False)["input_ids"]
    placeholder = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    image_processor = processor.image_processor
    tokens_of: dict[str, int] = {}
    lengths = []
    for record, row in zip(records, ids, strict=True):
        if record.image not in tokens_of:
            with Image.open(image_root / record.image) as image:
                width, height = image.size
            patches = image_processor.get_number_of_image_patches(height, width, {})
            tokens_of[record.image] = patches // image_processor.merge_size**2
        lengths.append(len(row) - row.count(placeholder) + tokens_of[record.image])
    return lengths


def refuse_cut_prompts(processor, records: list[Record], image_root: Path, mode: str, style: PromptStyle,
                       limit: int | None) -> int:
    """The longest prompt's length; with `limit` (train.max_prompt_length), a PipelineError naming
    the prompts over it and what to change, since cutting them would cut their image tokens."""
    lengths = prompt_lengths(processor, records, image_root, mode, style)
    over = [(length, record) for length, record in zip(lengths, records, strict=True)
            if limit is not None and length > limit]
    if over:
        length, record = max(over, key=lambda pair: pair[0])
        raise PipelineError(
            f"{len(over)} of {len(records)} train prompts are longer than train.max_prompt_length {limit} tokens, "
            f"image tokens included; the longest is question {record.question_id} ({record.image}) at {length} "
            "tokens. Cutting them would cut image tokens, so nothing trains: raise train.max_prompt_length "
            "(null: no limit), or lower train.max_pixels to give the images fewer tokens")
    return max(lengths, default=0)
