"""Prompts cut after their image, so that the questions about one image share its computed head.

A prompt is the system prompt, the image and then the question. Up to the end of the image,
the prompts of every question about that image are the same tokens, so the keys and values of
that head are the same too (a token's state depends only on the tokens before it). A batch then
computes each distinct head once and every row's own text after it; with five questions per
image (32 of about 90 tokens are the head) that is about a quarter fewer prefill tokens. Masks
and positions are those of the whole prompt, so the result is the plain prompt's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medr1.errors import PipelineError
from medr1.model.encoding import ProcessedImage, encode


@dataclass(frozen=True)
class Prompts:
    """A batch of prompts as distinct heads and each row's text after its head."""

    heads: dict[str, torch.Tensor]  # left-padded model inputs of the heads, one image each
    head_of_row: torch.Tensor  # (rows,): the head each row continues
    text_ids: torch.Tensor  # (rows, width): each row's text after its head, left-padded
    text_mask: torch.Tensor  # (rows, width): 1 on text, 0 on padding
    head_keys: list[str]  # each head's image key
    head_images: list[ProcessedImage]

    def to(self, device) -> Prompts:
        return Prompts({name: value.to(device) for name, value in self.heads.items()}, self.head_of_row.to(device),
                       self.text_ids.to(device), self.text_mask.to(device), self.head_keys, self.head_images)

    def row_tokens(self) -> list[list[int]]:
        """Each row's whole prompt, padding left out."""
        heads = [ids[mask.bool()].tolist() for ids, mask in zip(self.heads["input_ids"], self.heads["attention_mask"])]
        texts = [ids[mask.bool()].tolist() for ids, mask in zip(self.text_ids, self.text_mask)]
        return [heads[head] + text for head, text in zip(self.head_of_row.tolist(), texts)]


def split_prompts(processor, prompt_ids: list[list[int]], images: list[ProcessedImage],
                  image_keys: list[str]) -> Prompts:
    """Each prompt (token ids, one image each) cut after its image's last token; rows with the same
    image and the same tokens up to there share one head."""
    image_token = processor.image_token_id
    heads: dict[tuple, int] = {}
    head_ids, head_keys, head_images, head_of_row, texts = [], [], [], [], []
    for ids, image, key in zip(prompt_ids, images, image_keys, strict=True):
        kinds = [token == image_token for token in ids]
        runs = sum(1 for index, kind in enumerate(kinds) if kind and (index == 0 or not kinds[index - 1]))
        if runs != 1:
            raise PipelineError(f"a prompt has {runs} images; evaluation asks about one image per question")
        cut = len(ids) - kinds[::-1].index(True)
        if cut == len(ids):
            raise PipelineError("a prompt ends with its image; the chat template's generation prompt should follow it")
        head = (key, tuple(ids[:cut]))
        if head not in heads:
            heads[head] = len(head_ids)
            head_ids.append(ids[:cut])
            head_keys.append(key)
            head_images.append(image)
        head_of_row.append(heads[head])
        texts.append(ids[cut:])
    width = max(len(text) for text in texts)
    pad = processor.tokenizer.pad_token_id
    return Prompts(
        heads=encode(processor, head_ids, head_images, padding_side="left"),
        head_of_row=torch.tensor(head_of_row),
        text_ids=torch.tensor([[pad] * (width - len(text)) + text for text in texts],
                              dtype=torch.long).view(len(texts), width),
        text_mask=torch.tensor([[0] * (width - len(text)) + [1] * len(text) for text in texts],
                               dtype=torch.long).view(len(texts), width),
        head_keys=head_keys,
        head_images=head_images,
    )
