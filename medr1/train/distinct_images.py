"""The vision tower runs once per distinct image of a forward pass, and every copy gets its features.

A GRPO batch holds each question num_generations times, so a Qwen-style vision tower would encode
every image that many times in each forward (generation's prefill, the policy, the old policy and the
reference). `encode_each_image_once(model)` hooks the tower: before it runs, identical images among
its inputs (same grid, same pixels, compared exactly) are reduced to one each; after it runs, the
features are expanded back to the original order by indexing. Autograd sums the gradients of the
copies into the one encoding, which is what backpropagating through each copy would give.

Which images of a forward are the same is decided once per forward: by the hook over the tower's pixel
rows, or by the caller that already compared the same pixels (medr1/train/shared_prompts.py hands its
decision in with `deciding`); generation's prefill reads the hook's decision of the encoding before it
(`last`) instead of comparing the encoded features again.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

SAMPLED_VALUES = 64  # values of each block its fingerprint holds


@dataclass
class DistinctImages:
    """Which images a forward's inputs hold once: `keep` (indices into the inputs) and, per input
    image, the position of its distinct copy in `keep`."""

    keep: list[int]
    inverse: list[int]
    sizes: list[int]  # rows of each input image (pixel rows, or feature rows)


def find_distinct_images(pixel_values, grid_thw) -> DistinctImages | None:
    """Identical images among `pixel_values` (rows split per image by `grid_thw`), or None when
    every image is distinct (nothing to save)."""
    return find_distinct_blocks(pixel_values.split(grid_thw.prod(-1).tolist()), [tuple(g) for g in grid_thw.tolist()])


def find_distinct_blocks(blocks, kinds: list) -> DistinctImages | None:
    """Identical blocks among `blocks` (one tensor of rows per image; two are the same when their kinds,
    such as image grids, are equal and their values are exactly equal), or None when every block is
    distinct."""
    import torch

    if len(blocks) < 2:
        return None
    # Cheap fingerprints (a strided sample of each block's values, gathered in one transfer) group the
    # candidates; torch.equal then decides, so a collision costs a comparison, never a wrong answer.
    samples = [block.detach().reshape(-1)[::max(1, block.numel() // SAMPLED_VALUES)][:SAMPLED_VALUES]
               for block in blocks]
    values, start, prints = torch.cat(samples).tolist(), 0, []
    for block, sample in zip(blocks, samples, strict=True):
        prints.append((block.shape, *values[start:start + len(sample)]))
        start += len(sample)
    keep: list[int] = []
    inverse: list[int] = []
    candidates: dict[tuple, list[int]] = {}
    for index, block in enumerate(blocks):
        key = (kinds[index], prints[index])
        for position in candidates.get(key, ()):
            if torch.equal(blocks[keep[position]], block):
                inverse.append(position)
                break
        else:
            candidates.setdefault(key, []).append(len(keep))
            inverse.append(len(keep))
            keep.append(index)
    return None if len(keep) == len(blocks) else DistinctImages(keep, inverse, [len(block) for block in blocks])


def expand_rows(features, sizes: list[int], inverse: list[int]):
    """`features` holds one block of `sizes[i]` rows per distinct image; the blocks in `inverse` order."""
    import torch

    blocks = features.split(sizes)
    return torch.cat([blocks[position] for position in inverse])


class EachImageOnce:
    """Forward hooks on a vision tower called as `tower(pixel_values, grid_thw=...)` (Qwen2-VL,
    Qwen2.5-VL): the tower sees each distinct image once, its callers see every image."""

    def __init__(self, tower):
        self.plan: DistinctImages | None = None
        self.last: tuple[list[int], DistinctImages | None] | None = None  # the last call's (pixel rows of each
        # image, decision), for generation's prefill that follows its encoding
        self._decided: tuple[list[int], DistinctImages | None] | None = None
        self.handles = [tower.register_forward_pre_hook(self._before, with_kwargs=True),
                        tower.register_forward_hook(self._after, with_kwargs=True)]

    @contextmanager
    def deciding(self, sizes: list[int], plan: DistinctImages | None):
        """During the block, a tower call over images of these pixel rows (`sizes`) takes `plan` (None:
        every image distinct) instead of comparing the pixels again."""
        self._decided = (sizes, plan)
        try:
            yield
        finally:
            self._decided = None

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def _before(self, module, args, kwargs):
        pixel_values = args[0] if args else kwargs.get("hidden_states")
        grid_thw = args[1] if len(args) > 1 else kwargs.get("grid_thw")
        if pixel_values is None or grid_thw is None:
            self.plan = None
            return None
        sizes = grid_thw.prod(-1).tolist()
        decided = self._decided
        self.plan = decided[1] if decided is not None and decided[0] == sizes else find_distinct_images(
            pixel_values, grid_thw)
        self.last = (sizes, self.plan)
        if self.plan is None:
            return None
        import torch

        chunks = pixel_values.split(self.plan.sizes)
        distinct_pixels = torch.cat([chunks[index] for index in self.plan.keep])
        distinct_grid = grid_thw[self.plan.keep]
        rest = args[2:] if len(args) > 2 else ()
        kwargs = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "grid_thw")}
        return (distinct_pixels, distinct_grid, *rest), kwargs

    def _after(self, module, args, kwargs, output):
        plan, self.plan = self.plan, None
        if plan is None:
            return None
        patches = [plan.sizes[index] for index in plan.keep]
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is not None and hidden.shape[0] == sum(patches):
            output.last_hidden_state = expand_rows(hidden, patches, plan.inverse)
        pooled = getattr(output, "pooler_output", None)
        if pooled is not None:  # merged patches: a fixed number of patches per row (spatial_merge_size ** 2)
            ratio = sum(patches) // pooled.shape[0]
            output.pooler_output = expand_rows(pooled, [p // ratio for p in patches], plan.inverse)
        return output


def vision_tower(model):
    """The model's Qwen-style vision tower (a module named `visual`), or None."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "visual":
            return module
    return None


def encode_each_image_once(model) -> EachImageOnce | None:
    """Hook `model`'s vision tower (see the module's docstring); None when it has none we know."""
    tower = vision_tower(model)
    return None if tower is None else EachImageOnce(tower)
