"""An option-reading circuit set into the tiny Qwen2-VL at construction.

Answering "CT(A), MRI(B), OCT(C)" about a picture needs three attention steps: gather what
the picture shows, bind each letter to the option text just before it, and pick the letter
whose text matches the picture. Tiny transformers take thousands of steps to discover such
circuits from scratch (we measured none within 2,000 supervised steps, with or without
images, and no image naming within 600), which a CPU budget cannot pay. A real instruct
model brings them from pre-training; ours gets them as an architectural prior. What the
picture looks like (the vision tower) and what every word means (its embedding) stay
learned, and that is exactly what the medical mapping is.

Residual dimensions (hidden_size 128):
- [0, 32) MEANING: token embeddings live here (and the tied unembedding reads them);
- [32, 64) LETTER: "the meaning of the token two back";
- [64, 96) PICTURE: the picture's features, pooled over its image tokens;
- [96, 102) LETTER_CODE: a one-hot code per option letter (the reader's vote);
- [102, 127) image-token features from the vision merger; 127: a marker set on image tokens.

Heads (their weights frozen; everything else trains):
- layer 0, head 0, binding: looks exactly two tokens back (query and key are constant
  biases, so under rotary embeddings their product depends only on distance) and copies
  that token's meaning into LETTER: at the "A" of "CT(A)" it writes the meaning of "CT";
- layer 0, head 1, pooling: attends to the tokens carrying the image marker and copies their
  features into PICTURE;
- last layer, head 0, matching: compares PICTURE (query) with every option letter's LETTER
  (key) and copies the best match's letter code (value) into the letter-code dimensions,
  which the tied unembedding reads back as that letter's logit.

Training then moves a word's embedding toward the pictures it names: the warm-up does it for
generic words ("gray"), GRPO has to do it for the medical ones ("CT").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MEANING = slice(0, 32)
LETTER = slice(32, 64)
PICTURE = slice(64, 96)
LETTER_CODE = slice(96, 102)  # one dimension per option letter A..F: the reader's vote
IMAGE_FEATURES = slice(96, 128)  # image tokens' features (the vision merger writes 102..126); 127 is the marker
MARKER_DIM = 127
MARKER_VALUE = 8.0
MARKER_FILE = "option_reader.json"
OPTION_LETTER_DIM = 31  # inside MEANING: 1 for the option letters' tokens, 0 for every other token
HIDDEN_SIZE = 128
HEAD_DIM = 32


def _rows(head: int) -> slice:
    return slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)


def _frozen_parts(model) -> list[tuple[object, tuple]]:
    """(parameter, index) pairs that belong to the circuit and must not learn."""
    text = model.model.language_model
    first, last = text.layers[0].self_attn, text.layers[-1].self_attn
    reserved = slice(LETTER.start, PICTURE.stop)
    parts = [(model.get_input_embeddings().weight, (slice(None), slice(OPTION_LETTER_DIM, None)))]
    merger_out = model.model.visual.merger.mlp[-1]
    for index in (slice(0, LETTER_CODE.stop), MARKER_DIM):
        parts += [(merger_out.weight, (index,)), (merger_out.bias, (index,))]
    parts.append((text.norm.weight, (LETTER_CODE,)))
    for layer in text.layers:
        for index in (OPTION_LETTER_DIM, reserved, LETTER_CODE, MARKER_DIM):
            parts += [(layer.self_attn.o_proj.weight, (index,)), (layer.mlp.down_proj.weight, (index,))]
    for layer in (text.layers[0], text.layers[-1]):
        # the circuit's heads read normalized inputs: their per-dimension gains stay at 1
        parts.append((layer.input_layernorm.weight, (slice(None),)))
    for attention, heads in ((first, (0, 1)), (last, (0,))):
        for head in heads:
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
                parts += [(projection.weight, (_rows(head),)), (projection.bias, (_rows(head),))]
            parts.append((attention.o_proj.weight, (slice(None), _rows(head))))
    return parts


def _set_head(attention, head: int, query=None, key=None, value_from: slice | None = None, output_to: slice | None = None):
    """Write one head: query/key as (bias, [(input slice, scale)]), value and output as copies."""
    import torch

    rows = _rows(head)
    for projection, spec in ((attention.q_proj, query), (attention.k_proj, key)):
        bias, weights = spec
        projection.weight[rows] = 0.0
        projection.bias[rows] = bias
        for source, scale in weights:
            projection.weight[rows, source] = scale * torch.eye(HEAD_DIM)
    attention.v_proj.weight[rows] = 0.0
    attention.v_proj.bias[rows] = 0.0
    attention.v_proj.weight[rows, value_from] = torch.eye(HEAD_DIM)
    attention.o_proj.weight[:, rows] = 0.0
    attention.o_proj.weight[output_to, rows] = torch.eye(HEAD_DIM)


def _offset_query_key(inv_freq, offset: int, pairs: int = 5, amplitude: float = 6.5):
    """Constant query and key whose rotary product peaks when the key is `offset` tokens back."""
    import torch

    query, key = torch.zeros(HEAD_DIM), torch.zeros(HEAD_DIM)
    half = HEAD_DIM // 2
    for i in range(pairs):
        # mrope gives text tokens one position on every axis, so pair i rotates by inv_freq[i] per token.
        angle = float(inv_freq[i]) * offset
        query[i] = amplitude
        key[i] = amplitude * math.cos(angle)
        key[i + half] = amplitude * math.sin(angle)
    return query, key


def wire_option_reader(model, letter_token_ids: list[int], offset: int = 2, sharpness: float = 3.0, loudness: float = 20.0) -> None:
    """Set the binding, pooling and matching heads and freeze them; see the module docstring."""
    import torch

    text = model.model.language_model
    if text.config.hidden_size != HIDDEN_SIZE or text.layers[0].self_attn.head_dim != HEAD_DIM:
        raise ValueError(f"the option reader needs hidden_size {HIDDEN_SIZE} and head_dim {HEAD_DIM}")
    if text.config.num_key_value_heads != text.config.num_attention_heads:
        raise ValueError("the option reader needs num_key_value_heads == num_attention_heads")
    with torch.no_grad():
        gains = (text.layers[0].input_layernorm.weight, text.layers[-1].input_layernorm.weight, text.norm.weight)
        for parameter, index in _frozen_parts(model):
            if parameter.dim() > 1 or all(parameter is not norm for norm in gains):
                parameter[index] = 0.0
        model.model.visual.merger.mlp[-1].bias[MARKER_DIM] = MARKER_VALUE
        first, last = text.layers[0].self_attn, text.layers[-1].self_attn
        query, key = _offset_query_key(text.rotary_emb.inv_freq.float(), offset)
        _set_head(first, 0, query=(query, []), key=(key, []), value_from=MEANING, output_to=LETTER)
        marker_query = torch.zeros(HEAD_DIM)
        marker_query[-1] = 5.0
        _set_head(first, 1, query=(marker_query, []), key=(torch.zeros(HEAD_DIM), [(IMAGE_FEATURES, 5.0)]),
                  value_from=IMAGE_FEATURES, output_to=PICTURE)
        _set_head(last, 0, query=(torch.zeros(HEAD_DIM), [(PICTURE, sharpness)]),
                  key=(torch.zeros(HEAD_DIM), [(LETTER, sharpness)]), value_from=MEANING, output_to=MEANING)
        # Only option letters are candidates: their tokens carry a fixed mark that the key adds
        # on top of the match, so the head cannot dodge the choice by looking elsewhere.
        model.get_input_embeddings().weight[letter_token_ids, OPTION_LETTER_DIM] = 1.0
        last.q_proj.bias[HEAD_DIM - 1] += 10.0
        last.k_proj.weight[HEAD_DIM - 1] = 0.0  # not the copied mark of the token two back
        last.k_proj.weight[HEAD_DIM - 1, OPTION_LETTER_DIM] = 12.0
        # The vote: each letter token carries a one-hot code that the tied unembedding reads back
        # as that letter's logit; the head copies the chosen letter's code, loudly.
        codes = LETTER_CODE.stop - LETTER_CODE.start
        for index, token in enumerate(letter_token_ids[:codes]):
            model.get_input_embeddings().weight[token, LETTER_CODE.start + index] = 1.0
        rows = _rows(0)
        last.v_proj.weight[rows] = 0.0
        last.v_proj.weight[rows.start : rows.start + codes, LETTER_CODE] = torch.eye(codes)
        last.o_proj.weight[:, rows] = 0.0
        last.o_proj.weight[LETTER_CODE, rows.start : rows.start + codes] = loudness * torch.eye(codes)
    freeze_option_reader(model)


def freeze_option_reader(model) -> None:
    """Zero the gradient of the circuit's weights (and of everything that would write into its
    reserved dimensions), so that training cannot unlearn the prior; call after every load."""
    import torch

    masks: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
    for parameter, index in _frozen_parts(model):
        _, mask = masks.setdefault(id(parameter), (parameter, torch.ones_like(parameter)))
        mask[index] = 0.0
    for parameter, mask in masks.values():
        parameter.register_hook(lambda gradient, mask=mask: gradient * mask.to(gradient.device, gradient.dtype))


def has_option_reader(folder) -> bool:
    return (Path(folder) / MARKER_FILE).is_file()


def mark_option_reader(folder, offset: int = 2) -> None:
    layout = {"offset": offset, "meaning": [0, 32], "letter": [32, 64], "picture": [64, 96], "marker_dim": MARKER_DIM}
    (Path(folder) / MARKER_FILE).write_text(json.dumps(layout))


def picture_vectors(model, images: list, grad: bool = False) -> torch.Tensor:
    """What the pooling head writes for each processed image: its tokens' normalized features, averaged."""
    import torch

    layer_norm = model.model.language_model.layers[0].input_layernorm
    vectors = []
    with torch.set_grad_enabled(grad):
        for image in images:
            features = model.model.get_image_features(image.pixel_values, image.grid_thw)
            features = features.pooler_output if hasattr(features, "pooler_output") else features
            tokens = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features
            vectors.append(layer_norm(tokens)[:, IMAGE_FEATURES].mean(0))
    return torch.stack(vectors)


def is_wired(model) -> bool:
    """True when the model carries the option reader (its image marker is set)."""
    return float(model.model.visual.merger.mlp[-1].bias[MARKER_DIM].detach()) == MARKER_VALUE
