"""Batched greedy decoding of answers, the fast way.

- Left padding, and batches bucketed by prompt length, so little of a batch is padding; the
  questions about one image go in one batch, where the prompt up to the end of the image (the
  head) is computed once for all of them (`medr1.evaluate.heads`).
- Greedy decoding checks drafted tokens, the rest of the shortest well-formed answer, in one
  forward pass (`medr1.evaluate.greedy`): a think-after answer takes two passes instead of six, and the
  tokens are plain greedy decoding's.
- Each row stops once its verdict is settled (`medr1.task.rewards.verdict_settled`); a well-formed
  completion stops at the end-of-turn token. A model that rambles costs a few tokens, not
  max_new_tokens, and the extracted answers and format verdicts equal a full generation's.
- Images are opened as the task's grading protocol says (`image_loader`): under Med-R1's protocols
  through its evaluation scripts' `fetch_image` (medr1.model.published_images), else as they are.
- Processed images come from an `ImageCache`, filled once (files decoded in threads, processed
  in large batches) and shared by every model evaluated on the same split; the vision tower's
  output for an image is computed once per model and reused by every question about that
  image (`VisionFeatures`).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from medr1.data.records import Record
from medr1.errors import PipelineError
from medr1.evaluate.greedy import FormatDrafts, greedy_decode
from medr1.evaluate.heads import split_prompts
from medr1.model.encoding import ImageCache, LeastRecentlyUsed, ProcessedImage, encode, open_rgb, prompt_text
from medr1.model.published_images import fetch_image
from medr1.task.spec import TaskSpec


def image_loader(task: TaskSpec):
    """How evaluation opens an image file. Under Med-R1's grading protocols as its evaluation scripts do
    (`process_vision_info`: qwen_vl_utils' fetch_image, PIL's bicubic resize to multiples of 28, which the
    processor's own resize then leaves as it is); under `strict`, as it is, resized by the processor alone."""
    return fetch_image if task.published_images else open_rgb


def evaluation_images(processor, task: TaskSpec, capacity: int | None = None) -> ImageCache:
    """An empty cache of processed images, opened as `task` says."""
    return ImageCache(processor, capacity, image_loader(task))


def _images_for(processor, task: TaskSpec, cache: ImageCache | None) -> ImageCache:
    """The given cache, when it opens images as the task says (else the completions would not be the
    protocol's), or a new one."""
    if cache is None:  # an empty cache is falsy: `cache or ...` would drop a shared one
        return evaluation_images(processor, task)
    if cache.load is not image_loader(task):
        raise PipelineError(f"the image cache opens images with {cache.load.__name__}, but evaluate.protocol "
                            f"{task.protocol} needs {image_loader(task).__name__}: build it with evaluation_images")
    return cache


class VisionFeatures:
    """One model's vision-tower output per image, computed once, passed to generate as
    precomputed encoder outputs; the least recently used images go beyond `capacity`."""

    def __init__(self, model, capacity: int = 4096):
        self.model = model
        self._items: LeastRecentlyUsed = LeastRecentlyUsed(capacity)
        self.usable = "mm_encoder_outputs" in inspect.signature(model.forward).parameters

    def encoder_outputs(self, keys: list[str], images: list[ProcessedImage]) -> dict:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        missing = {key: image for key, image in zip(keys, images) if key not in self._items}
        if missing:
            device = self.model.device
            pixels = torch.cat([image.pixel_values for image in missing.values()]).to(device, self.model.dtype)
            grids = torch.cat([image.grid_thw for image in missing.values()]).to(device)
            features = self.model.get_image_features(pixels, grids, return_dict=True).pooler_output
            self._items.update(zip(missing, features, strict=True))
        self._items.use(keys)
        self._items.make_room(0, spare=set(keys))
        return {"image": BaseModelOutputWithPooling(pooler_output=tuple(self._items[key] for key in keys))}


# generation_config settings that change greedy choices, with their neutral values; of these,
# greedy_decode applies only repetition_penalty.
_UNAPPLIED = {"no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "suppress_tokens": (None,),
              "begin_suppress_tokens": (None,), "min_new_tokens": (None, 0), "min_length": (None, 0),
              "sequence_bias": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
              "encoder_repetition_penalty": (None, 1.0), "exponential_decay_length_penalty": (None,)}


def greedy_repetition_penalty(config) -> float:
    """The model's repetition penalty (as `generate` would apply it); a setting that greedy
    decoding does not apply stops evaluation rather than silently giving other answers."""
    for name, neutral in _UNAPPLIED.items():
        value = getattr(config, name, None)
        if not any(value is allowed or value == allowed for allowed in neutral):
            raise PipelineError(f"the model's generation_config.json sets {name}={value!r}, which evaluation does not "
                                f"apply; remove it there (Med-R1 evaluates with plain greedy decoding)")
    return float(getattr(config, "repetition_penalty", None) or 1.0)


def length_buckets(lengths: list[int], batch_size: int, together: list | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks early).
    Indices with the same `together` key (the questions about one image) are kept next to each
    other, in the place of their longest, so that a batch holds few distinct images."""
    together = together if together is not None else list(range(len(lengths)))
    if len(together) != len(lengths):
        raise ValueError(f"{len(together)} group keys for {len(lengths)} lengths")
    groups: dict = {}
    for index in sorted(range(len(lengths)), key=lambda index: -lengths[index]):
        groups.setdefault(together[index], []).append(index)
    order = [index for members in groups.values() for index in members]
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def image_windows(keys: list[str], size: int | None) -> list[list[int]]:
    """Record indices in windows of at most `size` distinct images (None: one window), the
    questions about one image in the same window, in the order the images first appear."""
    by_image: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        by_image.setdefault(key, []).append(index)
    groups = list(by_image.values())
    size = size or max(len(groups), 1)
    return [sorted(index for group in groups[start : start + size] for index in group)
            for start in range(0, len(groups), size)]


# Architectures whose internals the fast decoder uses (get_rope_index, get_image_features, the cache
# layout); any other model is evaluated with plain `generate`.
FAST_DECODING = {"qwen2_vl", "qwen2_5_vl"}
_told: set[str] = set()


@torch.inference_mode()
def plain_completions(model, processor, records: list[Record], image_root: Path, task: TaskSpec,
                      batch_size: int = 32, max_new_tokens: int = 256, cache: ImageCache | None = None) -> list[str]:
    """Greedy completions by `generate` itself, batch by batch with left padding, to max_new_tokens:
    the reference the fast decoder is held to, and the path for architectures it does not know."""
    cache = _images_for(processor, task, cache)
    completions = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        images = cache.get_files([str(image_root / r.image) for r in chunk])
        texts = [prompt_text(processor, r.question, r.options, task, image) for r, image in zip(chunk, images)]
        encoded = encode(processor, texts, images, padding_side="left")
        batch = {name: value.to(model.device) for name, value in encoded.items()}
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        completions += processor.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :],
                                                        skip_special_tokens=True)
    return completions


@torch.inference_mode()
def generate_completions(
    model,
    processor,
    records: list[Record],
    image_root: Path,
    task: TaskSpec,
    batch_size: int = 32,
    max_new_tokens: int = 256,
    cache: ImageCache | None = None,
    progress: bool = True,
    desc: str = "evaluate",
) -> list[str]:
    """The greedy completion of every record, in the records' order, asked as `task` says."""
    cache = _images_for(processor, task, cache)
    model.eval()
    if model.config.model_type not in FAST_DECODING:
        if model.config.model_type not in _told:
            _told.add(model.config.model_type)
            print(f"[{desc}] {model.config.model_type} is not one of {sorted(FAST_DECODING)}: evaluating with plain "
                  "generate (slower, no early stop)", flush=True)
        return plain_completions(model, processor, records, image_root, task, batch_size, max_new_tokens, cache)
    tokenizer = processor.tokenizer
    keys = [str(image_root / record.image) for record in records]
    vision = VisionFeatures(model, cache.capacity or 4096)  # the vision tower's outputs, as many as the images
    completions: list[str] = [""] * len(records)
    configured = model.generation_config.eos_token_id
    configured = configured if isinstance(configured, list) else [configured] if configured is not None else []
    end_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    end_ids = [end_turn] + sorted(set(configured) - {end_turn})

    penalty = greedy_repetition_penalty(model.generation_config)
    drafts = FormatDrafts(tokenizer, task.mode, ["".join(record.options) for record in records], end_turn)

    def settled(token_lists: list[list[int]]) -> list[bool]:
        return [task.settled(text) for text in tokenizer.batch_decode(token_lists, skip_special_tokens=True)]

    def decode_batch(batch_indices: list[int], prompt_ids: dict[int, list[int]], images: dict) -> list[str]:
        prompts = split_prompts(processor, [prompt_ids[i] for i in batch_indices],
                                [images[keys[i]] for i in batch_indices],
                                [keys[i] for i in batch_indices]).to(model.device)
        heads = dict(prompts.heads)
        if vision.usable:
            del heads["pixel_values"]
            heads["mm_encoder_outputs"] = vision.encoder_outputs(prompts.head_keys, prompts.head_images)
        else:
            heads["pixel_values"] = heads["pixel_values"].to(model.dtype)
        prompts = replace(prompts, heads=heads)
        tokens = greedy_decode(model, prompts, drafts.for_rows(batch_indices), set(end_ids),
                               max_new_tokens, settled, tokenizer.pad_token_id, penalty)
        return tokenizer.batch_decode(tokens, skip_special_tokens=True)

    with tqdm(total=len(records), desc=desc, unit="question", disable=not progress) as bar:
        for window in image_windows(keys, cache.capacity):  # the cache's bound: memory flat in the split size
            window_keys = [keys[i] for i in window]
            images = dict(zip(window_keys, cache.get_files(window_keys), strict=True))
            texts = [prompt_text(processor, records[i].question, records[i].options, task, images[keys[i]])
                     for i in window]
            prompt_ids = dict(zip(window, tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True))
            lengths = [len(prompt_ids[i]) for i in window]
            for batch in length_buckets(lengths, batch_size, together=window_keys):
                batch_indices = [window[position] for position in batch]
                texts = decode_batch(batch_indices, prompt_ids, images)
                for index, text in zip(batch_indices, texts):
                    completions[index] = text
                bar.update(len(batch_indices))
            del images, prompt_ids  # this window's images go before the next window's are processed
    return completions
