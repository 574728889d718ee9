"""How far evaluation's two image paths are apart, in the processor's pixel values (docs/fidelity.md,
Remaining differences).

- `strict`: the 384x384 file as it is, resized to 392x392 by the processor (transformers 5's torchvision
  Qwen2VLImageProcessor, bicubic, antialiased);
- `med-r1`: Med-R1's evaluation scripts' path, qwen_vl_utils' fetch_image (PIL bicubic to 392x392), which the
  processor then leaves as it is;
- and the processor's two backends (torchvision, PIL) on the same fetched 392x392 image.

Images: synthetic scenes as the embedded default renders them, at ingest's 384x384.

    .venv/bin/python benchmarks/image_paths.py --images 20
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

from medr1.model.encoding import open_rgb
from medr1.model.published_images import fetch_image
from medr1.synthetic.dataset import Scene, render

QWEN2_VL_PIXELS = {"min_pixels": 3136, "max_pixels": 12845056}  # Qwen2-VL-2B-Instruct's preprocessor_config.json
GRAY_LEVEL = 1 / (255 * 0.26862954)  # one 8-bit step of the red channel after CLIP's normalization


def compare(first: torch.Tensor, second: torch.Tensor) -> tuple[int, int, float]:
    """(values that differ, values, largest difference)."""
    difference = (first - second).abs()
    return int((difference > 1e-6).sum()), difference.numel(), float(difference.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    torchvision, pil = Qwen2VLImageProcessor(**QWEN2_VL_PIXELS), Qwen2VLImageProcessorPil(**QWEN2_VL_PIXELS)
    totals = {"strict vs med-r1": [0, 0, 0.0], "torchvision vs PIL backend (med-r1 path)": [0, 0, 0.0]}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.images):
            generator = np.random.default_rng(index)
            path = str(Path(folder) / f"{index}.png")
            render(Scene.random(generator), generator).convert("RGB").resize((384, 384)).save(path)
            fetched = fetch_image(path)
            strict = torchvision(images=[open_rgb(path)], return_tensors="pt")["pixel_values"]
            medr1 = torchvision(images=[fetched], return_tensors="pt")["pixel_values"]
            as_pil = torch.as_tensor(pil(images=[fetched], return_tensors="pt")["pixel_values"])
            for name, pair in (("strict vs med-r1", (strict, medr1)),
                               ("torchvision vs PIL backend (med-r1 path)", (medr1, as_pil))):
                differ, count, largest = compare(*pair)
                totals[name][0] += differ
                totals[name][1] += count
                totals[name][2] = max(totals[name][2], largest)
        size = Image.open(str(Path(folder) / "0.png")).size
    print(f"{args.images} images of {size[0]}x{size[1]}, fetched to {fetched.size[0]}x{fetched.size[1]}")
    print("| comparison | values that differ | largest difference (normalized) | in gray levels |")
    print("|---|---|---|---|")
    for name, (differ, count, largest) in totals.items():
        share = f"{differ:,} of {count:,} ({differ / count:.2%})"
        print(f"| {name} | {share} | {largest:.3g} | {largest / GRAY_LEVEL:.2f} |")


if __name__ == "__main__":
    main()
