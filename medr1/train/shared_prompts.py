"""A group's prompt runs through the language model once; its completions continue from the result.

GRPO scores num_generations completions of one prompt, and TRL's log-probability passes (policy,
old policy, reference) run the whole prompt again for each. `SharedPrompts` wraps a Qwen-style
multimodal backbone (`model.model` of Qwen2-VL and Qwen2.5-VL): while the trainer says how long the
prompt part of its rows is (`prompt_length`), rows with the same prompt tokens and the same pictures
run the prompt once, with its key-value cache; the cache is then indexed out to every row, and the
completions run on top of it. Generation's prefill (the prompts into an empty cache) runs each
distinct prompt once the same way, and decoding continues from the indexed-out cache. The hidden
states are the ones a full pass gives (causal attention: a prompt position never sees the
completion), and autograd sums each copy's gradient into the one prompt pass, as it would sum the
copies'. Positions come from the backbone's own rope index over the full rows (in the prefill, from
generate). With gradient checkpointing (no cache in training), other backbones, or nothing shared,
the backbone runs as it is.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

from medr1.train.distinct_images import find_distinct_blocks
from medr1.train.distinct_prompts import distinct_rows


class ImageBlocks(NamedTuple):
    """The images of a forward's rows, as `_plan` compares them."""

    blocks: list  # one tensor of rows per image: its pixel rows, or its encoded features
    kinds: list  # per image, what must also match (its grid), or None
    tokens: list[int]  # the image's placeholder tokens in the prompt


class Plan(NamedTuple):
    keep: list[int]  # the rows that run
    inverse: list[int]  # per row, its kept row's position in `keep`
    kept_images: list[int]  # the kept rows' images, in order
    blocks: list  # ImageBlocks.blocks

    def kept_blocks(self) -> list:
        return [self.blocks[image] for image in self.kept_images]


class SharedPrompts:
    def __init__(self, backbone):
        self.backbone = backbone
        self.length: int | None = None
        self.shared_rows = 0  # rows whose prompt pass was shared, for tests and profiles
        self._forward = backbone.forward
        backbone.forward = self.forward

    @contextmanager
    def prompt_length(self, length: int):
        self.length = length
        try:
            yield
        finally:
            self.length = None

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, pixel_values=None,
                image_grid_thw=None, mm_token_type_ids=None, **kwargs):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                 "pixel_values": pixel_values, "image_grid_thw": image_grid_thw, "mm_token_type_ids": mm_token_type_ids}
        cache, tokens = kwargs.get("cache"), 0 if input_ids is None else input_ids.shape[1]
        plain_outputs = not (kwargs.get("output_hidden_states") or kwargs.get("output_attentions"))
        log_probabilities = self.length is not None and cache is None and position_ids is None \
            and 0 < self.length < tokens and plain_outputs
        prefill = self.length is None and _empty_dynamic_cache(cache) and position_ids is not None and tokens > 0 \
            and plain_outputs
        if log_probabilities and (plan := self._plan(self.length, given, kwargs, self._pixel_blocks(given))):
            return self._prompt_then_completions(plan, given, kwargs)
        if prefill and (plan := self._plan(tokens, given, kwargs, _encoded_blocks(kwargs), position_ids)):
            return self._prefill(plan, given, kwargs)
        return self._forward(**given, **kwargs)

    def _prompt_then_completions(self, plan: Plan, given, kwargs):
        """A log-probability pass: each distinct prompt once, its cache indexed out, completions on top."""
        import torch

        length, input_ids, attention_mask = self.length, given["input_ids"], given["attention_mask"]
        grid = given["image_grid_thw"]
        positions, _ = self.backbone.get_rope_index(input_ids, mm_token_type_ids=given["mm_token_type_ids"],
                                                    image_grid_thw=grid, attention_mask=attention_mask)
        settings = {**kwargs, "use_cache": True}
        prompt = self._forward(**_kept_rows(plan, given, positions, length), image_grid_thw=grid[plan.kept_images],
                               pixel_values=torch.cat(plan.kept_blocks()), **settings)
        cache, prompt_hidden = self._to_every_row(plan, prompt)
        completion = self._forward(input_ids=input_ids[:, length:], attention_mask=attention_mask,
                                   position_ids=positions[:, :, length:], cache=cache, **settings)
        hidden = torch.cat([prompt_hidden, completion.last_hidden_state], dim=1)
        return type(completion)(last_hidden_state=hidden)

    def _prefill(self, plan: Plan, given, kwargs):
        """Generation's first forward (the prompts, their images already encoded, into an empty cache):
        each distinct prompt once, its keys and values indexed out to every row of the cache that
        decoding continues from. Positions are generate's own, and so are the rope deltas it keeps."""
        kept = type(kwargs["mm_encoder_outputs"]["image"])(pooler_output=plan.kept_blocks())
        settings = {**kwargs, "mm_encoder_outputs": {**kwargs["mm_encoder_outputs"], "image": kept}}
        prefill = self._forward(**_kept_rows(plan, given, given["position_ids"], given["input_ids"].shape[1]),
                                **settings)
        cache, hidden = self._to_every_row(plan, prefill)
        return type(prefill)(last_hidden_state=hidden, cache=cache)

    def _to_every_row(self, plan: Plan, output):
        """The kept rows' cache (in place) and hidden states indexed out to every row."""
        import torch

        rows = torch.tensor(plan.inverse, device=output.last_hidden_state.device)
        output.cache.reorder_cache(rows)  # each row gets its prompt's keys and values (autograd sums back)
        self.shared_rows += len(plan.inverse) - len(plan.keep)
        return output.cache, output.last_hidden_state.index_select(0, rows)

    def _pixel_blocks(self, given) -> ImageBlocks | None:
        """The images of a log-probability pass: their pixel rows, compared with their grids."""
        grid = given["image_grid_thw"]
        merge = getattr(getattr(self.backbone.config, "vision_config", None), "spatial_merge_size", None)
        if given["pixel_values"] is None or grid is None or merge is None:
            return None
        patches = grid.prod(-1).tolist()
        return ImageBlocks(given["pixel_values"].split(patches), [tuple(g) for g in grid.tolist()],
                           [p // merge**2 for p in patches])

    def _plan(self, length: int, given, kwargs, images: ImageBlocks | None, positions=None) -> Plan | None:
        """Which rows run when rows share their first `length` tokens, mask and images (and
        `positions`, where given), else None."""
        input_ids, attention_mask = given["input_ids"], given["attention_mask"]
        token = getattr(self.backbone.config, "image_token_id", None)
        if (images is None or token is None or given["mm_token_type_ids"] is None
                or (attention_mask is not None and attention_mask.dim() != 2)
                or kwargs.get("inputs_embeds") is not None or kwargs.get("pixel_values_videos") is not None
                or _checkpointing(self.backbone)):
            return None
        images_of = _images_per_row(input_ids[:, :length] == token, images.tokens)
        if images_of is None:
            return None
        distinct = find_distinct_blocks(images.blocks, images.kinds)
        image_key = distinct.inverse if distinct is not None else list(range(len(images.blocks)))
        prompts = input_ids[:, :length].tolist()
        masks = attention_mask[:, :length].tolist() if attention_mask is not None else [None] * len(prompts)
        where = positions[:, :, :length].transpose(0, 1).flatten(1).tolist() if positions is not None \
            else [None] * len(prompts)
        keys = [(tuple(prompts[row]), masks[row] and tuple(masks[row]), where[row] and tuple(where[row]),
                 tuple(image_key[i] for i in images_of[row])) for row in range(len(prompts))]
        keep, inverse = distinct_rows(keys)
        if len(keep) == len(keys):
            return None
        return Plan(keep, inverse, [image for row in keep for image in images_of[row]], images.blocks)


def _kept_rows(plan: Plan, given, positions, length: int) -> dict:
    """The backbone's token inputs for the kept rows' first `length` tokens."""
    rows = {name: None if given[name] is None else given[name][plan.keep, :length]
            for name in ("input_ids", "attention_mask", "mm_token_type_ids")}
    return {**rows, "position_ids": positions[:, plan.keep, :length]}


def _empty_dynamic_cache(cache) -> bool:
    """An empty DynamicCache of plain layers, which `reorder_cache` grows from the kept rows to every row
    (static, paged, quantized or offloaded caches are left to the backbone as they are)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return type(cache) is DynamicCache and all(type(layer) is DynamicLayer for layer in cache.layers) \
        and cache.get_seq_length() == 0


def _encoded_blocks(kwargs) -> ImageBlocks | None:
    """The images generation has already encoded (`mm_encoder_outputs`): their features."""
    outputs = kwargs.get("mm_encoder_outputs") or {}
    if outputs.get("image") is None or outputs.get("video") is not None:
        return None
    pooled = list(outputs["image"].pooler_output)
    return ImageBlocks(pooled, [None] * len(pooled), [len(block) for block in pooled])


def _checkpointing(backbone) -> bool:
    return any(getattr(module, "gradient_checkpointing", False) for module in backbone.modules())


def _images_per_row(image_tokens, tokens_of_image: list[int]) -> list[list[int]] | None:
    """Which images (in order) each row's prompt holds, from its image tokens (`image_tokens`: a mask)."""
    rows, image = [], 0
    for count in image_tokens.sum(1).tolist():
        mine = []
        while count > 0 and image < len(tokens_of_image):
            count -= tokens_of_image[image]
            mine.append(image)
            image += 1
        if count != 0:
            return None
        rows.append(mine)
    return rows if image == len(tokens_of_image) else None


def share_prompts(model) -> SharedPrompts | None:
    """Wrap `model`'s Qwen-style multimodal backbone (the module holding `visual` and `get_rope_index`)."""
    for module in model.modules():
        if (hasattr(module, "visual") and hasattr(module, "get_rope_index") and hasattr(module, "language_model")
                and not hasattr(module, "lm_head")):
            return SharedPrompts(module)
    return None
