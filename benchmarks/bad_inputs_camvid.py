"""The bad-input catalogue's CamVid cases: the fastai layout (images/, labels/, codes.txt, valid.txt) and SegNet's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bad_inputs_cases import at, edit_array, expect_pixels, lines, on, pixels_probe, reimage, remove, write
from bad_inputs_layouts import CAMVID_CODES, SEGNET, camvid_fastai, camvid_segnet, latin1, not_image, save_16bit, truncate, zero


def pixel(yx: tuple[int, int], value: int):
    """A change of a mask's pixels: one set to ``value``."""

    def change(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[yx] = value
        return a

    return change


def float_tiff(root: Path) -> None:
    (root / "images/f1.png").unlink()
    (root / "labels/f1_P.png").rename(root / "labels/f1_P.tif")
    Image.fromarray(np.random.default_rng(0).random((48, 64), np.float32)).save(root / "images/f1.tif")


def tiff_16bit(root: Path) -> None:
    (root / "images/f1.png").unlink()
    Image.open(root / "labels/f1_P.png").save(root / "labels/f1_P.tif")
    (root / "labels/f1_P.png").unlink()
    expect_pixels(root, save_16bit(root / "images/f1.tif"))


def rgba(root: Path) -> None:
    a = np.asarray(Image.open(root / "images/f1.png"))
    Image.fromarray(np.concatenate([a, np.full((*a.shape[:2], 1), 128, np.uint8)], -1)).save(root / "images/f1.png")
    expect_pixels(root, a)


def greyscale(root: Path) -> None:
    g = np.asarray(Image.open(root / "images/f1.png").convert("L"))
    Image.fromarray(g, mode="L").save(root / "images/f1.png")
    expect_pixels(root, np.repeat(g[..., None], 3, -1))


def palette_alpha(root: Path) -> None:
    p = Image.open(root / "images/f1.png").quantize(16)
    p.info["transparency"] = bytes([0] + [255] * 15)
    p.save(root / "images/f1.png", transparency=bytes([0] + [255] * 15))
    expect_pixels(root, np.asarray(p.convert("RGB")))


def png_16bit(rel: str):
    return lambda root: expect_pixels(root, save_16bit(root / rel))


add = on("camvid", "camvid", lambda tmp: camvid_fastai(tmp / "camvid"))
for _name, _file, _fn in [
    ("truncated image", "images/f1.png", truncate),
    ("zero-byte image", "images/f1.png", zero),
    ("text file as image", "images/f1.png", not_image),
    ("truncated image in valid split", "images/f5.png", truncate),
    ("truncated mask", "labels/f1_P.png", truncate),
    ("zero-byte mask", "labels/f1_P.png", zero),
]:
    add(_name, at(_file, _fn), Path(_file).name)
MASK = "labels/f2_P.png"
add("mask id out of range (200)", edit_array(MASK, pixel((3, 3), 200), mode="L"), "f2_P.png")
add("RGB colour mask", edit_array(MASK, lambda a: np.stack([a * 7, a * 3, a], -1).astype(np.uint8)), "f2_P.png")
add("16-bit mask, ids x 257", edit_array(MASK, lambda a: a.astype(np.uint16) * 257), "f2_P.png")
add("16-bit mask holding valid ids", edit_array(MASK, lambda a: a.astype(np.uint16)), "f2_P.png", expect="train")
add("LA mask", reimage(MASK, lambda im: im.convert("LA")), "f2_P.png")
add("mask size differs from image", reimage(MASK, lambda im: im.resize((32, 24))), "f2_P.png")
add("mask missing", remove(MASK), "f2_P.png")
add("short codes.txt (12 names, ids up to 31)", write("codes.txt", lines(*CAMVID_CODES[:12])), "codes.txt")
add("empty codes.txt", write("codes.txt", "\n"), "codes.txt")
add("non-UTF-8 codes.txt", at("codes.txt", latin1, lines("Café", *CAMVID_CODES[1:])), "codes.txt")
add("duplicate names in codes.txt", write("codes.txt", lines(*CAMVID_CODES[:-2], "Void", "Void")), "codes.txt")
add("codes.txt missing", remove("codes.txt"), "codes.txt")
add("valid.txt names an unknown image", write("valid.txt", "f4.png\nnope.png\n"), "valid.txt")
add("non-UTF-8 valid.txt", at("valid.txt", latin1, "f4.png\nf5\xe9.png\n"), "valid.txt")
add("every image in valid.txt (empty train)", write("valid.txt", lines(*(f"f{i}.png" for i in range(6)))), "train")
add("labels/ missing", remove("labels"), "labels")
add("32-bit float TIFF image", float_tiff, "f1.tif")
add("16-bit greyscale PNG image", png_16bit("images/f1.png"), "f1.png", expect="train", probe=pixels_probe("images/f1.png"))
add("16-bit greyscale TIFF image", tiff_16bit, "f1.tif", expect="train", probe=pixels_probe("images/f1.tif"))
add("RGBA image", rgba, "f1.png", expect="train", probe=pixels_probe("images/f1.png"))
add("greyscale image", greyscale, "f1.png", expect="train", probe=pixels_probe("images/f1.png"))
add("palette image with alpha transparency", palette_alpha, "f1.png", expect="train", probe=pixels_probe("images/f1.png"))

add = on("segnet", "camvid", lambda tmp: camvid_segnet(tmp / "segnet"))
add("truncated train image", at("train/s1.png", truncate), "s1.png")
add("annotation missing", remove("trainannot/s1.png"), "s1.png")
add("annotation id 12 (12 classes)", edit_array("trainannot/s1.png", pixel((0, 0), 12), mode="L"), "s1.png")
add("RGB annotation in val", reimage("valannot/s1.png", lambda im: im.convert("RGB")), "s1.png")
add("valannot/ missing", remove("valannot"), "valannot")
add("short codes.txt beside SegNet folders", write("codes.txt", lines(*SEGNET[:5])), "codes.txt")
add("zero-byte val image", at("val/s0.png", zero), "s0.png")
add("16-bit train image", png_16bit("train/s2.png"), "s2.png", expect="train", probe=pixels_probe("train/s2.png"))
del add
