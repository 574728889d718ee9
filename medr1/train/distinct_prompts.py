"""Each distinct prompt of a GRPO step prepared once: template rendered, tokens and pixels made once,
every copy given the same rows.

TRL's GRPOTrainer holds a question num_generations times and prepares every copy, twice a step:
once to generate (the processor's chat template, tokenized, with the image) and once for the forward
passes (the template rendered as text, then the processor over text and images). During a step,
`DistinctPrompts` stands in for the processor: it hands each call's distinct rows to the real
processor once and copies the results to the other rows; and the processor's image processor keeps
what it made during the step (`ImagesOnce`), so the second pass over the same pictures reuses the
first's pixels instead of processing them again.

Rows are the same prompt when their messages are equal and their pictures are the same, as the step's
`StepPictures` decides (by pixels, each picture object hashed once a step); `share_identical_images`
first makes a group's copies of one picture one decoded object (a row may also hold the picture
undecoded, as datasets' `Image(decode=False)` gives it: it is then decoded once a step).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any

# Values with one entry per image, and values with one block of rows per image (the block's length is
# the image's grid product); every other value of a processor's output has one entry per prompt.
PER_IMAGE = frozenset({"image_grid_thw"})
PER_PATCH = frozenset({"pixel_values"})


def pixels_identity(image) -> tuple:
    """Equal for two images with the same pixels."""
    return ("pixels", image.size, image.mode, hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest())


class StepPictures:
    """Which pictures of a step are the same: the one decision every part of the step's processing
    reads (sharing decoded copies, prompt keys, the image processor's reuse). A picture is its pixels;
    each picture object is hashed once a step however many calls hold it."""

    def __init__(self):
        self._decoded: dict[tuple, Any] = {}  # an undecoded picture's (path, bytes) -> its decoded object
        self._identities: dict[int, tuple] = {}  # id of a picture object -> (the object, kept alive for the
        # step so that its id stays its own, and its pixels' identity)

    def identity(self, image) -> tuple:
        if id(image) not in self._identities:
            self._identities[id(image)] = (image, pixels_identity(image))
        return self._identities[id(image)][1]

    def decoded(self, image: dict):
        """An undecoded picture ({"path", "bytes"}, datasets' `Image(decode=False)`), decoded once a step."""
        key = (image.get("path"), image.get("bytes"))
        if key not in self._decoded:
            from datasets import Image

            self._decoded[key] = Image().decode_example(image)  # as the dataset would have decoded it
        return self._decoded[key]


def share_identical_images(rows: list[dict], pictures: StepPictures) -> None:
    """Make rows whose image (or images) are the same picture hold one decoded image object, in place;
    an undecoded image ({"path", "bytes"}, datasets' `Image(decode=False)`) is decoded once."""
    seen: dict[tuple, Any] = {}

    def shared(image):
        if isinstance(image, dict) and ("path" in image or "bytes" in image):
            return pictures.decoded(image)
        if not _is_picture(image):
            return image
        return seen.setdefault(pictures.identity(image), image)

    for row in rows:
        if row.get("image") is not None:
            row["image"] = shared(row["image"])
        if isinstance(row.get("images"), list):
            row["images"] = [shared(image) for image in row["images"]]


def prompt_key(pictures: StepPictures, *parts) -> tuple:
    """Equal for equal messages, texts and settings holding the same pictures (hashable)."""
    return _frozen(parts, pictures)


def _frozen(value, pictures: StepPictures):
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, dict):
        return ("dict", *sorted((key, _frozen(item, pictures)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return ("list", *(_frozen(item, pictures) for item in value))
    if _is_picture(value):
        return pictures.identity(value)
    return ("object", id(value))


def _is_picture(value) -> bool:
    from PIL import Image

    return isinstance(value, Image.Image)


def _images_in(conversation) -> list:
    messages = conversation if isinstance(conversation, list) else [conversation]
    return [part.get("image") for message in messages if isinstance(message.get("content"), list)
            for part in message["content"] if isinstance(part, dict) and part.get("type") == "image"]


def distinct_rows(keys: list) -> tuple[list[int], list[int]]:
    """The first row of each distinct key, and for every row the position of its key among them."""
    first: dict = {}
    keep: list[int] = []
    inverse: list[int] = []
    for row, key in enumerate(keys):
        if key not in first:
            first[key] = len(keep)
            keep.append(row)
        inverse.append(first[key])
    return keep, inverse


def _take(value, indices: list[int]):
    """The entries of `value` (a tensor, an array or a list) at `indices`, in that order."""
    if hasattr(value, "index_select"):
        import torch

        return value.index_select(0, torch.tensor(indices, device=value.device))
    if hasattr(value, "take"):
        return value.take(indices, axis=0)
    return [value[i] for i in indices]


def expand_to_rows(features, images_per_row: list[int], inverse: list[int]):
    """A processor's output for distinct rows, given back for every row (`inverse`), or None when it
    holds a value whose layout this does not know."""
    rows = len(images_per_row)
    starts = [sum(images_per_row[:row]) for row in range(rows)]
    image_order = [image for row in inverse for image in range(starts[row], starts[row] + images_per_row[row])]
    expanded = {}
    for name, value in features.items():
        if name in PER_IMAGE:
            expanded[name] = _take(value, image_order)
        elif name in PER_PATCH:
            grid = features.get("image_grid_thw")
            if grid is None:
                return None
            import torch

            blocks = torch.as_tensor(value).split(torch.as_tensor(grid).prod(-1).tolist())
            expanded[name] = torch.cat([blocks[image] for image in image_order])
        elif len(value) == rows:
            expanded[name] = _take(value, inverse)
        else:
            return None
    return expanded if type(features) is dict else type(features)(expanded)


class DistinctPrompts:
    """Stands in for a processor during one step (see the module's docstring); any attribute it does
    not define is the processor's own."""

    def __init__(self, processor, pictures: StepPictures):
        self._processor = processor
        self._pictures = pictures
        self._renders: dict[tuple, Any] = {}
        self.images: ImagesOnce | None = None  # the image processor's stand-in, during a step

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def apply_chat_template(self, conversation, *args, **kwargs):
        batched = isinstance(conversation, (list, tuple)) and bool(conversation) and isinstance(conversation[0],
                                                                                                  (list, tuple))
        if not kwargs.get("tokenize", False):
            key = prompt_key(self._pictures, conversation, args, kwargs)
            if key not in self._renders:
                self._renders[key] = self._processor.apply_chat_template(conversation, *args, **kwargs)
            return self._renders[key]
        if not batched or not kwargs.get("return_dict", False) or args:
            return self._processor.apply_chat_template(conversation, *args, **kwargs)
        keep, inverse = distinct_rows([prompt_key(self._pictures, c) for c in conversation])
        distinct = [conversation[row] for row in keep]
        features = self._processor.apply_chat_template(distinct, **kwargs)
        expanded = expand_to_rows(features, [len(_images_in(c)) for c in distinct], inverse)
        return self._processor.apply_chat_template(conversation, **kwargs) if expanded is None else expanded

    def __call__(self, *args, images=None, text=None, **kwargs):
        if args or images is None or not isinstance(text, list) or len(text) != len(images):
            return self._processor(*args, images=images, text=text, **kwargs)
        row_images = [list(row) if isinstance(row, (list, tuple)) else [] if row is None else [row]
                      for row in images]
        keep, inverse = distinct_rows([prompt_key(self._pictures, t, i)
                                       for t, i in zip(text, row_images, strict=True)])
        distinct_images = [row_images[row] for row in keep]
        features = self._processor(images=distinct_images, text=[text[row] for row in keep], **kwargs)
        expanded = expand_to_rows(features, [len(row) for row in distinct_images], inverse)
        return self._processor(images=images, text=text, **kwargs) if expanded is None else expanded


class ImagesOnce:
    """Stands in for a processor's image processor during one step: each picture (by its pixels) is
    processed once, the first time a call holds it, and every call gets its pictures' pixel rows and
    grids from what was made. Outputs other than `pixel_values` and `image_grid_thw` (a processor
    this does not know) go straight to the real image processor."""

    def __init__(self, image_processor, pictures: StepPictures):
        self._image_processor = image_processor
        self._pictures = pictures
        self._made: dict[tuple, tuple] = {}  # picture key -> (its pixel rows, its grid row)

    def __getattr__(self, name):
        return getattr(self._image_processor, name)

    def __call__(self, images, *args, **kwargs):
        flat = list(_flatten(images))
        if args or kwargs.get("return_tensors", "pt") != "pt" or not flat or not all(
                _is_picture(image) for image in flat):
            return self._image_processor(images, *args, **kwargs)
        kwargs = {**kwargs, "return_tensors": "pt"}
        keys = [prompt_key(self._pictures, image, kwargs) for image in flat]
        new = list(dict.fromkeys(key for key in keys if key not in self._made))
        if new:
            first = {key: flat[keys.index(key)] for key in new}
            made = self._image_processor([first[key] for key in new], **kwargs)
            if set(made) != PER_IMAGE | PER_PATCH:
                return self._image_processor(images, **kwargs)
            blocks = made["pixel_values"].split(made["image_grid_thw"].prod(-1).tolist())
            self._made.update({key: (blocks[i], made["image_grid_thw"][i]) for i, key in enumerate(new)})
        import torch
        from transformers import BatchFeature

        return BatchFeature({"pixel_values": torch.cat([self._made[key][0] for key in keys]),
                             "image_grid_thw": torch.stack([self._made[key][1] for key in keys])})


def _flatten(images):
    if isinstance(images, (list, tuple)):
        for item in images:
            yield from _flatten(item)
    elif images is not None:
        yield images


@contextmanager
def prompts_prepared_once(trainer, pictures: StepPictures):
    """During the block, `trainer.processing_class` prepares each distinct prompt once (see the
    module's docstring), deciding which pictures are the same by `pictures`; yields the stand-in. The
    trainer's processor and its image processor are the real ones again after the block."""
    processor = trainer.processing_class
    image_processor = getattr(processor, "image_processor", None)
    stand_in = DistinctPrompts(processor, pictures)
    if image_processor is not None:
        processor.image_processor = stand_in.images = ImagesOnce(image_processor, pictures)
    trainer.processing_class = stand_in
    try:
        yield stand_in
    finally:
        trainer.processing_class = processor
        if image_processor is not None:
            processor.image_processor = image_processor
