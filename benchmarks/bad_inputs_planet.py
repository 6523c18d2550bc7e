"""The bad-input catalogue's Planet cases: fastai's layout (labels.csv, train/) and Kaggle's (train_v2.csv, train-jpg/)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from bad_inputs_cases import at, edit_csv, expect_pixels, on, pixels_probe, remove, replace_bytes, set_cell, write
from bad_inputs_layouts import not_image, planet, rewrite_csv, save_16bit, truncate, zero


def listed_as(name: str, save: Callable[[Path, np.ndarray], None]) -> Callable[[Path], None]:
    """train_5.jpg replaced by ``name`` (written by ``save(path, the JPEG's RGB pixels)``), the CSV row renamed."""

    def edit(root: Path) -> None:
        jpg = root / "train/train_5.jpg"
        rgb = np.asarray(Image.open(jpg).convert("RGB"))
        jpg.unlink()
        save(root / "train" / name, rgb)
        rewrite_csv(root / "labels.csv", set_cell(6, 0, name))

    return edit


def sixteen_bit(path: Path, rgb) -> None:
    expect_pixels(path.parents[1], save_16bit(path, 48, 48))


def rgba(path: Path, rgb) -> None:
    Image.fromarray(np.concatenate([rgb, np.full((48, 48, 1), 200, np.uint8)], -1)).save(path)
    expect_pixels(path.parents[1], rgb)


def float_tiff(path: Path, rgb) -> None:
    Image.fromarray(np.random.default_rng(0).random((48, 48), np.float32) * 1000).save(path)


add = on("planet", "planet", lambda tmp: planet(tmp / "planet", "fastai"))
for _name, _fn in [("truncated JPEG", truncate), ("zero-byte JPEG", zero), ("text file as JPEG", not_image)]:
    add(_name, at("train/train_3.jpg", _fn), "train_3.jpg")
add("truncated JPEG (90% kept)", at("train/train_3.jpg", truncate, 0.9), "train_3.jpg")
add("non-UTF-8 labels.csv", replace_bytes("labels.csv", b"train_2,", b"train_2\xe9,"), "labels.csv")
add("duplicate image_name row", edit_csv("labels.csv", lambda rows: rows.append(list(rows[2]))), "labels.csv")
add("unknown tag", edit_csv("labels.csv", set_cell(2, 1, "clear lava")), "labels.csv")
add("empty tags field", edit_csv("labels.csv", set_cell(2, 1, "")), "labels.csv")
add("wrong header", edit_csv("labels.csv", lambda rows: rows.__setitem__(0, ["name", "labels"])), "labels.csv")
add("header only", write("labels.csv", "image_name,tags\n"), "labels.csv")
add("zero-byte labels.csv", at("labels.csv", zero), "labels.csv")
add("image listed but missing", remove("train/train_4.jpg"), "train_4.jpg")
add("train/ missing", remove("train"), "train")
add("ragged CSV row (3 fields)", edit_csv("labels.csv", lambda rows: rows[3].append("extra")), "labels.csv")
add("16-bit PNG listed by name", listed_as("train_5.png", sixteen_bit), "train_5.png", expect="train", probe=pixels_probe("train/train_5.png"))
add("16-bit TIFF listed by name", listed_as("train_5.tif", sixteen_bit), "train_5.tif", expect="train", probe=pixels_probe("train/train_5.tif"))
add("RGBA PNG listed by name", listed_as("train_5.png", rgba), "train_5.png", expect="train", probe=pixels_probe("train/train_5.png"))
add("32-bit float TIFF listed by name", listed_as("train_5.tif", float_tiff), "train_5.tif")

add = on("planet kaggle", "planet", lambda tmp: planet(tmp / "planet", "kaggle"))
add("truncated JPEG", at("train-jpg/train_7.jpg", truncate), "train_7.jpg")
add("train-jpg/ missing", remove("train-jpg"), "train-jpg")
add("non-UTF-8 train_v2.csv", replace_bytes("train_v2.csv", b"clear", b"cl\xe9ar", 1), "train_v2.csv")
del add
