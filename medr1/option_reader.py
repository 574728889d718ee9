"""An option-reading circuit set into the tiny Qwen2-VL at construction.

Answering "CT(A), MRI(B), OCT(C)" with a letter needs two attention steps: bind each
letter to the option text just before it, then find the option whose text matches what the
model sees. Tiny transformers take thousands of steps to discover that circuit from scratch
(we measured none within 2,000 supervised steps, with or without images), which a CPU budget
cannot pay. A real instruct model brings it from pre-training; ours gets it as an
architectural prior, while what it sees and what the words mean stay learned:

- residual dimensions [0, 32) carry token meaning (the embeddings start there, and the tied
  unembedding reads them), [32, 64) carry "the meaning of the token two back";
- layer 0, head 0 looks exactly `offset` tokens back (query and key are constant biases, so
  under rotary embeddings their product depends only on distance) and copies that token's
  meaning into [32, 64): at the "A" of "CT(A)" it writes the meaning of "CT";
- the last layer's head 0 matches the answer position's meaning (query) against every
  position's [32, 64) (key) and adds the best match's own meaning (value): the letter "A"
  itself, which the tied unembedding turns into the answer.

What is learned: the picture's concept at the answer position (the warm-up's naming
questions put it in the meaning of the generic word, "gray"), and the meaning of every
word: GRPO has to move "CT" to where the picture of a CT points.
"""

from __future__ import annotations

import math

MEANING = slice(0, 32)
LETTER = slice(32, 64)


def _binding_head(attention, inv_freq, offset: int, head: int, pairs: int = 5, amplitude: float = 6.5) -> None:
    import torch

    head_dim = attention.head_dim
    half = head_dim // 2
    query = torch.zeros(head_dim)
    key = torch.zeros(head_dim)
    for i in range(min(pairs, half)):
        # mrope gives text tokens one position on every axis, so pair i rotates by inv_freq[i] per token.
        angle = float(inv_freq[i]) * offset
        query[i] = amplitude
        key[i] = amplitude * math.cos(angle)
        key[i + half] = amplitude * math.sin(angle)
    rows = slice(head * head_dim, (head + 1) * head_dim)
    attention.q_proj.weight[rows] = 0.0
    attention.q_proj.bias[rows] = query
    attention.k_proj.weight[rows] = 0.0
    attention.k_proj.bias[rows] = key
    # value = the meaning dimensions of the token looked at; output = the letter dimensions.
    attention.v_proj.weight[rows] = 0.0
    attention.v_proj.bias[rows] = 0.0
    attention.v_proj.weight[rows, MEANING] = torch.eye(head_dim)
    columns = slice(head * head_dim, (head + 1) * head_dim)
    attention.o_proj.weight[:, columns] = 0.0
    attention.o_proj.weight[LETTER, columns] = torch.eye(head_dim)


def _matching_head(attention, head: int, sharpness: float = 2.0) -> None:
    import torch

    head_dim = attention.head_dim
    rows = slice(head * head_dim, (head + 1) * head_dim)
    for projection, source in ((attention.q_proj, MEANING), (attention.k_proj, LETTER), (attention.v_proj, MEANING)):
        projection.weight[rows] = 0.0
        projection.bias[rows] = 0.0
        projection.weight[rows, source] = torch.eye(head_dim) * (sharpness if projection is not attention.v_proj else 1.0)
    columns = slice(head * head_dim, (head + 1) * head_dim)
    attention.o_proj.weight[:, columns] = 0.0
    attention.o_proj.weight[MEANING, columns] = torch.eye(head_dim)


MARKER = "option_reader.json"


def _frozen_parts(model) -> list[tuple[object, tuple]]:
    """(parameter, index) pairs that belong to the circuit and must not learn."""
    text = model.model.language_model
    first, last = text.layers[0].self_attn, text.layers[-1].self_attn
    head = slice(0, first.head_dim)
    parts = [(model.get_input_embeddings().weight, (slice(None), LETTER))]
    merger_out = model.model.visual.merger.mlp[-1]
    parts += [(merger_out.weight, (LETTER,)), (merger_out.bias, (LETTER,))]
    for layer in text.layers:
        parts += [(layer.self_attn.o_proj.weight, (LETTER,)), (layer.mlp.down_proj.weight, (LETTER,))]
    for attention in (first, last):
        for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
            parts += [(projection.weight, (head,)), (projection.bias, (head,))]
        parts.append((attention.o_proj.weight, (slice(None), head)))
    return parts


def freeze_option_reader(model) -> None:
    """Zero the gradient of the circuit's weights (and of everything that would write into its
    letter dimensions), so that training cannot unlearn the prior; call after every load."""
    import torch

    masks: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
    for parameter, index in _frozen_parts(model):
        _, mask = masks.setdefault(id(parameter), (parameter, torch.ones_like(parameter)))
        mask[index] = 0.0
    for parameter, mask in masks.values():
        parameter.register_hook(lambda gradient, mask=mask: gradient * mask.to(gradient.device, gradient.dtype))


def wire_option_reader(model, offset: int = 2) -> None:
    """Set the binding head (layer 0) and the matching head (last layer); see the module docstring."""
    import torch

    text = model.model.language_model
    if text.layers[0].self_attn.head_dim != MEANING.stop - MEANING.start:
        raise ValueError("the option reader needs head_dim 32 (hidden_size / num_attention_heads)")
    with torch.no_grad():
        for parameter, index in _frozen_parts(model):
            parameter[index] = 0.0
        model.get_input_embeddings().weight[:, LETTER.stop :] = 0.0  # token meaning starts in its own dimensions
        _binding_head(text.layers[0].self_attn, text.rotary_emb.inv_freq.float(), offset, head=0)
        _matching_head(text.layers[-1].self_attn, head=0)
    freeze_option_reader(model)


def has_option_reader(folder) -> bool:
    from pathlib import Path

    return (Path(folder) / MARKER).is_file()


def mark_option_reader(folder, offset: int = 2) -> None:
    import json
    from pathlib import Path

    (Path(folder) / MARKER).write_text(json.dumps({"offset": offset, "meaning": [0, 32], "letter": [32, 64]}))
