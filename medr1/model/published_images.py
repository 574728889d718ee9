"""Med-R1's image loader: qwen_vl_utils' `fetch_image` (0.0.10, which Med-R1's src/requirements.txt pins).

Med-R1's SFT script (`sft.py` collate_fn) and its evaluation scripts (`src/eval_vqa/test_qwen2vl_vqa*.py`,
`process_vision_info`) open every image this way before the processor: RGB with transparency on white,
resized with PIL's default filter (bicubic) to multiples of 28 (`smart_resize`). The processor's own
resize then finds the size it would pick and leaves the image as it is. The SFT baseline
(`sft.style: med-r1`) and the evaluation under Med-R1's grading protocols (`evaluate.protocol: med-r1`,
`med-r1-qwen2.5`) share this one implementation.
"""

from __future__ import annotations

import math

from PIL import Image

from medr1.errors import ImageError

# qwen_vl_utils.vision_process: fetch_image's defaults
IMAGE_FACTOR = 28
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28
MAX_RATIO = 200


def fetch_image_size(height: int, width: int) -> tuple[int, int]:
    """qwen_vl_utils.smart_resize with fetch_image's defaults: (height, width), multiples of 28."""
    h_bar = max(IMAGE_FACTOR, round(height / IMAGE_FACTOR) * IMAGE_FACTOR)
    w_bar = max(IMAGE_FACTOR, round(width / IMAGE_FACTOR) * IMAGE_FACTOR)
    if h_bar * w_bar > MAX_PIXELS:
        beta = math.sqrt((height * width) / MAX_PIXELS)
        h_bar = math.floor(height / beta / IMAGE_FACTOR) * IMAGE_FACTOR
        w_bar = math.floor(width / beta / IMAGE_FACTOR) * IMAGE_FACTOR
    elif h_bar * w_bar < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (height * width))
        h_bar = math.ceil(height * beta / IMAGE_FACTOR) * IMAGE_FACTOR
        w_bar = math.ceil(width * beta / IMAGE_FACTOR) * IMAGE_FACTOR
    return h_bar, w_bar


def fetch_image(path: str) -> Image.Image:
    """qwen_vl_utils.fetch_image on a local file: RGB with transparency on white (`to_rgb`), resized
    with PIL's default filter to fetch_image_size."""
    with Image.open(path) as opened:
        if opened.mode == "RGBA":
            image = Image.new("RGB", opened.size, (255, 255, 255))
            image.paste(opened, mask=opened.split()[3])
        else:
            image = opened.convert("RGB")
    if max(image.size) / min(image.size) > MAX_RATIO:
        raise ImageError(f"{path}: {image.width}x{image.height} is more than {MAX_RATIO} times as long as it is "
                         "wide, which Med-R1's image loader refuses; drop or crop this image")
    height, width = fetch_image_size(image.height, image.width)
    return image.resize((width, height))
