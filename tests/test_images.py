import io

import numpy as np
import pytest
from PIL import Image

from medr1.data.images import resize_to_png
from medr1.data.png import encode_rgb_png


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return np.asarray(image)


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (384, 384, 3)])
def test_png_encoder_is_lossless(shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(_decoded(encode_rgb_png(pixels)), pixels)


def test_png_encoder_refuses_other_layouts():
    with pytest.raises(ValueError, match="uint8"):
        encode_rgb_png(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="non-empty"):
        encode_rgb_png(np.zeros((0, 4, 3), dtype=np.uint8))


def _png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def test_a_plain_target_png_is_kept_byte_for_byte():
    raw = _png(Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    assert resize_to_png(raw, 32) is raw


def test_metadata_forces_a_re_encode_with_the_same_pixels():
    from PIL import PngImagePlugin

    pixels = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    text = PngImagePlugin.PngInfo()
    text.add_text("PatientName", "Jane Doe")
    raw = _png(Image.fromarray(pixels), pnginfo=text)
    out = resize_to_png(raw, 32)
    assert out != raw and b"Jane Doe" not in out
    assert np.array_equal(_decoded(out), pixels)


def _with_chunk(raw: bytes, kind: bytes, data: bytes) -> bytes:
    """`raw` with one more chunk right after IHDR."""
    import zlib

    chunk = len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    return raw[:33] + chunk + raw[33:]


@pytest.mark.parametrize("tamper", [
    lambda raw: _with_chunk(raw, b"prVt", b"PatientName=Jane Doe"),  # a private chunk Pillow does not report
    lambda raw: _with_chunk(raw, b"tIME", bytes(7)),
    lambda raw: raw + b"PatientName=Jane Doe",  # bytes after IEND
])
def test_hidden_metadata_forces_a_re_encode(tamper):
    pixels = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    raw = tamper(_png(Image.fromarray(pixels)))
    out = resize_to_png(raw, 32)
    assert b"Jane Doe" not in out and out != raw
    assert np.array_equal(_decoded(out), pixels)


def test_other_sizes_and_modes_are_converted_to_target_rgb():
    grey = Image.fromarray(np.random.default_rng(3).integers(0, 256, (50, 40), dtype=np.uint8))
    assert _decoded(resize_to_png(_png(grey), 32)).shape == (32, 32, 3)
