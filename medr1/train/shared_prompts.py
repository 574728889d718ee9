"""A group's prompt runs through the language model once; its completions continue from the result.

GRPO scores num_generations completions of one prompt, and TRL's log-probability passes (policy,
old policy, reference) run the whole prompt again for each. `SharedPrompts` wraps a Qwen-style
multimodal backbone (`model.model` of Qwen2-VL and Qwen2.5-VL): while the trainer says how long the
prompt part of its rows is (`prompt_length`), rows with the same prompt tokens and the same pictures
run the prompt once, with its key-value cache; the cache is then indexed out to every row, and the
completions run on top of it. The hidden states are the ones a full pass gives (causal attention:
a prompt position never sees the completion), and autograd sums each copy's gradient into the one
prompt pass, as it would sum the copies'. Positions come from the backbone's own rope index over the
full rows. With gradient checkpointing (no cache in training), other backbones, or nothing shared,
the backbone runs as it is.
"""

from __future__ import annotations

from contextlib import contextmanager

from medr1.train.distinct_images import find_distinct_images
from medr1.train.distinct_prompts import distinct_rows


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
        plan = self._plan(input_ids, attention_mask, position_ids, pixel_values, image_grid_thw, mm_token_type_ids,
                          kwargs)
        if plan is None:
            return self._forward(**given, **kwargs)
        import torch

        keep, inverse, images_of = plan
        length = self.length
        positions, _ = self.backbone.get_rope_index(input_ids, mm_token_type_ids=mm_token_type_ids,
                                                    image_grid_thw=image_grid_thw, attention_mask=attention_mask)
        patches = image_grid_thw.prod(-1).tolist()
        blocks = pixel_values.split(patches)
        kept_images = [image for row in keep for image in images_of[row]]
        settings = {**kwargs, "use_cache": True}
        prompt = self._forward(
            input_ids=input_ids[keep, :length], attention_mask=attention_mask[keep, :length],
            position_ids=positions[:, keep, :length], pixel_values=torch.cat([blocks[i] for i in kept_images]),
            image_grid_thw=image_grid_thw[kept_images], mm_token_type_ids=mm_token_type_ids[keep, :length], **settings)
        rows = torch.tensor(inverse, device=input_ids.device)
        cache = prompt.cache
        cache.reorder_cache(rows)  # each row gets its prompt's keys and values (index_select: autograd sums back)
        completion = self._forward(input_ids=input_ids[:, length:], attention_mask=attention_mask,
                                   position_ids=positions[:, :, length:], cache=cache, **settings)
        self.shared_rows += len(inverse) - len(keep)
        hidden = torch.cat([prompt.last_hidden_state.index_select(0, rows), completion.last_hidden_state], dim=1)
        return type(completion)(last_hidden_state=hidden)

    def _plan(self, input_ids, attention_mask, position_ids, pixel_values, image_grid_thw, mm_token_type_ids,
              kwargs):
        """(rows kept, each row's kept row, each row's images) when rows share prompts, else None."""
        length = self.length
        if (length is None or input_ids is None or attention_mask is None or position_ids is not None
                or pixel_values is None or image_grid_thw is None or mm_token_type_ids is None
                or kwargs.get("inputs_embeds") is not None or kwargs.get("cache") is not None
                or _checkpointing(self.backbone) or not 0 < length < input_ids.shape[1]):
            return None
        images_of = _images_per_row(input_ids[:, :length], image_grid_thw, self.backbone)
        if images_of is None:
            return None
        distinct = find_distinct_images(pixel_values, image_grid_thw)
        image_key = distinct.inverse if distinct is not None else list(range(len(image_grid_thw)))
        prompts, masks = input_ids[:, :length].tolist(), attention_mask[:, :length].tolist()
        keys = [(tuple(prompts[row]), tuple(masks[row]), tuple(image_key[i] for i in images_of[row]))
                for row in range(len(prompts))]
        keep, inverse = distinct_rows(keys)
        return None if len(keep) == len(keys) else (keep, inverse, images_of)


def _checkpointing(backbone) -> bool:
    return any(getattr(module, "gradient_checkpointing", False) for module in backbone.modules())


def _images_per_row(prompt_ids, image_grid_thw, backbone) -> list[list[int]] | None:
    """Which images (indices into image_grid_thw) each row's prompt holds, from its image tokens."""
    config = backbone.config
    token = getattr(config, "image_token_id", None)
    merge = getattr(getattr(config, "vision_config", None), "spatial_merge_size", None)
    if token is None or merge is None:
        return None
    tokens_of_image = (image_grid_thw.prod(-1) // merge**2).tolist()
    rows, image = [], 0
    for count in (prompt_ids == token).sum(1).tolist():
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
