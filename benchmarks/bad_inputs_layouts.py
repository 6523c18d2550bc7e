"""Valid tiny datasets in the real on-disk layouts, and ways to break one file, for the bad-input catalogue."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

CAMVID_CODES = [f"class{i}" for i in range(31)] + ["Void"]  # 32 names, ids 0..31
SEGNET = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist", "Unlabelled"]
TAGS = ["agriculture", "clear", "cloudy", "haze", "partly_cloudy", "primary", "road", "water"]
WORDS = {"positive": "great wonderful superb moving brilliant", "negative": "awful boring dull terrible weak"}


# -- valid tiny datasets in the real layouts ---------------------------------------------------
def _rgb(rng, h, w) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def camvid_fastai(root: Path, n: int = 6, hw=(48, 64)) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "codes.txt").write_text("\n".join(CAMVID_CODES) + "\n")
    for i in range(n):
        Image.fromarray(_rgb(rng, *hw)).save(root / "images" / f"f{i}.png")
        Image.fromarray(rng.integers(0, 32, hw, dtype=np.uint8), mode="L").save(root / "labels" / f"f{i}_P.png")
    (root / "valid.txt").write_text("f4.png\nf5.png\n")
    return root


def camvid_segnet(root: Path, hw=(48, 64)) -> Path:
    rng = np.random.default_rng(0)
    for folder, n in (("train", 4), ("val", 2), ("test", 2)):
        (root / folder).mkdir(parents=True)
        (root / f"{folder}annot").mkdir()
        for i in range(n):
            Image.fromarray(_rgb(rng, *hw)).save(root / folder / f"s{i}.png")
            Image.fromarray(rng.integers(0, 12, hw, dtype=np.uint8), mode="L").save(root / f"{folder}annot" / f"s{i}.png")
    return root


def planet(root: Path, layout: str = "fastai", n: int = 10) -> Path:
    csv_name, folder = ("labels.csv", "train") if layout == "fastai" else ("train_v2.csv", "train-jpg")
    rng = np.random.default_rng(0)
    (root / folder).mkdir(parents=True)
    rows = [("image_name", "tags")]
    for i in range(n):
        Image.fromarray(_rgb(rng, 48, 48)).convert("CMYK").save(root / folder / f"train_{i}.jpg")
        rows.append((f"train_{i}", " ".join(sorted({TAGS[1 + i % 4], TAGS[(i * 3) % len(TAGS)]}))))
    with open(root / csv_name, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def biwi(root: Path, frames: int = 4, wh=(160, 120)) -> Path:
    """Persons 01 and 13; intrinsics scaled to the frame size (cx, cy at the centre)."""
    rng = np.random.default_rng(0)
    W, H = wh
    f = 517.679 * W / 640
    for person in ("01", "13"):
        d = root / person
        d.mkdir(parents=True)
        (d / "rgb.cal").write_text(f"{f} 0 {W / 2}\n0 {f} {H / 2}\n0 0 1\n\n0 0 0 0\n\n1 0 0\n0 1 0\n0 0 1\n\n0 0 0\n")
        for k in range(frames):
            Image.fromarray(_rgb(rng, H, W)).save(d / f"frame_{k:05d}_rgb.jpg", quality=90)
            x, y = rng.uniform(-80, 80), rng.uniform(-60, 60)
            (d / f"frame_{k:05d}_pose.txt").write_text(f"1 0 0\n0 1 0\n0 0 1\n\n{x:.3f} {y:.3f} 900.0\n")
    return root


def _review(rng, label: str, k: int) -> str:
    return f"Review {k}: " + " ".join(rng.permutation(WORDS[label].split()).tolist()) + " film.<br />The end."


def imdb_csv(root: Path, n: int = 16, n_valid: int = 4) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    rows = [("label", "text", "is_valid")]
    for k in range(n):
        label = ("negative", "positive")[k % 2]
        rows.append((label, _review(rng, label, k), str(k >= n - n_valid)))
    with open(root / "texts.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return root


def write_acl(root: Path, review: Callable[[str, str, int], str], n: int) -> Path:
    """aclImdb's layout: ``train/`` and ``test/``, each with ``pos/`` and ``neg/`` of ``n`` reviews ``{k}_{stars}.txt``.

    ``review(split, label, k)`` gives the text of review ``k`` (``label``: positive or negative).
    Also the layout of tests/test_imdb.py's aclImdb (with its own reviews).
    """
    for split in ("train", "test"):
        for sub, label in (("pos", "positive"), ("neg", "negative")):
            d = root / split / sub
            d.mkdir(parents=True)
            for k in range(n):
                (d / f"{k}_{7 if sub == 'pos' else 2}.txt").write_text(review(split, label, k), encoding="utf-8")
    return root


def imdb_acl(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    return write_acl(root, lambda split, label, k: _review(rng, label, k * 10 + len(split)), n)


# -- ways to break a file -------------------------------------------------------------------------
def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def zero(path: Path) -> None:
    path.write_bytes(b"")


def not_image(path: Path) -> None:
    path.write_text("this is not an image\n")


def save_16bit(path: Path, h=48, w=64) -> np.ndarray:
    """A 16-bit greyscale gradient over the full range; returns the expected 8-bit RGB."""
    a = np.linspace(0, 65535, h * w).reshape(h, w).astype(np.uint16)
    Image.fromarray(a).save(path)
    return np.repeat(np.round(a / 257).astype(np.uint8)[..., None], 3, -1)


def rewrite_csv(path: Path, edit: Callable[[list], None]) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    edit(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def latin1(path: Path, text: str) -> None:
    path.write_bytes(text.encode("latin-1"))

