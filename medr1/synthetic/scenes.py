"""Procedural images: an organ-like shape on a modality-styled background, with one lesion.

A scene is five visual factors, each an index into a fixed list of renderings. The same
renderer serves two vocabularies: the medical one (CT, Liver, Tumor, Grade III, ...) that
the synthetic OmniMedVQA set asks about, and a generic one (gray, triangle, dot, large,
...) that the base stage uses to give the tiny model eyesight and option reading before
RL. The base model never sees a medical word paired with its picture: learning which
picture a medical word names is what GRPO has to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 384

# factor -> (medical words, generic words); index i of both names the same rendering.
FACTORS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "background": (
        ("CT", "MRI", "X-Ray", "Ultrasound", "Dermoscopy", "Fundus", "OCT", "Microscopy"),
        ("gray", "navy", "ink", "sepia", "peach", "amber", "teal", "lilac"),
    ),
    "organ": (
        ("Brain", "Lung", "Liver", "Heart", "Spine"),
        ("circle", "pair", "triangle", "diamond", "bar"),
    ),
    "lesion_shape": (
        ("Tumor", "Cyst", "Abscess", "Hemorrhage"),
        ("dot", "hoop", "plus", "block"),
    ),
    "lesion_size": (
        ("Minimal", "Mild", "Moderate", "Severe"),
        ("tiny", "small", "large", "huge"),
    ),
    "lesion_color": (
        ("Hyperpigmented", "Hypopigmented", "Erythematous", "Cyanotic"),
        ("brown", "white", "red", "blue"),
    ),
}

BACKGROUND_RGB = (
    (118, 118, 118),
    (30, 36, 96),
    (12, 12, 16),
    (96, 72, 40),
    (232, 182, 150),
    (200, 100, 20),
    (20, 112, 112),
    (192, 160, 222),
)
LESION_RGB = ((92, 48, 16), (246, 246, 246), (222, 28, 28), (36, 72, 228))
LESION_RADIUS = (20, 34, 50, 68)


@dataclass(frozen=True)
class Scene:
    background: int
    organ: int
    lesion_shape: int
    lesion_size: int
    lesion_color: int

    @classmethod
    def random(cls, rng: np.random.Generator, background: int | None = None) -> Scene:
        sizes = {name: len(words[0]) for name, words in FACTORS.items()}
        values = {name: int(rng.integers(count)) for name, count in sizes.items()}
        if background is not None:
            values["background"] = background
        return cls(**values)

    def word(self, factor: str, vocabulary: str = "medical") -> str:
        medical, generic = FACTORS[factor]
        words = medical if vocabulary == "medical" else generic
        return words[getattr(self, factor)]


def _jitter(rgb: tuple[int, ...], rng: np.random.Generator, amount: int = 12) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _organ_rgb(background: tuple[int, ...]) -> tuple[int, ...]:
    # The organ is the background lifted toward mid-light so that every lesion colour contrasts.
    return tuple(int(0.45 * c + 0.55 * 170) for c in background)


def _draw_organ(draw: ImageDraw.ImageDraw, organ: int, cx: int, cy: int, r: int, fill) -> None:
    if organ == 0:  # circle
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif organ == 1:  # pair of upright ellipses
        w = r // 2
        draw.ellipse((cx - r - 8, cy - r, cx - r - 8 + 2 * w, cy + r), fill=fill)
        draw.ellipse((cx + r + 8 - 2 * w, cy - r, cx + r + 8, cy + r), fill=fill)
    elif organ == 2:  # triangle
        draw.polygon(((cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)), fill=fill)
    elif organ == 3:  # diamond
        draw.polygon(((cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)), fill=fill)
    else:  # upright bar
        draw.rectangle((cx - r // 3, cy - r, cx + r // 3, cy + r), fill=fill)


def _draw_lesion(draw: ImageDraw.ImageDraw, shape: int, cx: int, cy: int, r: int, fill) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == 0:  # filled disc
        draw.ellipse(box, fill=fill)
    elif shape == 1:  # ring
        draw.ellipse(box, outline=fill, width=max(4, r // 3))
    elif shape == 2:  # plus
        t = max(4, r // 3)
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    else:  # square
        draw.rectangle(box, fill=fill)


def render(scene: Scene, rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw the scene at a random position with colour jitter and sensor noise."""
    background = _jitter(BACKGROUND_RGB[scene.background], rng)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    organ_radius = int(rng.integers(118, 140))
    cx = int(size / 2 + rng.integers(-30, 31))
    cy = int(size / 2 + rng.integers(-30, 31))
    _draw_organ(draw, scene.organ, cx, cy, organ_radius, _jitter(_organ_rgb(background), rng, 6))
    lesion_radius = LESION_RADIUS[scene.lesion_size] + int(rng.integers(-3, 4))
    lx = cx + int(rng.integers(-25, 26))
    ly = cy + int(rng.integers(-10, 41))
    _draw_lesion(draw, scene.lesion_shape, lx, ly, lesion_radius, _jitter(LESION_RGB[scene.lesion_color], rng))
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 7, (size, size, 3)).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
