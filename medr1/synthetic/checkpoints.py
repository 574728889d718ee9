"""Checkpoint folders shaped like a Qwen2-VL / Qwen2.5-VL Instruct download, built here without a hub.

`write_checkpoint` saves a small randomly initialised model of either family with what a real
download holds beside it: a byte-level BPE tokenizer of realistic size (Qwen2's pre-tokenizer, its
special tokens; `<think>`, `<answer>` and the option letters are ordinary multi-token text, as in
the real vocabulary), the family's chat template, image-processor settings and generation defaults
(medr1/model/qwen_files.py). Tests and benchmarks point `base_model.kind: local` at such a folder to
run the path that users take with a real checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medr1.model.qwen_files import CHAT_TEMPLATE, GENERATION_DEFAULTS, IMAGE_PROCESSOR, SPECIAL_TOKENS, Family


def train_qwen_tokenizer(texts: Iterable[str], vocab_size: int, added_tokens: tuple[str, ...] = ()):
    """Byte-level BPE (Qwen2's scheme) trained on `texts`, with Qwen2-VL's special tokens and
    `added_tokens` as single ordinary tokens; at most `vocab_size` tokens in all."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS) - len(added_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    vocab = backend.get_vocab()
    merges = [tuple(pair) for pair in json.loads(backend.to_str())["model"]["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    if added_tokens:
        tokenizer.add_tokens(list(added_tokens))
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@dataclass(frozen=True)
class Sizes:
    """Layer sizes of a synthetic checkpoint (Qwen2-VL-2B: hidden 1536, 28 layers, vision 32 x 1280)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_num_heads: int = 2
    max_position_embeddings: int = 4096
    embedding_rows: int = 0  # pad the embeddings to this many rows (Qwen2-VL ships 151,936); 0: the vocabulary's


def general_text() -> list[str]:
    """English prose and code that every Python installation carries (pydoc's topic texts): enough
    for a BPE vocabulary of realistic size, the same on every machine with the same Python."""
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def _config(family: Family, tokenizer, sizes: Sizes):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    half = sizes.hidden_size // sizes.num_attention_heads // 2
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]  # M-RoPE (temporal, height, width)
    token_id = tokenizer.convert_tokens_to_ids
    text = {
        "vocab_size": max(len(tokenizer), sizes.embedding_rows), "hidden_size": sizes.hidden_size,
        "intermediate_size": sizes.intermediate_size,
        "num_hidden_layers": sizes.num_hidden_layers, "num_attention_heads": sizes.num_attention_heads,
        "num_key_value_heads": sizes.num_key_value_heads, "max_position_embeddings": sizes.max_position_embeddings,
        "rope_parameters": {"rope_type": "default", "mrope_section": section, "rope_theta": 1000000.0},
        "bos_token_id": token_id("<|endoftext|>"), "eos_token_id": token_id("<|im_end|>"),
        "pad_token_id": token_id("<|endoftext|>"),
    }
    tokens = {"image_token_id": token_id("<|image_pad|>"), "video_token_id": token_id("<|video_pad|>"),
              "vision_start_token_id": token_id("<|vision_start|>"), "vision_end_token_id": token_id("<|vision_end|>")}
    if family == "qwen2-vl":
        vision = {"depth": sizes.vision_depth, "embed_dim": sizes.vision_hidden_size,
                  "hidden_size": sizes.hidden_size, "num_heads": sizes.vision_num_heads, "mlp_ratio": 4}
        return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **tokens)
    vision = {"depth": sizes.vision_depth, "hidden_size": sizes.vision_hidden_size,
              "intermediate_size": 2 * sizes.vision_hidden_size, "num_heads": sizes.vision_num_heads,
              "out_hidden_size": sizes.hidden_size, "window_size": 112,
              "fullatt_block_indexes": [sizes.vision_depth - 1], "tokens_per_second": 2}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **tokens)


def write_checkpoint(family: Family, out: Path, texts: Iterable[str] = (), vocab_size: int = 8192,
                     sizes: Sizes = Sizes(), seed: int = 0, device: str = "cpu", dtype=None) -> Path:
    """Save a randomly initialised `family` model and its processor files in `out`, as a download has
    them; initialised on `device` (2B weights initialise much faster on a GPU), saved in `dtype`
    (Qwen ships bf16; None: float32)."""
    import torch
    from transformers import (
        AutoModelForImageTextToText,
        GenerationConfig,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = train_qwen_tokenizer([*texts, *general_text()], vocab_size)
    config = _config(family, tokenizer, sizes)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config)
    if dtype is not None:
        model.to(dtype)
    settings = dict(IMAGE_PROCESSOR)
    size = {"shortest_edge": settings.pop("min_pixels"), "longest_edge": settings.pop("max_pixels")}
    processor_class = Qwen2VLProcessor if family == "qwen2-vl" else Qwen2_5_VLProcessor
    processor = processor_class(image_processor=Qwen2VLImageProcessor(size=size, **settings), tokenizer=tokenizer,
                                video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    token_id = tokenizer.convert_tokens_to_ids
    model.generation_config = GenerationConfig(
        bos_token_id=token_id("<|endoftext|>"), pad_token_id=token_id("<|endoftext|>"),
        eos_token_id=[token_id("<|im_end|>"), token_id("<|endoftext|>")], **GENERATION_DEFAULTS[family])
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
