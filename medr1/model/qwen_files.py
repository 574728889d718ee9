"""What a Qwen2-VL / Qwen2.5-VL Instruct download holds besides its weights, as published on the
Hub: the special tokens, the chat template, the image processor's settings and the generation
defaults. The tiny demo model and the synthetic checkpoint folders of the tests and benchmarks
(medr1/synthetic/checkpoints.py) are built to the same shape, so that the real path is exercised.
"""

from __future__ import annotations

from typing import Literal

Family = Literal["qwen2-vl", "qwen2.5-vl"]
FAMILIES: tuple[Family, ...] = ("qwen2-vl", "qwen2.5-vl")

# tokenizer_config.json added_tokens, in id order (Qwen2.5-VL adds more that are not special)
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# chat_template.json of Qwen2-VL-2B-Instruct (Qwen2.5-VL-3B-Instruct ships the same template)
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# preprocessor_config.json (both families): 14-pixel patches merged 2x2, CLIP's normalisation
IMAGE_PROCESSOR = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}

# generation_config.json: sampling defaults each family ships (token ids are set from the tokenizer)
GENERATION_DEFAULTS: dict[Family, dict] = {
    "qwen2-vl": {"do_sample": True, "repetition_penalty": 1.0, "temperature": 0.01, "top_p": 0.001, "top_k": 1},
    "qwen2.5-vl": {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1},
}
