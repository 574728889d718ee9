"""Safe decoding and resizing of source images into content-addressed 384x384 RGB PNGs."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from medr1.data.png import encode_rgb_png
from medr1.errors import ImageError

# PIL raises DecompressionBombError above twice this many pixels; keep its guard on.
Image.MAX_IMAGE_PIXELS = 89_478_485


def default_workers() -> int:
    """Parallel image work uses every core, up to 8."""
    return max(1, min(os.cpu_count() or 1, 8))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that carry pixels or say nothing about the patient; any other (text, EXIF, ICC, time,
# private chunks) or bytes after IEND force a re-encode, which drops them.
_PLAIN_CHUNKS = {b"IHDR", b"IDAT", b"IEND", b"pHYs", b"gAMA", b"sRGB"}


def _plain_rgb_png(raw: bytes) -> bool:
    """8-bit RGB, non-interlaced, IHDR first, only pixel chunks, nothing after IEND."""
    if (not raw.startswith(_PNG_SIGNATURE) or raw[12:16] != b"IHDR" or raw[24:26] != b"\x08\x02"
            or raw[28:29] != b"\x00"):
        return False
    position = len(_PNG_SIGNATURE)
    while position + 12 <= len(raw):
        length = int.from_bytes(raw[position:position + 4], "big")
        kind = raw[position + 4:position + 8]
        position += 12 + length
        if kind not in _PLAIN_CHUNKS:
            return False
        if kind == b"IEND":
            return position == len(raw)
    return False


def _to_rgb(opened: Image.Image) -> Image.Image:
    """Convert a loaded image on purpose to RGB, upright."""
    image = ImageOps.exif_transpose(opened)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale (common in medical exports): scale to 8 bits instead of clipping.
        image = image.point(lambda value: value * (1 / 256)).convert("L")
    return image.convert("RGB")


def resize_to_png(raw: bytes, size: int) -> bytes:
    """`raw` as a size x size RGB PNG: decoded in full (so corrupt files fail here), then either kept
    as it is, when it already is a plain RGB PNG of that size, or converted, resized and re-encoded."""
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            opened.load()
            if opened.format == "PNG" and opened.mode == "RGB" and opened.size == (size, size) and _plain_rgb_png(raw):
                return raw
            image = _to_rgb(opened)
    except Image.DecompressionBombError as error:
        raise ImageError(f"image too large to decode safely: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"image does not decode: {error}") from error
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return encode_rgb_png(np.asarray(image))


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
        raw = source.read_bytes()  # read once: hashed for the cache key, decoded on a miss
    except OSError as error:
        raise ImageError(f"image cannot be read: {error}") from error
    cached = cache / f"{sha256_bytes(raw)}-{size}.png" if cache is not None else None
    hit = cached is not None and cached.is_file()
    data = cached.read_bytes() if hit else resize_to_png(raw, size)
    if cached is not None and not hit:
        _write_once(cached, data)
    digest = sha256_bytes(data)
    name = f"{digest}.png"
    _write_once(out_folder / name, data)
    return digest, name, hit
