"""Uncompressed TIFF copies of a split's images for GRPO: TRL decodes a row's image each time it
samples the row (num_generations times a step), and a 384-px PNG takes about 3 ms to decode
against about 0.5 ms for the same pixels uncompressed."""

from __future__ import annotations

from pathlib import Path


def uncompressed_copies(paths: list[str], folder: Path, budget: int = 1 << 30) -> list[str]:
    """The paths of uncompressed TIFF copies of `paths` in `folder`, or `paths` itself when the
    distinct images would take more than `budget` bytes."""
    from PIL import Image

    distinct = list(dict.fromkeys(paths))
    if sum(_raw_rgb_bytes(path) for path in distinct) > budget:  # headers only: opening does not decode
        return paths
    copies = {}
    for index, path in enumerate(distinct):
        copies[path] = str(folder / f"{index}.tiff")
        with Image.open(path) as image:
            image.convert("RGB").save(copies[path], format="TIFF")  # no compression: decoding is a copy
    return [copies[path] for path in paths]


def _raw_rgb_bytes(path: str) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return image.width * image.height * 3
