"""A tiny Qwen2-VL built locally: tokenizer trained on the data's text, Qwen2-VL special tokens,
the Qwen2-VL chat template, and a randomly initialised `Qwen2VLForConditionalGeneration`.

Everything here runs offline; nothing is fetched from a model hub.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import (
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from medr1.config import TinyArchitecture
from medr1.data.records import LETTERS
from medr1.model.qwen_files import CHAT_TEMPLATE
from medr1.synthetic.checkpoints import train_qwen_tokenizer
from medr1.tiny.option_reader import wire_option_reader

# Tags of the answer format: single tokens, but ordinary text so they survive decoding.
TAG_TOKENS = ("<answer>", "</answer>", "<think>", "</think>")


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Qwen2Tokenizer:
    """Byte-level BPE (Qwen2's scheme) trained on `texts`, with Qwen2-VL's special tokens and the
    answer format's tags as single tokens (the tiny model's option reader and warm-up rely on it)."""
    return train_qwen_tokenizer(texts, vocab_size, added_tokens=TAG_TOKENS)


def build_processor(tokenizer: Qwen2Tokenizer, image_side: int) -> Qwen2VLProcessor:
    # A little above side**2: smart_resize floors, and 384/side is rarely exact in floating point.
    size = {"shortest_edge": 56 * 56, "longest_edge": (image_side + 4) ** 2}
    image_processor = Qwen2VLImageProcessor(size=size)
    video_processor = Qwen2VLVideoProcessor(size=size)
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def qwen2vl_config(tokenizer: Qwen2Tokenizer, arch: TinyArchitecture, vision_mlp_ratio: int = 2,
                   max_positions: int = 1024, vocab_size: int | None = None) -> Qwen2VLConfig:
    """Qwen2-VL's configuration at `arch`'s sizes, its special token ids taken from `tokenizer`.
    `vocab_size` may exceed the tokenizer's (Qwen2-VL-2B pads its 151,657 tokens to 151,936)."""
    head_dim = arch.hidden_size // arch.num_attention_heads
    # M-RoPE splits head_dim/2 rotary frequencies into (temporal, height, width) sections.
    half = head_dim // 2
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    token_id = tokenizer.convert_tokens_to_ids
    return Qwen2VLConfig(
        text_config={
            "vocab_size": max(vocab_size or 0, len(tokenizer)),
            "hidden_size": arch.hidden_size,
            "intermediate_size": arch.intermediate_size,
            "num_hidden_layers": arch.num_hidden_layers,
            "num_attention_heads": arch.num_attention_heads,
            "num_key_value_heads": arch.num_key_value_heads,
            "max_position_embeddings": max_positions,
            "rope_parameters": {"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0},
            "bos_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
            "pad_token_id": token_id("<|endoftext|>"),
        },
        vision_config={
            "depth": arch.vision_depth,
            "embed_dim": arch.vision_embed_dim,
            "hidden_size": arch.hidden_size,
            "num_heads": arch.vision_num_heads,
            "mlp_ratio": vision_mlp_ratio,
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def set_generation_tokens(model, tokenizer: Qwen2Tokenizer) -> None:
    """Generation stops at <|im_end|> and pads with <|endoftext|>, as Qwen2-VL-Instruct does."""
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")


def build_model(tokenizer: Qwen2Tokenizer, arch: TinyArchitecture, seed: int) -> Qwen2VLForConditionalGeneration:
    import torch

    torch.manual_seed(seed)
    config = qwen2vl_config(tokenizer, arch)
    model = Qwen2VLForConditionalGeneration(config)
    wire_option_reader(model, tokenizer.convert_tokens_to_ids(list(LETTERS)))
    set_generation_tokens(model, tokenizer)
    return model
