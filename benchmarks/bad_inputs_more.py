"""The bad-input catalogue's session-11 cases (``s11`` in their names): text files saved on Windows
(BOM, CRLF), phone photos (EXIF orientation), masks with nothing to learn, classes only validation
has, long CSV fields, and the generic kinds (points, classify, segment, multilabel, text).

    python benchmarks/bad_inputs.py --only s11
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from bad_inputs_cases import at, edit_array, edit_csv, expect_pixels, on, pixels_probe, remove, set_cell, write
from bad_inputs_layouts import camvid_fastai, imdb_csv, planet, zero


def windows(rel: str):
    """The file saved as Notepad or Excel save it: a UTF-8 BOM and CRLF line ends."""

    def edit(root: Path) -> None:
        text = (root / rel).read_text(encoding="utf-8").replace("\r\n", "\n")
        (root / rel).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))

    return edit


def phone_photo(rel: str):
    """The image stored turned a quarter (as a phone stores it) with EXIF orientation 6: read upright it is
    the original, which ``expected.npy`` keeps (PNG: lossless, so the probe compares exactly)."""

    def edit(root: Path) -> None:
        path = root / rel
        upright = np.asarray(Image.open(path).convert("RGB"))
        expect_pixels(root, upright)
        exif = Image.Exif()
        exif[0x0112] = 6  # shown turned a quarter clockwise
        Image.fromarray(np.rot90(upright, 1).copy()).save(path, exif=exif)  # stored a quarter anticlockwise

    return edit


def all_void_training_masks(root: Path) -> None:
    valid = set((root / "valid.txt").read_text().split())
    for lab in (root / "labels").glob("*_P.png"):
        if lab.name.replace("_P", "") not in valid:
            Image.fromarray(np.full((48, 64), 31, np.uint8)).save(lab)  # 31: Void


def class_only_in_validation(root: Path) -> None:
    valid = set((root / "valid.txt").read_text().split())
    for lab in sorted((root / "labels").glob("*_P.png")):
        a = np.asarray(Image.open(lab)).copy()
        a[a == 7] = 0
        if lab.name.replace("_P", "") in valid:
            a[:4, :4] = 7
        Image.fromarray(a).save(lab)


def long_caption(rel: str):
    """A third column holding a 300 KB caption (over Python's default CSV field limit)."""
    return edit_csv(rel, lambda rows: [r.append("caption" if i == 0 else "word " * 60_000) for i, r in enumerate(rows)])


def points(root: Path, n: int = 12) -> Path:
    """``images/*.png`` + ``points.csv`` (file, x, y, is_valid): a bright dot at the point."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = [("file", "x", "y", "is_valid")]
    for i in range(n):
        a = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
        x, y = int(rng.integers(8, 56)), int(rng.integers(8, 40))
        a[y - 2 : y + 3, x - 2 : x + 3] = 255
        Image.fromarray(a).save(root / "images" / f"p{i}.png")
        rows.append((f"p{i}.png", str(x), str(y), str(int(i >= n - 3))))
    with open(root / "points.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def classify(root: Path) -> Path:
    """``train/<class>/*.png`` and ``valid/<class>/*.png``, two classes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("valid", 2)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / split / cls / f"{cls}{i}.png")
    return root


add = on("camvid s11", "camvid", lambda tmp: camvid_fastai(tmp / "camvid"))
add("codes.txt with a BOM and CRLF", windows("codes.txt"), "codes.txt", expect="train")
add("valid.txt with a BOM and CRLF", windows("valid.txt"), "valid.txt", expect="train")
add("every training mask all Void", all_void_training_masks, "labels")
add("a class only in validation masks", class_only_in_validation, "labels", expect="train")
add("phone photo (EXIF orientation 6)", phone_photo("images/f1.png"), "f1.png", expect="train", probe=pixels_probe("images/f1.png"))
add("mask turned a quarter (another size)", edit_array("labels/f2_P.png", lambda a: np.rot90(a).copy()), "f2_P.png")

add = on("planet s11", "planet", lambda tmp: planet(tmp / "planet", "fastai"))
add("labels.csv with a BOM and CRLF", windows("labels.csv"), "labels.csv", expect="train")
add("a 300 KB caption column", long_caption("labels.csv"), "labels.csv", expect="train")
add("max_epochs 0", None, "max_epochs", extra=("--trainer.max_epochs", "0"))

add = on("points s11", "points", lambda tmp: points(tmp / "points"))
add("points.csv with a BOM and CRLF", windows("points.csv"), "points.csv", expect="train")
add("x not a number", edit_csv("points.csv", set_cell(3, 1, "left")), "points.csv")
add("point outside its image", edit_csv("points.csv", set_cell(3, 1, "640")), "points.csv")
add("image listed twice", edit_csv("points.csv", lambda rows: rows.append(list(rows[2]))), "points.csv")
add("image listed but missing", remove("images/p4.png"), "p4.png")
add("phone photo (EXIF orientation 6)", phone_photo("images/p1.png"), "p1.png", expect="train", probe=pixels_probe("images/p1.png"))

add = on("classify s11", "classify", lambda tmp: classify(tmp / "pets"))
add("zero-byte image", at("train/cat/cat2.png", zero), "cat2.png")
add("a class only in valid/", lambda root: (root / "valid" / "cow").mkdir() or Image.new("RGB", (48, 48)).save(root / "valid" / "cow" / "cow0.png"), "cow")
add("phone photo (EXIF orientation 6)", phone_photo("train/dog/dog1.png"), "dog1.png", expect="train", probe=pixels_probe("train/dog/dog1.png"))

add = on("segment s11", "segment", lambda tmp: camvid_fastai(tmp / "seg"))
add("codes.txt missing", remove("codes.txt"), "codes.txt")
add("mask missing", remove("labels/f3_P.png"), "f3")

add = on("text s11", "text", lambda tmp: imdb_csv(tmp / "notes"))
add("texts.csv with a BOM and CRLF", windows("texts.csv"), "texts.csv", expect="train", extra=("--data.init_args.max_length", "32"))
add("a 300 KB text", edit_csv("texts.csv", set_cell(2, 1, "long words " * 30_000)), "texts.csv", expect="train", extra=("--data.init_args.max_length", "32"))
add("empty texts.csv", write("texts.csv", ""), "texts.csv", extra=("--data.init_args.max_length", "32"))
del add
