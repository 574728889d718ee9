"""Safe decoding and resizing of source images into content-addressed 384x384 RGB PNGs."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from PIL import Image, ImageOps

# PIL raises DecompressionBombError above twice this many pixels; keep its guard on.
Image.MAX_IMAGE_PIXELS = 89_478_485


class ImageError(ValueError):
    """The image cannot be used; the message says why."""


def load_rgb(path: Path | io.BytesIO) -> Image.Image:
    """Decode fully (truncated files fail here, not later) and convert on purpose to RGB."""
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale (common in medical exports): scale to 8 bits instead of clipping.
                image = image.point(lambda value: value * (1 / 256)).convert("L")
            return image.convert("RGB")
    except Image.DecompressionBombError as error:
        raise ImageError(f"image too large to decode safely: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"image does not decode: {error}") from None


def resize_to_png(path: Path | io.BytesIO, size: int) -> bytes:
    image = load_rgb(path)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless either way; level 1 encodes several times faster
    return buffer.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_once(target: Path, data: bytes) -> None:
    if not target.exists():
        temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        temporary.replace(target)  # readers see the whole file or none


def process_image(source: Path, out_folder: Path, size: int, cache: Path | None = None) -> tuple[str, str, bool]:
    """Resize `source` into `out_folder/<sha256>.png`; returns (sha256, file name, taken from the cache).

    With a cache folder, the resized bytes are kept under the *source* file's content hash, so
    that ingesting a grown source re-processes only the images it has not seen.
    """
    try:
        raw = source.read_bytes() if cache is not None else None  # read once: hashed for the key, decoded on a miss
    except OSError as error:
        raise ImageError(f"image cannot be read: {error}") from None
    cached = cache / f"{sha256_bytes(raw)}-{size}.png" if raw is not None else None
    hit = cached is not None and cached.is_file()
    data = cached.read_bytes() if hit else resize_to_png(io.BytesIO(raw) if raw is not None else source, size)
    if cached is not None and not hit:
        _write_once(cached, data)
    digest = sha256_bytes(data)
    name = f"{digest}.png"
    _write_once(out_folder / name, data)
    return digest, name, hit
