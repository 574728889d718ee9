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
- [0, 32) MEANING: token embeddings live here;
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

import math
from typing import TYPE_CHECKING

from medr1.config import ParamsError

if TYPE_CHECKING:
    import torch

MEANING = slice(0, 32)
LETTER = slice(32, 64)
PICTURE = slice(64, 96)
LETTER_CODE = slice(96, 102)  # one dimension per option letter A..F: the reader's vote
IMAGE_FEATURES = slice(96, 128)  # image tokens' features (the vision merger writes 102..126); 127 is the marker
MARKER_DIM = 127
MARKER_VALUE = 8.0
OPTION_LETTER_DIM = 31  # inside MEANING: 1 for the option letters' tokens, 0 for every other token
HIDDEN_SIZE = 128
HEAD_DIM = 32


def _rows(head: int) -> slice:
    return slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)


def _reserved_parts(model) -> list[tuple[object, tuple]]:
    """(parameter, index) pairs that belong to the circuit: zeroed before wiring, never trained."""
    text = model.model.language_model
    first, last = text.layers[0].self_attn, text.layers[-1].self_attn
    reserved = slice(LETTER.start, PICTURE.stop)
    parts = [(model.get_input_embeddings().weight, (slice(None), slice(OPTION_LETTER_DIM, None)))]
    merger_out = model.model.visual.merger.mlp[-1]
    for index in (slice(0, LETTER_CODE.stop), MARKER_DIM):
        parts += [(merger_out.weight, (index,)), (merger_out.bias, (index,))]
    for layer in text.layers:
        for index in (OPTION_LETTER_DIM, reserved, LETTER_CODE, MARKER_DIM):
            parts += [(layer.self_attn.o_proj.weight, (index,)), (layer.mlp.down_proj.weight, (index,))]
    for attention, heads in ((first, (0, 1)), (last, (0,))):
        for head in heads:
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
                parts += [(projection.weight, (_rows(head),)), (projection.bias, (_rows(head),))]
            parts.append((attention.o_proj.weight, (slice(None), _rows(head))))
    return parts


def _gain_parts(model) -> list[tuple[object, tuple]]:
    """Norm gains the circuit reads through: kept at their initial 1, never trained."""
    text = model.model.language_model
    gains = [(layer.input_layernorm.weight, (slice(None),)) for layer in (text.layers[0], text.layers[-1])]
    return [*gains, (text.norm.weight, (LETTER_CODE,))]


def _set_head(attention, head: int, query, key, value_from: slice, output_to: slice, output_scale: float = 1.0):
    """Write one head: query/key as (bias, [(input slice, scale)]); the value copies `value_from`
    into the head's first dimensions, the output copies them (times `output_scale`) to `output_to`."""
    import torch

    rows = _rows(head)
    for projection, spec in ((attention.q_proj, query), (attention.k_proj, key)):
        bias, weights = spec
        projection.weight[rows] = 0.0
        projection.bias[rows] = bias
        for source, scale in weights:
            projection.weight[rows, source] = scale * torch.eye(HEAD_DIM)
    width = value_from.stop - value_from.start
    used = slice(rows.start, rows.start + width)
    attention.v_proj.weight[rows] = 0.0
    attention.v_proj.bias[rows] = 0.0
    attention.v_proj.weight[used, value_from] = torch.eye(width)
    attention.o_proj.weight[:, rows] = 0.0
    attention.o_proj.weight[output_to, used] = output_scale * torch.eye(width)


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


def wire_option_reader(model, letter_token_ids: list[int], offset: int = 2, sharpness: float = 3.0,
                       loudness: float = 20.0) -> None:
    """Set the binding, pooling and matching heads and freeze them; see the module docstring."""
    import torch

    text = model.model.language_model
    if text.config.hidden_size != HIDDEN_SIZE or text.layers[0].self_attn.head_dim != HEAD_DIM:
        raise ParamsError(f"the option reader needs hidden_size {HIDDEN_SIZE} and head_dim {HEAD_DIM}")
    if text.config.num_key_value_heads != text.config.num_attention_heads:
        raise ParamsError("the option reader needs num_key_value_heads == num_attention_heads")
    with torch.no_grad():
        for parameter, index in _reserved_parts(model):
            parameter[index] = 0.0
        model.model.visual.merger.mlp[-1].bias[MARKER_DIM] = MARKER_VALUE
        first, last = text.layers[0].self_attn, text.layers[-1].self_attn
        query, key = _offset_query_key(text.rotary_emb.inv_freq.float(), offset)
        _set_head(first, 0, query=(query, []), key=(key, []), value_from=MEANING, output_to=LETTER)
        marker_query = torch.zeros(HEAD_DIM)
        marker_query[-1] = 5.0
        _set_head(first, 1, query=(marker_query, []), key=(torch.zeros(HEAD_DIM), [(IMAGE_FEATURES, 5.0)]),
                  value_from=IMAGE_FEATURES, output_to=PICTURE)
        # The vote: the head copies the chosen letter's one-hot code, loudly, into the code
        # dimensions, which the tied unembedding reads back as that letter's logit.
        _set_head(last, 0, query=(torch.zeros(HEAD_DIM), [(PICTURE, sharpness)]),
                  key=(torch.zeros(HEAD_DIM), [(LETTER, sharpness)]), value_from=LETTER_CODE,
                  output_to=LETTER_CODE, output_scale=loudness)
        # Only option letters are candidates: their tokens carry a fixed mark that the key adds
        # on top of the match, so the head cannot dodge the choice by looking elsewhere.
        model.get_input_embeddings().weight[letter_token_ids, OPTION_LETTER_DIM] = 1.0
        last.q_proj.bias[HEAD_DIM - 1] += 10.0
        last.k_proj.weight[HEAD_DIM - 1] = 0.0  # not the copied mark of the token two back
        last.k_proj.weight[HEAD_DIM - 1, OPTION_LETTER_DIM] = 12.0
        codes = LETTER_CODE.stop - LETTER_CODE.start
        for index, token in enumerate(letter_token_ids[:codes]):
            model.get_input_embeddings().weight[token, LETTER_CODE.start + index] = 1.0
    freeze_option_reader(model)


def freeze_option_reader(model) -> None:
    """Zero the gradient of the circuit's weights (and of everything that would write into its
    reserved dimensions), so that training cannot unlearn the prior; call after every load."""
    import torch

    masks: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
    for parameter, index in _reserved_parts(model) + _gain_parts(model):
        _, mask = masks.setdefault(id(parameter), (parameter, torch.ones_like(parameter)))
        mask[index] = 0.0
    for parameter, mask in masks.values():
        mask_gradient(parameter, mask)


def mask_gradient(parameter, mask: torch.Tensor):
    """Multiply `parameter`'s gradient by `mask` (0 = frozen); returns the hook's handle."""
    return parameter.register_hook(lambda gradient: gradient * mask.to(gradient.device, gradient.dtype))


def picture_vectors(model, images: list, grad: bool = False) -> torch.Tensor:
    """What the pooling head writes into PICTURE for each processed image: its image tokens'
    normalized features, weighted by the head's own attention (rotary turns are negligible
    for its constant query, which sits on the slowest frequency)."""
    import torch

    first = model.model.language_model.layers[0]
    rows = _rows(1)
    query = first.self_attn.q_proj.bias[rows]
    pixels = torch.cat([image.pixel_values for image in images])
    grids = torch.cat([image.grid_thw for image in images])
    with torch.set_grad_enabled(grad):
        features = model.model.get_image_features(pixels, grids)
        per_image = features.pooler_output if hasattr(features, "pooler_output") else features
        pooled = []
        for tokens in per_image:
            normed = first.input_layernorm(tokens)
            weights = torch.softmax(first.self_attn.k_proj(normed)[:, rows] @ query / math.sqrt(HEAD_DIM), dim=0)
            pooled.append(weights @ normed[:, IMAGE_FEATURES])
        return torch.stack(pooled)


def is_wired(model) -> bool:
    """True when the model carries the option reader (its image marker is set)."""
    return float(model.model.visual.merger.mlp[-1].bias[MARKER_DIM].detach()) == MARKER_VALUE
