"""The sizes a memory plan needs, read from a model folder's config.json: the model is built on the
meta device (no weights, no GPU) and its parameters counted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medr1.config import Params


@dataclass(frozen=True)
class Architecture:
    """The sizes the estimate needs, read from a model built on the meta device."""

    parameters: int
    vision_parameters: int
    trainable: int  # all of them, or LoRA's adapters
    hidden: int
    layers: int
    kv_width: int  # key/value heads x head size
    intermediate: int
    vocab: int
    vision_hidden: int
    vision_depth: int
    vision_intermediate: int
    vision_gated: bool  # Qwen2.5-VL's SwiGLU vision MLP (three projections) or Qwen2-VL's two
    patch: int  # a vision patch's side in pixels
    merge: int  # patches merged into one image token, per side


def architecture_of(folder: Path, params: Params) -> Architecture:
    """The model in `folder` (its config.json only) built on the meta device and measured."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    parameters = sum(p.numel() for p in model.parameters())
    vision_parameters = sum(p.numel() for name, p in model.named_parameters() if ".visual." in f".{name}")
    lora = params.train.lora
    trainable = parameters if not lora.enabled else sum(  # peft's rule: a Linear whose name ends in a target
        lora.r * (module.in_features + module.out_features) for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora.target_modules)
    text, vision = config.get_text_config(), config.vision_config
    vision_hidden = getattr(vision, "embed_dim", None) or vision.hidden_size  # Qwen2-VL's name, Qwen2.5-VL's
    vision_intermediate = getattr(vision, "intermediate_size", None) or vision_hidden * vision.mlp_ratio
    heads = text.num_attention_heads
    head_size = getattr(text, "head_dim", None) or text.hidden_size // heads
    return Architecture(parameters=parameters, vision_parameters=vision_parameters, trainable=trainable,
                        hidden=text.hidden_size, layers=text.num_hidden_layers,
                        kv_width=text.num_key_value_heads * head_size, intermediate=text.intermediate_size,
                        vocab=text.vocab_size, vision_hidden=vision_hidden, vision_depth=vision.depth,
                        vision_intermediate=vision_intermediate,
                        vision_gated=hasattr(vision, "intermediate_size"), patch=vision.patch_size,
                        merge=vision.spatial_merge_size)


def image_tokens(image_side: int, params: Params, model: Architecture) -> int:
    """Tokens of one image_side x image_side picture after the training processor's resize (Qwen2-VL's
    smart_resize within train.min_pixels and train.max_pixels, or the family's shipped limits)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from medr1.model.qwen_files import IMAGE_PROCESSOR

    factor = model.patch * model.merge
    train = params.train
    low, high = ((train.min_pixels, train.max_pixels) if train.max_pixels is not None
                 else (IMAGE_PROCESSOR["min_pixels"], IMAGE_PROCESSOR["max_pixels"]))
    height, width = smart_resize(image_side, image_side, factor=factor, min_pixels=low, max_pixels=high)
    return (height // factor) * (width // factor)
