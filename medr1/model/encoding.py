"""Turning (image, prompt, completion) into Qwen2-VL model inputs, with processed images cached.

The image processor is the slow part of a small model's step; an image is processed once
and its patch tensor reused by every question and every model that looks at it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from medr1.task.prompts import image_question_messages
from medr1.task.spec import TaskSpec

IGNORE_INDEX = -100


@dataclass(frozen=True)
class ProcessedImage:
    pixel_values: torch.Tensor  # (patches, channels * temporal * patch * patch)
    grid_thw: torch.Tensor  # (1, 3)


class LeastRecentlyUsed(OrderedDict):
    """A dict that keeps at most `capacity` entries (None: no bound), dropping the least recently
    used first; `use` marks entries as used, `make_room` drops early for entries about to come."""

    def __init__(self, capacity: int | None = None):
        super().__init__()
        self.capacity = capacity

    def use(self, keys) -> None:
        for key in keys:
            self.move_to_end(key)

    def keep(self, items: dict) -> None:
        self.update(items)
        self.use(items)
        self.make_room(0)

    def make_room(self, count: int, spare=()) -> None:
        """Drop the least recently used until `count` more fit, sparing the keys in `spare`."""
        if self.capacity is None:
            return
        excess = len(self) + count - self.capacity
        for key in [key for key in self if key not in spare][: max(0, excess)]:
            del self[key]
        while len(self) > self.capacity:  # more spared than fit
            self.popitem(last=False)


def open_rgb(path: str) -> Image.Image:
    """An image file as RGB, at its own size: the processor alone resizes it."""
    with Image.open(Path(path)) as opened:
        return opened.convert("RGB")


class ImageCache:
    """Processed images keyed by path (or any key), filled on first use. With `capacity`, at most
    that many are kept: the least recently used go first, so memory does not grow with the split.
    `load` opens an image file before the processor (`open_rgb`, or Med-R1's `fetch_image`)."""

    def __init__(self, processor, capacity: int | None = None, load: Callable[[str], Image.Image] = open_rgb):
        self.processor = processor
        self.load = load
        self._items: LeastRecentlyUsed = LeastRecentlyUsed(capacity)
        self._decoders: ThreadPoolExecutor | None = None  # one pool for the cache's life: new threads per call
        # would each take a fresh malloc arena, and freed image buffers pile up across them

    @property
    def capacity(self) -> int | None:
        return self._items.capacity

    def get(self, key: str, image: Image.Image | None = None) -> ProcessedImage:
        if key not in self._items:
            self._items.make_room(1)
            self._items[key] = self.process(image if image is not None else self.load(key))
        self._items.use([key])
        return self._items[key]

    def get_files(self, paths: list[str], chunk: int = 64) -> list[ProcessedImage]:
        """`get` for many image files at once: the missing ones are decoded in threads (PIL lets go
        of the GIL while it decodes) and processed `chunk` at a time, since the processor's cost per
        call is larger than a small image's own work. The tensors equal `get`'s one by one; each is
        its own copy, so that an image kept in the cache does not hold its whole chunk's buffer."""
        found = {path: self._items[path] for path in dict.fromkeys(paths) if path in self._items}
        missing = [path for path in dict.fromkeys(paths) if path not in found]
        self._items.make_room(len(missing), spare=found)  # the least recently used go before the new ones come
        if missing and self._decoders is None:
            self._decoders = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            out = self.processor.image_processor(images=list(self._decoders.map(self.load, part)), return_tensors="pt")
            grids = out["image_grid_thw"]
            pixels = out["pixel_values"].split(grids.prod(dim=1).tolist())
            for path, pixel_values, grid in zip(part, pixels, grids, strict=True):
                found[path] = ProcessedImage(pixel_values.clone(), grid.unsqueeze(0))
        self._items.keep(found)
        return [found[path] for path in paths]

    def process(self, image: Image.Image) -> ProcessedImage:
        out = self.processor.image_processor(images=[image], return_tensors="pt")
        return ProcessedImage(out["pixel_values"], out["image_grid_thw"])

    def __len__(self) -> int:
        return len(self._items)


def prompt_text(processor, question: str, options: dict[str, str], task: TaskSpec,
                image: ProcessedImage) -> str:
    """The chat-templated prompt with the image placeholder expanded to the image's token count."""
    frame = _chat_frame(processor)
    if frame is None:
        text = processor.apply_chat_template(task.messages(question, options), tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = frame.replace(_TEXT_SLOT, task.user_text(question, options), 1)
    merge = processor.image_processor.merge_size**2
    count = int(image.grid_thw.prod().item()) // merge
    return text.replace(processor.image_token, processor.image_token * count, 1)


_TEXT_SLOT = "\x00medr1 user text\x00"
_FRAMES: dict[str, str | None] = {}


def _chat_frame(processor) -> str | None:
    """The chat template rendered once around a slot for the user's text (rendering it for every
    question costs about as much as a small model's decode step), or None for a template that
    does not put the text in verbatim; each prompt is then rendered in full."""
    template = repr(processor.chat_template)  # a string, or a dict of named templates
    if template not in _FRAMES:
        def render(text: str) -> str:
            return processor.apply_chat_template(image_question_messages(text), tokenize=False,
                                                 add_generation_prompt=True)

        frame, probe = render(_TEXT_SLOT), " Which organ? liver(A), lung(B)\nOutput <answer> </answer>. "
        verbatim = frame.count(_TEXT_SLOT) == 1 and frame.replace(_TEXT_SLOT, probe) == render(probe)
        _FRAMES[template] = frame if verbatim else None
    return _FRAMES[template]


def encode(
    processor,
    prompts: list[str] | list[list[int]],
    images: list[ProcessedImage],
    completions: list[str] | None = None,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Batch of model inputs; with completions, labels mask everything but the completion and its end token.
    `prompts` are texts, or their token ids when the caller has tokenized them already."""
    tokenizer = processor.tokenizer
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows, label_rows = [], []
    for index, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if isinstance(prompt, str) else list(prompt)
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
