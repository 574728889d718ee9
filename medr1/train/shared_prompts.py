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
generate). With gradient checkpointing (no cache in training: the trainer then gives no prompt length),
other backbones, or rows that cannot be split, the backbone runs as it is.

One path for every log-probability pass: wherever the rows can be split into prompt and completions,
the pass runs the language model twice (each distinct prompt, then the completions on its cache), also
when no prompt repeats (each row is then its own prompt). So the policy, old-policy and reference passes
compute a row the same way whatever their micro-batch holds, and in a distributed run, where DeepSpeed
ZeRO-3 gathers a module's parameters from all ranks at each call, every rank makes the same calls: the
ranks agree whether all of them can split their rows (one all-reduce per pass), and take TRL's full
rows together otherwise. The prefill and the vision tower run once per forward either way.

`SharedPrompts.installed()` wraps the backbone's `forward` for the block and puts the class's back
after it (medr1/train/grpo_trainer.py enters it around each step's work only).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import NamedTuple

from medr1.train.distinct_images import DistinctImages, EachImageOnce, find_distinct_blocks
from medr1.train.distinct_prompts import distinct_rows


class ImageBlocks(NamedTuple):
    """The images of a forward's rows, and which of them are the same (decided once for the forward)."""

    blocks: list  # one tensor of rows per image: its pixel rows, or its encoded features
    tokens: list[int]  # the image's placeholder tokens in the prompt
    sizes: list[int]  # the image's pixel rows
    same: DistinctImages | None  # which images are the same; None: every one is distinct

    def key(self, image: int) -> int:
        """Equal for the same picture."""
        return image if self.same is None else self.same.inverse[image]

    def among(self, images: list[int]) -> DistinctImages | None:
        """The same decision for a selection of these images, in that order."""
        keep, inverse = distinct_rows([self.key(image) for image in images])
        sizes = [self.sizes[image] for image in images]
        return DistinctImages(keep, inverse, sizes) if len(keep) < len(images) else None


class Plan(NamedTuple):
    keep: list[int]  # the rows that run
    inverse: list[int]  # per row, its kept row's position in `keep`
    kept_images: list[int]  # the kept rows' images, in order
    blocks: list  # ImageBlocks.blocks

    def kept_blocks(self) -> list:
        return [self.blocks[image] for image in self.kept_images]

    @property
    def shares(self) -> bool:
        """Some rows repeat another's prompt (else every row is its own)."""
        return len(self.keep) < len(self.inverse)


class SharedPrompts:
    def __init__(self, backbone, images: EachImageOnce | None = None):
        self.backbone = backbone
        self.images = images  # the hooks on this backbone's vision tower, which share its decisions
        self.length: int | None = None
        self._forward = None  # what the backbone ran before `installed`

    @contextmanager
    def installed(self):
        """The backbone's `forward` is this object's during the block, and what it was again after it."""
        before = vars(self.backbone).get("forward")  # a forward another library set on the instance, if any
        self._forward = self.backbone.forward
        self.backbone.forward = self.forward
        try:
            yield self
        finally:
            if before is None:
                del self.backbone.forward  # the class's method again
            else:
                self.backbone.forward = before

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
        if log_probabilities:  # every rank takes part in the agreement, whatever its rows hold
            images = self._pixel_blocks(given)
            plan = self._plan(self.length, given, kwargs, images)
            if every_rank_can_split(plan is not None, input_ids.device):
                return self._prompt_then_completions(plan, given, kwargs, images)
            with self._tower_takes(images):
                return self._forward(**given, **kwargs)
        if prefill:  # one backbone call whether shared or not: no rank needs to agree
            plan = self._plan(tokens, given, kwargs, self._encoded_blocks(kwargs), position_ids)
            if plan is not None and plan.shares:
                return self._prefill(plan, given, kwargs)
        return self._forward(**given, **kwargs)

    def _prompt_then_completions(self, plan: Plan, given, kwargs, images: ImageBlocks):
        """A log-probability pass: each distinct prompt once, its cache indexed out, completions on top."""
        import torch

        length, input_ids, attention_mask = self.length, given["input_ids"], given["attention_mask"]
        grid = given["image_grid_thw"]
        positions, _ = self.backbone.get_rope_index(input_ids, mm_token_type_ids=given["mm_token_type_ids"],
                                                    image_grid_thw=grid, attention_mask=attention_mask)
        settings = {**kwargs, "use_cache": True}
        with self._tower_takes(images, plan.kept_images):
            prompt = self._forward(**_kept_rows(plan, given, positions, length),
                                   image_grid_thw=grid[plan.kept_images], pixel_values=torch.cat(plan.kept_blocks()),
                                   **settings)
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
        return output.cache, output.last_hidden_state.index_select(0, rows)

    def _tower_takes(self, images: ImageBlocks | None, selection: list[int] | None = None):
        """The vision tower's call in the block takes this forward's decision over `images` (or over the
        `selection` of them that it is given) instead of comparing the pixels again."""
        if self.images is None or images is None:
            return nullcontext()
        if selection is None:
            return self.images.deciding(images.sizes, images.same)
        return self.images.deciding([images.sizes[i] for i in selection], images.among(selection))

    def _pixel_blocks(self, given) -> ImageBlocks | None:
        """The images of a log-probability pass: their pixel rows, compared with their grids."""
        grid = given["image_grid_thw"]
        merge = getattr(getattr(self.backbone.config, "vision_config", None), "spatial_merge_size", None)
        if given["pixel_values"] is None or grid is None or merge is None:
            return None
        sizes = grid.prod(-1).tolist()
        blocks = given["pixel_values"].split(sizes)
        return ImageBlocks(blocks, [size // merge**2 for size in sizes], sizes,
                           find_distinct_blocks(blocks, [tuple(g) for g in grid.tolist()]))

    def _encoded_blocks(self, kwargs) -> ImageBlocks | None:
        """The images generation has already encoded (`mm_encoder_outputs`): their features, and which are
        the same as the tower's hooks decided when encoding them (None when that is not known)."""
        outputs = kwargs.get("mm_encoder_outputs") or {}
        last = self.images.last if self.images is not None else None
        if outputs.get("image") is None or outputs.get("video") is not None or last is None:
            return None
        pooled, (sizes, same) = list(outputs["image"].pooler_output), last
        tokens = [len(block) for block in pooled]
        merge = self.backbone.config.vision_config.spatial_merge_size
        if sizes != [count * merge**2 for count in tokens]:
            return None  # not the encoding the hooks saw
        return ImageBlocks(pooled, tokens, sizes, same)

    def _plan(self, length: int, given, kwargs, images: ImageBlocks | None, positions=None) -> Plan | None:
        """Which rows run when rows share their first `length` tokens, mask and images (and
        `positions`, where given); None where the rows cannot be split into prompt and completions here
        (a plan whose every row is its own prompt when they can, but none repeats)."""
        input_ids, attention_mask = given["input_ids"], given["attention_mask"]
        token = getattr(self.backbone.config, "image_token_id", None)
        if (images is None or token is None or given["mm_token_type_ids"] is None
                or (attention_mask is not None and attention_mask.dim() != 2)
                or kwargs.get("inputs_embeds") is not None or kwargs.get("pixel_values_videos") is not None):
            return None
        images_of = _images_per_row(input_ids[:, :length] == token, images.tokens)
        if images_of is None:
            return None
        prompts = input_ids[:, :length].tolist()
        masks = attention_mask[:, :length].tolist() if attention_mask is not None else [None] * len(prompts)
        where = positions[:, :, :length].transpose(0, 1).flatten(1).tolist() if positions is not None \
            else [None] * len(prompts)
        keys = [(tuple(prompts[row]), masks[row] and tuple(masks[row]), where[row] and tuple(where[row]),
                 tuple(images.key(i) for i in images_of[row])) for row in range(len(prompts))]
        keep, inverse = distinct_rows(keys)
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


def every_rank_can_split(can: bool, device) -> bool:
    """Whether this pass runs prompt then completions: where this rank's rows can be split, and in a
    distributed run where every rank's can (see the module's docstring)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        import torch

        flag = torch.tensor([int(can)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag[0])
    return can


def share_prompts(model, images: EachImageOnce | None = None) -> SharedPrompts | None:
    """A SharedPrompts for `model`'s Qwen-style multimodal backbone (the module holding `visual` and
    `get_rope_index`), not yet installed, sharing its decisions with `images` (the hooks on its vision
    tower); None when it has none."""
    for module in model.modules():
        if (hasattr(module, "visual") and hasattr(module, "get_rope_index") and hasattr(module, "language_model")
                and not hasattr(module, "lm_head")):
            return SharedPrompts(module, images)
    return None
