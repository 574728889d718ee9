"""Contrastive pre-training of the tiny model's eyes against generic words (CLIP-style).

The option reader's matching head scores an option by the dot product of the pooled
picture with the option word's meaning. This phase trains that score, as the reader
computes it (the head's own attention-weighted pooling, no centring; a cosine keeps the
contrastive loss well scaled), away from the language model's other paths: the vision tower and
the generic words' embeddings learn so that a picture of a gray background scores "gray" above
"navy" and "teal", an upright bar scores "bar" above "circle", and so on. Medical words take no
part: which picture "CT" names is left for GRPO.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from medr1.errors import PipelineError
from medr1.synthetic.scenes import FACTORS, Scene
from medr1.tiny.option_reader import OPTION_LETTER_DIM, picture_vectors


def factor_word_ids(tokenizer) -> dict[str, list[int]]:
    """Token ids of each factor's generic words, as they appear in options (" gray")."""
    ids = {}
    for factor, (_, generic) in FACTORS.items():
        ids[factor] = [tokenizer.convert_tokens_to_ids("Ġ" + word) for word in generic]
        if tokenizer.unk_token_id in ids[factor] or None in ids[factor]:
            raise PipelineError(f"the tokenizer lacks a single token for a generic {factor} word: {generic}")
    return ids


def train_eyesight(model, tokenizer, images: list, scenes: list[Scene], steps: int, batch_size: int,
                   learning_rate: float, seed: int, temperature: float = 4.0, progress: bool = True) -> list[float]:
    """Cross-entropy over each factor's generic words of (picture . word meaning); returns losses."""
    rng = np.random.default_rng(seed)
    word_ids = factor_word_ids(tokenizer)
    embeddings = model.get_input_embeddings().weight
    parameters = list(model.model.visual.parameters()) + [embeddings]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    losses = []
    bar = tqdm(range(steps), desc="eyesight", disable=not progress)
    for _ in bar:
        chosen = rng.integers(len(images), size=batch_size)
        pictures = picture_vectors(model, [images[i] for i in chosen], grad=True)[:, :OPTION_LETTER_DIM]
        loss = torch.zeros(())
        for factor, ids in word_ids.items():
            meanings = embeddings[ids, :OPTION_LETTER_DIM]
            logits = (temperature * torch.nn.functional.normalize(pictures, dim=-1)
                      @ torch.nn.functional.normalize(meanings, dim=-1).T)
            targets = torch.tensor([getattr(scenes[i], factor) for i in chosen])
            loss = loss + torch.nn.functional.cross_entropy(logits, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item() / len(word_ids))
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    return losses
