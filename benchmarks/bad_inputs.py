"""Catalogue of bad inputs: what a user sees when one thing in a real-layout dataset is wrong.

Each case writes a tiny valid dataset in a real on-disk layout under a temporary folder, breaks
one thing, runs ``train.py fit`` on it (one epoch, two training batches, the default loader
workers, at ``nice 15``) and classifies what happened:

* ``clear``: exit code non-zero and exactly one ``error: ...`` line that names the file, no traceback;
* ``vague``: an ``error:`` line, but it does not name the file;
* ``traceback``: a Python traceback (a worker's or the main process');
* ``silent``: the run trained on the bad data without a word;
* ``handled``: a valid-but-unusual input (16-bit image, duplicates) that trained and was read
  right (checked by a probe: pixel values, a printed de-duplication line);
* ``warning``: handled, but a library warning was printed.

Cases run one after another (no parallelism), each bounded by ``--timeout``. Usage::

    python benchmarks/bad_inputs.py                     # every case, a table on stdout
    python benchmarks/bad_inputs.py --only biwi --json out.json
    python benchmarks/bad_inputs.py --repo /other/checkout   # the same cases against another tree
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parents[1]
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


def imdb_acl(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for sub, label in (("pos", "positive"), ("neg", "negative")):
            d = root / split / sub
            d.mkdir(parents=True)
            for k in range(n):
                (d / f"{k}_{7 if sub == 'pos' else 2}.txt").write_text(_review(rng, label, k * 10 + len(split)), encoding="utf-8")
    return root


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


# -- the cases --------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    task: str
    build: Callable[[Path], tuple[Path, str]]  # (root, the file name the error must name)
    expect: str = "error"  # or "train": a valid-but-unusual input that must train, read right
    probe: Callable[[Path, str], bool] | None = None  # for "train": was it read right?
    extra: tuple[str, ...] = ()


CASES: list[Case] = []


def case(name: str, task: str, expect: str = "error", probe=None, extra=()):
    def register(fn):
        CASES.append(Case(name, task, fn, expect, probe, tuple(extra)))
        return fn

    return register


def pixels_probe(rel: str, expected_path: str):
    """A probe: the repo's ``read_rgb`` of ``root/rel`` equals the array saved at ``root/expected_path``."""

    def probe(root: Path, repo: str) -> bool:
        code = (
            "import sys, numpy as np; from datamodules.base import read_rgb;"
            "a = read_rgb(sys.argv[1]); e = np.load(sys.argv[2]);"
            "print('OK' if a.shape == e.shape and np.abs(a.astype(int) - e).max() <= 1 else f'BAD {a.shape} max {a.max()} mean {a.mean():.1f} vs {e.mean():.1f}')"
        )
        r = subprocess.run([sys.executable, "-c", code, str(root / rel), str(root.parent / expected_path)], cwd=repo, capture_output=True, text=True)
        return r.stdout.strip() == "OK"

    return probe


def printed(pattern: str):
    return lambda out: re.search(pattern, out, re.IGNORECASE) is not None


def _expect(root: Path, arr: np.ndarray, name="expected.npy") -> None:
    np.save(root.parent / name, arr)


# CamVid, fastai layout
def _cv(tmp):
    return camvid_fastai(tmp / "camvid")


for _name, _file, _fn in [
    ("truncated image", "images/f1.png", truncate),
    ("zero-byte image", "images/f1.png", zero),
    ("text file as image", "images/f1.png", not_image),
    ("truncated image in valid split", "images/f5.png", truncate),
    ("truncated mask", "labels/f1_P.png", truncate),
    ("zero-byte mask", "labels/f1_P.png", zero),
]:
    def _b(tmp, file=_file, fn=_fn):
        root = _cv(tmp)
        fn(root / file)
        return root, Path(file).name

    case(f"camvid: {_name}", "camvid")(_b)


@case("camvid: mask id out of range (200)", "camvid")
def _(tmp):
    root = _cv(tmp)
    a = np.asarray(Image.open(root / "labels/f2_P.png")).copy()
    a[3, 3] = 200
    Image.fromarray(a, mode="L").save(root / "labels/f2_P.png")
    return root, "f2_P.png"


@case("camvid: RGB colour mask", "camvid")
def _(tmp):
    root = _cv(tmp)
    a = np.asarray(Image.open(root / "labels/f2_P.png"))
    Image.fromarray(np.stack([a * 7, a * 3, a], -1).astype(np.uint8)).save(root / "labels/f2_P.png")
    return root, "f2_P.png"


@case("camvid: 16-bit mask, ids x 257", "camvid")
def _(tmp):
    root = _cv(tmp)
    a = np.asarray(Image.open(root / "labels/f2_P.png")).astype(np.uint16) * 257
    Image.fromarray(a).save(root / "labels/f2_P.png")
    return root, "f2_P.png"


@case("camvid: 16-bit mask holding valid ids", "camvid", expect="train")
def _(tmp):
    root = _cv(tmp)
    a = np.asarray(Image.open(root / "labels/f2_P.png")).astype(np.uint16)
    Image.fromarray(a).save(root / "labels/f2_P.png")
    return root, "f2_P.png"


@case("camvid: LA mask", "camvid")
def _(tmp):
    root = _cv(tmp)
    Image.open(root / "labels/f2_P.png").convert("LA").save(root / "labels/f2_P.png")
    return root, "f2_P.png"


@case("camvid: mask size differs from image", "camvid")
def _(tmp):
    root = _cv(tmp)
    Image.open(root / "labels/f2_P.png").resize((32, 24)).save(root / "labels/f2_P.png")
    return root, "f2_P.png"


@case("camvid: mask missing", "camvid")
def _(tmp):
    root = _cv(tmp)
    (root / "labels/f2_P.png").unlink()
    return root, "f2_P.png"


@case("camvid: short codes.txt (12 names, ids up to 31)", "camvid")
def _(tmp):
    root = _cv(tmp)
    (root / "codes.txt").write_text("\n".join(CAMVID_CODES[:12]) + "\n")
    return root, "codes.txt"


@case("camvid: empty codes.txt", "camvid")
def _(tmp):
    root = _cv(tmp)
    (root / "codes.txt").write_text("\n")
    return root, "codes.txt"


@case("camvid: non-UTF-8 codes.txt", "camvid")
def _(tmp):
    root = _cv(tmp)
    latin1(root / "codes.txt", "\n".join(["Café"] + CAMVID_CODES[1:]) + "\n")
    return root, "codes.txt"


@case("camvid: duplicate names in codes.txt", "camvid")
def _(tmp):
    root = _cv(tmp)
    (root / "codes.txt").write_text("\n".join(CAMVID_CODES[:-2] + ["Void", "Void"]) + "\n")
    return root, "codes.txt"


@case("camvid: codes.txt missing", "camvid")
def _(tmp):
    root = _cv(tmp)
    (root / "codes.txt").unlink()
    return root, "codes.txt"


@case("camvid: valid.txt names an unknown image", "camvid")
def _(tmp):
    root = _cv(tmp)
    (root / "valid.txt").write_text("f4.png\nnope.png\n")
    return root, "valid.txt"


@case("camvid: non-UTF-8 valid.txt", "camvid")
def _(tmp):
    root = _cv(tmp)
    latin1(root / "valid.txt", "f4.png\nf5\xe9.png\n")
    return root, "valid.txt"


@case("camvid: every image in valid.txt (empty train)", "camvid")
def _(tmp):
    root = _cv(tmp)
    (root / "valid.txt").write_text("\n".join(f"f{i}.png" for i in range(6)) + "\n")
    return root, "train"


@case("camvid: labels/ missing", "camvid")
def _(tmp):
    root = _cv(tmp)
    shutil.rmtree(root / "labels")
    return root, "labels"


@case("camvid: 32-bit float TIFF image", "camvid")
def _(tmp):
    root = _cv(tmp)
    (root / "images/f1.png").unlink()
    (root / "labels/f1_P.png").rename(root / "labels/f1_P.tif")
    Image.fromarray(np.random.default_rng(0).random((48, 64), np.float32)).save(root / "images/f1.tif")
    return root, "f1.tif"


@case("camvid: 16-bit greyscale PNG image", "camvid", expect="train", probe=pixels_probe("images/f1.png", "expected.npy"))
def _(tmp):
    root = _cv(tmp)
    _expect(root, save_16bit(root / "images/f1.png"))
    return root, "f1.png"


@case("camvid: 16-bit greyscale TIFF image", "camvid", expect="train", probe=pixels_probe("images/f1.tif", "expected.npy"))
def _(tmp):
    root = _cv(tmp)
    (root / "images/f1.png").unlink()
    Image.open(root / "labels/f1_P.png").save(root / "labels/f1_P.tif")
    (root / "labels/f1_P.png").unlink()
    _expect(root, save_16bit(root / "images/f1.tif"))
    return root, "f1.tif"


@case("camvid: RGBA image", "camvid", expect="train", probe=pixels_probe("images/f1.png", "expected.npy"))
def _(tmp):
    root = _cv(tmp)
    a = np.asarray(Image.open(root / "images/f1.png"))
    Image.fromarray(np.concatenate([a, np.full((*a.shape[:2], 1), 128, np.uint8)], -1)).save(root / "images/f1.png")
    _expect(root, a)
    return root, "f1.png"


@case("camvid: greyscale image", "camvid", expect="train", probe=pixels_probe("images/f1.png", "expected.npy"))
def _(tmp):
    root = _cv(tmp)
    g = np.asarray(Image.open(root / "images/f1.png").convert("L"))
    Image.fromarray(g, mode="L").save(root / "images/f1.png")
    _expect(root, np.repeat(g[..., None], 3, -1))
    return root, "f1.png"


@case("camvid: palette image with alpha transparency", "camvid", expect="train", probe=pixels_probe("images/f1.png", "expected.npy"))
def _(tmp):
    root = _cv(tmp)
    p = Image.open(root / "images/f1.png").quantize(16)
    p.info["transparency"] = bytes([0] + [255] * 15)
    p.save(root / "images/f1.png", transparency=bytes([0] + [255] * 15))
    _expect(root, np.asarray(p.convert("RGB")))
    return root, "f1.png"


# CamVid, SegNet layout
def _sg(tmp):
    return camvid_segnet(tmp / "segnet")


@case("segnet: truncated train image", "camvid")
def _(tmp):
    root = _sg(tmp)
    truncate(root / "train/s1.png")
    return root, "s1.png"


@case("segnet: annotation missing", "camvid")
def _(tmp):
    root = _sg(tmp)
    (root / "trainannot/s1.png").unlink()
    return root, "s1.png"


@case("segnet: annotation id 12 (12 classes)", "camvid")
def _(tmp):
    root = _sg(tmp)
    a = np.asarray(Image.open(root / "trainannot/s1.png")).copy()
    a[0, 0] = 12
    Image.fromarray(a, mode="L").save(root / "trainannot/s1.png")
    return root, "s1.png"


@case("segnet: RGB annotation in val", "camvid")
def _(tmp):
    root = _sg(tmp)
    Image.open(root / "valannot/s1.png").convert("RGB").save(root / "valannot/s1.png")
    return root, "s1.png"


@case("segnet: valannot/ missing", "camvid")
def _(tmp):
    root = _sg(tmp)
    shutil.rmtree(root / "valannot")
    return root, "valannot"


@case("segnet: short codes.txt beside SegNet folders", "camvid")
def _(tmp):
    root = _sg(tmp)
    (root / "codes.txt").write_text("\n".join(SEGNET[:5]) + "\n")
    return root, "codes.txt"


@case("segnet: zero-byte val image", "camvid")
def _(tmp):
    root = _sg(tmp)
    zero(root / "val/s0.png")
    return root, "s0.png"


@case("segnet: 16-bit train image", "camvid", expect="train", probe=pixels_probe("train/s2.png", "expected.npy"))
def _(tmp):
    root = _sg(tmp)
    _expect(root, save_16bit(root / "train/s2.png"))
    return root, "s2.png"


# Planet
def _pl(tmp, layout="fastai"):
    return planet(tmp / "planet", layout)


for _name, _fn in [("truncated JPEG", truncate), ("zero-byte JPEG", zero), ("text file as JPEG", not_image)]:
    def _b(tmp, fn=_fn):
        root = _pl(tmp)
        fn(root / "train/train_3.jpg")
        return root, "train_3.jpg"

    case(f"planet: {_name}", "planet")(_b)


@case("planet: truncated JPEG (90% kept)", "planet")
def _(tmp):
    root = _pl(tmp)
    truncate(root / "train/train_3.jpg", 0.9)
    return root, "train_3.jpg"


@case("planet: non-UTF-8 labels.csv", "planet")
def _(tmp):
    root = _pl(tmp)
    raw = (root / "labels.csv").read_bytes().replace(b"train_2,", b"train_2\xe9,")
    (root / "labels.csv").write_bytes(raw)
    return root, "labels.csv"


@case("planet: duplicate image_name row", "planet")
def _(tmp):
    root = _pl(tmp)
    rewrite_csv(root / "labels.csv", lambda rows: rows.append(list(rows[2])))
    return root, "labels.csv"


@case("planet: unknown tag", "planet")
def _(tmp):
    root = _pl(tmp)
    rewrite_csv(root / "labels.csv", lambda rows: rows[2].__setitem__(1, "clear lava"))
    return root, "labels.csv"


@case("planet: empty tags field", "planet")
def _(tmp):
    root = _pl(tmp)
    rewrite_csv(root / "labels.csv", lambda rows: rows[2].__setitem__(1, ""))
    return root, "labels.csv"


@case("planet: wrong header", "planet")
def _(tmp):
    root = _pl(tmp)
    rewrite_csv(root / "labels.csv", lambda rows: rows.__setitem__(0, ["name", "labels"]))
    return root, "labels.csv"


@case("planet: header only", "planet")
def _(tmp):
    root = _pl(tmp)
    (root / "labels.csv").write_text("image_name,tags\n")
    return root, "labels.csv"


@case("planet: zero-byte labels.csv", "planet")
def _(tmp):
    root = _pl(tmp)
    zero(root / "labels.csv")
    return root, "labels.csv"


@case("planet: image listed but missing", "planet")
def _(tmp):
    root = _pl(tmp)
    (root / "train/train_4.jpg").unlink()
    return root, "train_4.jpg"


@case("planet: train/ missing", "planet")
def _(tmp):
    root = _pl(tmp)
    shutil.rmtree(root / "train")
    return root, "train"


@case("planet: ragged CSV row (3 fields)", "planet")
def _(tmp):
    root = _pl(tmp)
    rewrite_csv(root / "labels.csv", lambda rows: rows[3].append("extra"))
    return root, "labels.csv"


@case("planet: 16-bit PNG listed by name", "planet", expect="train", probe=pixels_probe("train/train_5.png", "expected.npy"))
def _(tmp):
    root = _pl(tmp)
    (root / "train/train_5.jpg").unlink()
    _expect(root, save_16bit(root / "train/train_5.png", 48, 48))
    rewrite_csv(root / "labels.csv", lambda rows: rows[6].__setitem__(0, "train_5.png"))
    return root, "train_5.png"


@case("planet: 16-bit TIFF listed by name", "planet", expect="train", probe=pixels_probe("train/train_5.tif", "expected.npy"))
def _(tmp):
    root = _pl(tmp)
    (root / "train/train_5.jpg").unlink()
    _expect(root, save_16bit(root / "train/train_5.tif", 48, 48))
    rewrite_csv(root / "labels.csv", lambda rows: rows[6].__setitem__(0, "train_5.tif"))
    return root, "train_5.tif"


@case("planet: RGBA PNG listed by name", "planet", expect="train", probe=pixels_probe("train/train_5.png", "expected.npy"))
def _(tmp):
    root = _pl(tmp)
    a = np.asarray(Image.open(root / "train/train_5.jpg").convert("RGB"))
    (root / "train/train_5.jpg").unlink()
    Image.fromarray(np.concatenate([a, np.full((48, 48, 1), 200, np.uint8)], -1)).save(root / "train/train_5.png")
    _expect(root, a)
    rewrite_csv(root / "labels.csv", lambda rows: rows[6].__setitem__(0, "train_5.png"))
    return root, "train_5.png"


@case("planet: 32-bit float TIFF listed by name", "planet")
def _(tmp):
    root = _pl(tmp)
    (root / "train/train_5.jpg").unlink()
    Image.fromarray(np.random.default_rng(0).random((48, 48), np.float32) * 1000).save(root / "train/train_5.tif")
    rewrite_csv(root / "labels.csv", lambda rows: rows[6].__setitem__(0, "train_5.tif"))
    return root, "train_5.tif"


@case("planet kaggle: truncated JPEG", "planet")
def _(tmp):
    root = _pl(tmp, "kaggle")
    truncate(root / "train-jpg/train_7.jpg")
    return root, "train_7.jpg"


@case("planet kaggle: train-jpg/ missing", "planet")
def _(tmp):
    root = _pl(tmp, "kaggle")
    shutil.rmtree(root / "train-jpg")
    return root, "train-jpg"


@case("planet kaggle: non-UTF-8 train_v2.csv", "planet")
def _(tmp):
    root = _pl(tmp, "kaggle")
    raw = (root / "train_v2.csv").read_bytes().replace(b"clear", b"cl\xe9ar", 1)
    (root / "train_v2.csv").write_bytes(raw)
    return root, "train_v2.csv"


# BIWI
def _bw(tmp):
    return biwi(tmp / "biwi")


def _pose(root: Path, person="01", k=1) -> Path:
    return root / person / f"frame_{k:05d}_pose.txt"


def _write_pose(path: Path, centre: str) -> None:
    path.write_text(f"1 0 0\n0 1 0\n0 0 1\n\n{centre}\n")


@case("biwi: head centre projects far outside the frame", "biwi")
def _(tmp):
    root = _bw(tmp)
    _write_pose(_pose(root), "2000 0 900")
    return root, "frame_00001_pose.txt"


@case("biwi: head centre just outside the frame (left)", "biwi")
def _(tmp):
    root = _bw(tmp)
    f = 517.679 * 160 / 640
    _write_pose(_pose(root), f"{-90 * 900 / f:.3f} 0 900")  # x = -10 px
    return root, "frame_00001_pose.txt"


@case("biwi: head centre outside in a validation frame", "biwi")
def _(tmp):
    root = _bw(tmp)
    _write_pose(_pose(root, "13", 2), "0 3000 900")
    return root, "frame_00002_pose.txt"


@case("biwi: frames 4x smaller than rgb.cal's intrinsics", "biwi")
def _(tmp):
    root = _bw(tmp)
    (root / "01/rgb.cal").write_text("517.679 0 320\n0 517.679 240.5\n0 0 1\n")  # for 640x480, frames are 160x120
    return root, "rgb.cal"


@case("biwi: one frame of another size than the others", "biwi")
def _(tmp):
    root = _bw(tmp)
    Image.open(root / "01/frame_00002_rgb.jpg").resize((640, 480)).save(root / "01/frame_00002_rgb.jpg")
    return root, "frame_00002_rgb.jpg"


for _name, _fn in [("truncated frame", truncate), ("zero-byte frame", zero), ("text file as frame", not_image)]:
    def _b(tmp, fn=_fn):
        root = _bw(tmp)
        fn(root / "01/frame_00003_rgb.jpg")
        return root, "frame_00003_rgb.jpg"

    case(f"biwi: {_name}", "biwi")(_b)


@case("biwi: truncated validation frame", "biwi")
def _(tmp):
    root = _bw(tmp)
    truncate(root / "13/frame_00000_rgb.jpg")
    return root, "frame_00000_rgb.jpg"


@case("biwi: pose missing", "biwi")
def _(tmp):
    root = _bw(tmp)
    _pose(root).unlink()
    return root, "frame_00001_pose.txt"


@case("biwi: pose not numbers", "biwi")
def _(tmp):
    root = _bw(tmp)
    _write_pose(_pose(root), "12 abc 900")
    return root, "frame_00001_pose.txt"


@case("biwi: pose with NaN", "biwi")
def _(tmp):
    root = _bw(tmp)
    _write_pose(_pose(root), "nan 0 900")
    return root, "frame_00001_pose.txt"


@case("biwi: pose behind the camera (Z < 0)", "biwi")
def _(tmp):
    root = _bw(tmp)
    _write_pose(_pose(root), "0 0 -900")
    return root, "frame_00001_pose.txt"


@case("biwi: empty pose file", "biwi")
def _(tmp):
    root = _bw(tmp)
    zero(_pose(root))
    return root, "frame_00001_pose.txt"


@case("biwi: binary garbage pose file", "biwi")
def _(tmp):
    root = _bw(tmp)
    _pose(root).write_bytes(b"\xff\xfe\x00\x01garbage\x80\x81\n")
    return root, "frame_00001_pose.txt"


@case("biwi: rgb.cal missing", "biwi")
def _(tmp):
    root = _bw(tmp)
    (root / "01/rgb.cal").unlink()
    return root, "rgb.cal"


@case("biwi: rgb.cal two lines", "biwi")
def _(tmp):
    root = _bw(tmp)
    (root / "01/rgb.cal").write_text("129 0 80\n0 129 60\n")
    return root, "rgb.cal"


@case("biwi: rgb.cal non-UTF-8", "biwi")
def _(tmp):
    root = _bw(tmp)
    (root / "01/rgb.cal").write_bytes(b"129.4 0 80\n0 129.4 60\n0 0 1\n\n# cam\xe9ra\n")
    return root, "rgb.cal"


@case("biwi: validation person missing", "biwi", extra=("--data.init_args.valid_persons", "[07]"))
def _(tmp):
    return _bw(tmp), "07"


# IMDB
def _im(tmp):
    return imdb_csv(tmp / "imdb")


@case("imdb: validation reviews duplicated in train", "imdb", expect="train", probe=None)
def _(tmp):
    root = _im(tmp)

    def edit(rows):
        for r in [r for r in rows[1:] if r[2] == "True"][:3]:
            rows.append([r[0], r[1], "False"])

    rewrite_csv(root / "texts.csv", edit)
    return root, "texts.csv"


@case("imdb: non-UTF-8 texts.csv", "imdb")
def _(tmp):
    root = _im(tmp)
    raw = (root / "texts.csv").read_bytes().replace(b"Review 3", b"R\xe9view 3")
    (root / "texts.csv").write_bytes(raw)
    return root, "texts.csv"


@case("imdb: unknown label", "imdb")
def _(tmp):
    root = _im(tmp)
    rewrite_csv(root / "texts.csv", lambda rows: rows[3].__setitem__(0, "meh"))
    return root, "texts.csv"


@case("imdb: empty text", "imdb")
def _(tmp):
    root = _im(tmp)
    rewrite_csv(root / "texts.csv", lambda rows: rows[3].__setitem__(1, "  <br />  "))
    return root, "texts.csv"


@case("imdb: missing text column", "imdb")
def _(tmp):
    root = _im(tmp)
    rewrite_csv(root / "texts.csv", lambda rows: rows.__setitem__(0, ["label", "review", "is_valid"]))
    return root, "texts.csv"


@case("imdb: is_valid not a boolean", "imdb")
def _(tmp):
    root = _im(tmp)
    rewrite_csv(root / "texts.csv", lambda rows: rows[3].__setitem__(2, "maybe"))
    return root, "texts.csv"


@case("imdb: no validation rows", "imdb")
def _(tmp):
    root = _im(tmp)
    rewrite_csv(root / "texts.csv", lambda rows: [r.__setitem__(2, "False") for r in rows[1:]])
    return root, "valid"


@case("imdb: zero-byte texts.csv", "imdb")
def _(tmp):
    root = _im(tmp)
    zero(root / "texts.csv")
    return root, "texts.csv"


@case("imdb: unbalanced quote in texts.csv", "imdb")
def _(tmp):
    root = _im(tmp)
    with open(root / "texts.csv", "a", encoding="utf-8") as f:
        f.write('positive,"never closed,False\n')
    return root, "texts.csv"


@case("imdb acl: non-UTF-8 review file", "imdb")
def _(tmp):
    root = imdb_acl(tmp / "acl")
    latin1(root / "train/pos/3_7.txt", "Caf\xe9 of a film.")
    return root, "3_7.txt"


@case("imdb acl: empty review file", "imdb")
def _(tmp):
    root = imdb_acl(tmp / "acl")
    zero(root / "train/neg/2_2.txt")
    return root, "2_2.txt"


@case("imdb acl: the same review in several train files", "imdb", expect="train")
def _(tmp):
    root = imdb_acl(tmp / "acl")
    text = (root / "train/pos/0_7.txt").read_text()
    for k in range(6):
        (root / f"train/pos/{k}_7.txt").write_text(text)
    return root, "0_7.txt"


# -- running ----------------------------------------------------------------------------------------
COMMON = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
          "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TASK_ARGS = {
    "camvid": ["--data.init_args.size", "[32,64]", "--data.init_args.batch_size", "2"],
    "planet": ["--data.init_args.size", "32", "--data.init_args.batch_size", "4"],
    "biwi": ["--data.init_args.size", "[64,96]", "--data.init_args.batch_size", "2"],
    "imdb": ["--data.init_args.batch_size", "4", "--data.init_args.max_length", "32"],
}


def classify(c: Case, rc: int, out: str, names: str, root: Path, repo: str) -> tuple[str, str]:
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    tb = "Traceback (most recent call last)" in out or "Caught " in out
    if rc != 0:
        if tb or len(errors) != 1:
            last = errors[-1] if errors else next((ln for ln in reversed(out.splitlines()) if ln.strip()), "")
            return "traceback", last[:160]
        return ("clear" if names in errors[0] else "vague"), errors[0][:200]
    if c.expect == "error":
        return "silent", "trained"
    ok = True
    detail = "trained"
    if c.probe is not None:
        ok = c.probe(root, repo)
        detail = "pixels right" if ok else "pixels WRONG"
    elif c.task == "imdb":
        line = next((ln for ln in out.splitlines() if re.search(r"duplicate", ln, re.IGNORECASE)), None)
        ok, detail = line is not None, (line or "no line about the duplicates")[:160]
    if not ok:
        return "silent", detail
    warned = re.search(r"\w+Warning: ", out)
    return ("warning" if warned else "handled"), (detail if not warned else out[warned.start():][:120].splitlines()[0])


def run_case(c: Case, repo: str, timeout: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bad-input-"))
    try:
        root, names = c.build(tmp)
        env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1",
                   WANDB_SILENT="true", MPLBACKEND="Agg", LESSON3_CACHE=str(tmp / "cache"))
        env.pop("LESSON3_RUN_DIR", None)
        cmd = ["nice", "-n", "15", sys.executable, "train.py", "fit", "--task", c.task, "--data.init_args.root", str(root),
               "--runs_dir", str(tmp / "runs"), *COMMON, *TASK_ARGS[c.task], *c.extra]
        t0 = time.time()
        try:
            r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
            rc, out = r.returncode, r.stdout + r.stderr
        except subprocess.TimeoutExpired as e:
            rc, out = -9, f"timeout after {timeout}s\n{e.stdout or ''}{e.stderr or ''}"
        outcome, detail = classify(c, rc, out, names, root, repo)
        tb_lines = sum(1 for ln in out.splitlines() if ln.startswith("  File "))
        return {"case": c.name, "task": c.task, "expect": c.expect, "outcome": outcome, "rc": rc, "traceback_frames": tb_lines,
                "seconds": round(time.time() - t0, 1), "detail": detail.replace(str(tmp), "TMP")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=str(HERE), help="checkout whose train.py runs (default: this one)")
    ap.add_argument("--only", default="", help="run the cases whose name contains this text")
    ap.add_argument("--timeout", type=int, default=240, help="seconds per case")
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if args.only.lower() in c.name.lower()]
    results = []
    for k, c in enumerate(cases, 1):
        res = run_case(c, args.repo, args.timeout)
        results.append(res)
        print(f"[{k}/{len(cases)}] {res['outcome']:9s} {res['seconds']:6.1f}s  {c.name}  | {res['detail']}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print("\n| case | datamodule | outcome |\n|---|---|---|")
    for r in results:
        print(f"| {r['case'].split(': ', 1)[1]} | {r['case'].split(': ', 1)[0]} | {r['outcome']} |")
    print("\n" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
