"""Deterministic synthetic single-label sample in the class-folder layout.

``train/<class>/<class>_NNN.jpg`` and ``valid/<class>/<class>_NNN.jpg``: 64 px pictures of one drawn
shape each -- ``circle``, ``square`` or ``triangle`` -- in a random colour, size, position and
rotation, over a noisy background of another colour, so that the class is in the outline only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square", "triangle")
SIZE = 64


def draw_shape(rng: np.random.Generator, shape: str, size: int = SIZE) -> Image.Image:
    """One RGB picture of ``shape`` (a class of :data:`CLASSES`)."""
    back = rng.integers(0, 256, 3)
    noise = rng.normal(0, 18, (size, size, 3)) + back
    img = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
    fill = tuple(int(v) for v in (back + rng.integers(90, 166, 3)) % 256)  # far from the background
    r = rng.uniform(0.18, 0.32) * size
    cx, cy = rng.uniform(r + 2, size - r - 2, 2)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        corners = 4 if shape == "square" else 3
        start = rng.uniform(0, 2 * np.pi)
        angles = start + np.arange(corners) * 2 * np.pi / corners
        draw.polygon([(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in angles], fill=fill)
    return img


def write_classify_sample(folder: Path, n_train: int = 40, n_valid: int = 12, seed: int = 0) -> None:
    """Write the sample: ``n_train`` and ``n_valid`` JPEGs per class (seeded: the same files every time)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        for shape in CLASSES:
            out = Path(folder) / split / shape
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_shape(rng, shape).save(out / f"{shape}_{i:03d}.jpg", quality=90)
