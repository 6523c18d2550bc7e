"""Bad data is refused at setup with one line naming the file, or read right; worker errors are one line.

Every case is tiny data written in the real on-disk layout under ``tmp_path``; the catalogue of
the same inputs through ``train.py`` is ``benchmarks/bad_inputs.py``.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from conftest import ROOT
from datamodules import CamVidDataModule, DataError
from datamodules.decode import read_rgb
from datamodules.biwi import BiwiDataModule
from datamodules.checks import check_image
from datamodules.imdb import IMDBDataModule
from datamodules.planet import PlanetDataModule

CODES = [f"c{i}" for i in range(31)] + ["Void"]


# -- tiny datasets in the real layouts ---------------------------------------------------------
def camvid(root: Path, n: int = 6, hw=(48, 64), codes=CODES) -> Path:
    """fastai CamVid: images/X.png, labels/X_P.png (ids 0..31), codes.txt, valid.txt."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "codes.txt").write_text("\n".join(codes) + "\n")
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(root / "images" / f"f{i}.png")
        Image.fromarray(rng.integers(0, 32, hw, dtype=np.uint8), mode="L").save(root / "labels" / f"f{i}_P.png")
    (root / "valid.txt").write_text("f4.png\nf5.png\n")
    return root


def segnet(root: Path, hw=(48, 64)) -> Path:
    rng = np.random.default_rng(0)
    for folder, n in (("train", 3), ("val", 2)):
        (root / folder).mkdir(parents=True)
        (root / f"{folder}annot").mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(root / folder / f"s{i}.png")
            Image.fromarray(rng.integers(0, 12, hw, dtype=np.uint8), mode="L").save(root / f"{folder}annot" / f"s{i}.png")
    return root


def planet(root: Path, n: int = 10) -> Path:
    """fastai Planet: labels.csv + train/<name>.jpg (CMYK, as the real files)."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    rows = [("image_name", "tags")]
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).convert("CMYK").save(root / "train" / f"train_{i}.jpg")
        rows.append((f"train_{i}", ("clear primary", "cloudy", "haze water")[i % 3]))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def biwi(root: Path, wh=(160, 120), frames: int = 3, cal: str | None = None) -> Path:
    """BIWI: 01/ and 13/ with frame_XXXXX_rgb.jpg, frame_XXXXX_pose.txt, rgb.cal (intrinsics of the frame size)."""
    W, H = wh
    f = 517.679 * W / 640
    rng = np.random.default_rng(0)
    for person in ("01", "13"):
        d = root / person
        d.mkdir(parents=True)
        (d / "rgb.cal").write_text(cal or f"{f} 0 {W / 2}\n0 {f} {H / 2}\n0 0 1\n\n0 0 0 0\n")
        for k in range(frames):
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(d / f"frame_{k:05d}_rgb.jpg")
            pose(d / f"frame_{k:05d}_pose.txt", 10.0 * k, -5.0 * k, 900.0)
    return root


def pose(path: Path, x: float, y: float, z: float) -> None:
    path.write_text(f"1 0 0\n0 1 0\n0 0 1\n\n{x} {y} {z}\n")


def texts_csv(root: Path, rows: list[tuple[str, str, bool]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "texts.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("label", "text", "is_valid"), *rows])
    return root


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def break_image(path: Path, keep: float | None) -> None:
    """Cut the file to ``keep`` of its bytes, or (None) replace it with text."""
    if keep is None:
        path.write_text("not a JPEG\n")
    else:
        truncate(path, keep)


def setup_error(dm, stage: str = "fit") -> str:
    with pytest.raises(DataError) as e:
        dm.setup(stage)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# -- reading images: 16-bit scaled, alpha dropped, grey to RGB ---------------------------------------
GREY16 = np.array([[0, 257, 65535, 32896], [514, 25700, 65280, 1000]], np.uint16)
GREY8 = np.array([[0, 1, 255, 128], [2, 100, 254, 4]], np.uint8)  # round(v / 257)


@pytest.mark.parametrize("name", ["g.png", "g.tif"])
def test_16bit_greyscale_is_scaled_not_saturated(tmp_path, name):
    Image.fromarray(GREY16).save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == "I;16"
    a = read_rgb(tmp_path / name)
    assert a.dtype == np.uint8 and a.shape == (2, 4, 3)
    assert (a == GREY8[..., None]).all()


def test_16bit_big_endian_and_32bit_int_tiff(tmp_path):
    Image.frombytes("I;16B", (4, 2), GREY16.astype(">u2").tobytes()).save(tmp_path / "b.tif")
    Image.fromarray(GREY16.astype(np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "b.tif").mode == "I;16B" and Image.open(tmp_path / "i.tif").mode == "I"
    for f in ("b.tif", "i.tif"):
        assert (read_rgb(tmp_path / f) == GREY8[..., None]).all()


@pytest.mark.parametrize("name", ["c.png", "c.tif"])
def test_48bit_rgb_keeps_its_range(tmp_path, name):
    import cv2

    rgb = np.stack([GREY16, GREY16[::-1], np.full_like(GREY16, 65535)], -1)
    cv2.imwrite(str(tmp_path / name), rgb[..., ::-1])  # cv2 writes BGR
    a = read_rgb(tmp_path / name)
    assert np.abs(a.astype(int) - np.round(rgb / 257)).max() <= 1
    assert (a[..., 2] == 255).all() and a[0, 0, 0] == 0


def test_alpha_grey_and_transparent_palette_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, np.full((8, 8, 1), 7, np.uint8)], -1)).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0], mode="L").convert("LA").save(tmp_path / "la.png")
    p = Image.fromarray(rgb).quantize(8)
    p.save(tmp_path / "p.png", transparency=bytes([0] + [255] * 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns on a transparent palette converted straight to RGB
        assert (read_rgb(tmp_path / "a.png") == rgb).all()
        assert (read_rgb(tmp_path / "la.png") == rgb[..., :1]).all()
        assert (read_rgb(tmp_path / "p.png") == np.asarray(p.convert("RGB"))).all()


def test_float_image_is_refused(tmp_path):
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: image mode F \(32-bit float"):
        read_rgb(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: image mode F"):
        check_image(tmp_path / "f.tif")


def test_complete_files_pass_the_quick_check(tmp_path):
    """Not over-strict: a PNG without IEND whose pixels are whole, a JPEG with bytes after EOI."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    truncate(tmp_path / "a.png", 1 - 12 / (tmp_path / "a.png").stat().st_size)  # IEND cut off
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "a.jpg").write_bytes((tmp_path / "a.jpg").read_bytes() + b"\0\0\n")
    assert check_image(tmp_path / "a.png") == (8, 8) and check_image(tmp_path / "a.jpg") == (8, 8)


@pytest.mark.parametrize("name", ["t.png", "t.jpg"])
def test_truncated_file_fails_the_check(tmp_path, name):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    truncate(tmp_path / name, 0.9)
    with pytest.raises(DataError, match=rf"{name}: unreadable image"):
        check_image(tmp_path / name)


def test_16bit_image_reaches_the_batch_scaled(tmp_path):
    """CamVid and Planet items from a 16-bit file hold 25700 / 257 = 100, not 255."""
    root = camvid(tmp_path / "c")
    Image.fromarray(np.full((48, 64), 25700, np.uint16)).save(root / "images" / "f0.png")
    dm = CamVidDataModule(root=str(root), size=(32, 64), num_workers=0, augment=False, augment_on="cpu")
    dm.setup("fit")
    item = next(it for k, it in enumerate(dm.datasets["train"]) if dm.datasets["train"].items[k][0].name == "f0.png")
    assert (item["image"] == 100).all()
    root = planet(tmp_path / "p")
    (root / "train" / "train_0.jpg").unlink()
    Image.fromarray(np.full((48, 48), 25700, np.uint16)).save(root / "train" / "train_0.tif")
    (root / "labels.csv").write_text((root / "labels.csv").read_text().replace("train_0,", "train_0.tif,"))
    dm = PlanetDataModule(root=str(root), size=32, num_workers=0, valid_pct=0.0, augment=False, augment_on="cpu")
    dm.setup("fit")
    k = [p.name for p in dm.datasets["train"].paths].index("train_0.tif")
    assert (dm.datasets["train"][k]["image"] == 100).all()


# -- CamVid: masks and codes.txt at setup ---------------------------------------------------------
def _mask(root: Path, name: str = "f2_P.png") -> np.ndarray:
    return np.asarray(Image.open(root / "labels" / name)).copy()


def test_mask_id_out_of_range_found_at_setup(tmp_path):
    root = camvid(tmp_path / "c")
    m = _mask(root)
    m[3, 3] = 200
    Image.fromarray(m, mode="L").save(root / "labels" / "f2_P.png")
    msg = setup_error(CamVidDataModule(root=str(root), num_workers=0))
    assert "f2_P.png: label value 200 is outside the 32 classes of" in msg and "codes.txt" in msg


def test_short_codes_txt_names_the_mask_and_codes(tmp_path):
    root = camvid(tmp_path / "c", codes=CODES[:12])
    msg = setup_error(CamVidDataModule(root=str(root), num_workers=0))
    assert "_P.png: label value" in msg and "outside the 12 classes of" in msg and str(root / "codes.txt") in msg


def test_rgb_and_la_masks_are_refused(tmp_path):
    root = camvid(tmp_path / "c")
    m = _mask(root)
    Image.fromarray(np.stack([m, m, m], -1)).save(root / "labels" / "f2_P.png")
    assert setup_error(CamVidDataModule(root=str(root), num_workers=0)).startswith(f"{root / 'labels' / 'f2_P.png'}: label image holds colours (RGB), not class ids")
    Image.fromarray(m, mode="L").convert("LA").save(root / "labels" / "f2_P.png")
    assert setup_error(CamVidDataModule(root=str(root), num_workers=0)).startswith(f"{root / 'labels' / 'f2_P.png'}: label image holds mode LA")


def test_16bit_masks_ids_read_scaled_refused(tmp_path):
    root = camvid(tmp_path / "c")
    m = _mask(root)
    Image.fromarray(m.astype(np.uint16)).save(root / "labels" / "f2_P.png")  # ids, 16-bit: fine
    dm = CamVidDataModule(root=str(root), size=(48, 64), num_workers=0, augment=False, augment_on="cpu")
    dm.setup("fit")
    k = [p.name for p, _ in dm.datasets["train"].items].index("f2.png")
    assert (dm.datasets["train"][k]["mask"].numpy() == m).all()
    Image.fromarray(m.astype(np.uint16) * 257).save(root / "labels" / "f2_P.png")  # ids scaled to 16 bits: refused
    msg = setup_error(CamVidDataModule(root=str(root), num_workers=0))
    assert "f2_P.png: label value" in msg and "a 16-bit label image must hold the ids themselves" in msg


def test_codes_txt_encoding_and_duplicates(tmp_path):
    root = camvid(tmp_path / "c")
    (root / "codes.txt").write_bytes("\n".join(["Caf\xe9"] + CODES[1:]).encode("latin-1"))
    assert "codes.txt: not UTF-8 text (byte 3, line 1)" in setup_error(CamVidDataModule(root=str(root), num_workers=0))
    (root / "codes.txt").write_text("\n".join(CODES[:-1] + ["c3"]) + "\n")
    assert "codes.txt: class name(s) ['c3'] listed twice" in setup_error(CamVidDataModule(root=str(root), num_workers=0))
    (root / "codes.txt").write_text("\n".join(CODES) + "\n")
    (root / "valid.txt").write_bytes(b"f4.png\nf5\xe9.png\n")
    assert "valid.txt: not UTF-8 text (byte 9, line 2)" in setup_error(CamVidDataModule(root=str(root), num_workers=0))


@pytest.mark.parametrize("what", ["truncated image", "truncated valid image", "zero-byte image", "truncated mask"])
def test_broken_files_found_at_setup(tmp_path, what):
    root = camvid(tmp_path / "c")
    path = {"truncated image": "images/f1.png", "truncated valid image": "images/f5.png", "zero-byte image": "images/f1.png",
            "truncated mask": "labels/f1_P.png"}[what]
    truncate(root / path, 0.0 if what.startswith("zero") else 0.5)
    msg = setup_error(CamVidDataModule(root=str(root), num_workers=0))
    assert msg.startswith(f"{root / path}: unreadable")


def test_segnet_broken_image_and_rgb_annotation(tmp_path):
    root = segnet(tmp_path / "s")
    truncate(root / "train" / "s1.png")
    assert f"{root / 'train' / 's1.png'}: unreadable image" in setup_error(CamVidDataModule(root=str(root), num_workers=0))
    root = segnet(tmp_path / "s2")
    Image.open(root / "valannot" / "s1.png").convert("RGB").save(root / "valannot" / "s1.png")
    assert setup_error(CamVidDataModule(root=str(root), num_workers=0)).startswith(f"{root / 'valannot' / 's1.png'}: label image holds colours (RGB)")
    (root / "codes.txt").write_text("Sky\nBuilding\nPole\n")  # codes.txt beside SegNet folders names the classes
    Image.open(root / "valannot" / "s0.png").save(root / "valannot" / "s1.png")  # the RGB one replaced
    msg = setup_error(CamVidDataModule(root=str(root), num_workers=0))
    assert "annot/s0.png: label value" in msg and f"outside the 3 classes of {root / 'codes.txt'}" in msg
    root = segnet(tmp_path / "s3")
    m = np.asarray(Image.open(root / "trainannot" / "s0.png")).copy()
    m[0, 0] = 12
    Image.fromarray(m, mode="L").save(root / "trainannot" / "s0.png")
    assert "s0.png: label value 12 is outside the 12 classes of the SegNet classes" in setup_error(CamVidDataModule(root=str(root), num_workers=0))


# -- Planet ------------------------------------------------------------------------------------------
def test_planet_csv_encoding_and_ragged_rows(tmp_path):
    root = planet(tmp_path / "p")
    raw = (root / "labels.csv").read_bytes()
    (root / "labels.csv").write_bytes(raw.replace(b"train_2,", b"train_2\xe9,"))
    assert "labels.csv: not UTF-8 text (byte" in setup_error(PlanetDataModule(root=str(root), num_workers=0))
    (root / "labels.csv").write_bytes(raw.replace(b"train_2,haze water", b"train_2,haze,water"))
    assert "labels.csv, line 4: 3 fields for the 2 columns" in setup_error(PlanetDataModule(root=str(root), num_workers=0))
    (root / "labels.csv").write_bytes(raw + b"train_2,clear\n")
    assert "labels.csv, line 12: duplicate image_name 'train_2' (first on line 4)" in setup_error(PlanetDataModule(root=str(root), num_workers=0))


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.9, None])
def test_planet_broken_jpeg_found_at_setup_or_skipped(tmp_path, keep):
    root = planet(tmp_path / "p")
    break_image(root / "train" / "train_3.jpg", keep)
    msg = setup_error(PlanetDataModule(root=str(root), num_workers=0))
    assert msg.startswith(f"{root / 'train' / 'train_3.jpg'}: unreadable image") and "Listed in labels.csv, line 5." in msg
    dm = PlanetDataModule(root=str(root), num_workers=0, skip_unreadable=True)
    with pytest.warns(UserWarning, match="left out 1 unreadable image"):
        dm.setup("fit")
    assert dm.skipped == [str(root / "train" / "train_3.jpg")]


def test_planet_kaggle_layout_checks(tmp_path):
    root = planet(tmp_path / "p")
    (root / "train").rename(root / "train-jpg")
    (root / "labels.csv").rename(root / "train_v2.csv")
    truncate(root / "train-jpg" / "train_7.jpg")
    msg = setup_error(PlanetDataModule(root=str(root), num_workers=0))
    assert msg.startswith(f"{root / 'train-jpg' / 'train_7.jpg'}: unreadable image") and "Listed in train_v2.csv, line 9." in msg
    (root / "train_v2.csv").write_bytes((root / "train_v2.csv").read_bytes().replace(b"clear", b"cl\xe9ar", 1))
    assert "train_v2.csv: not UTF-8 text (byte" in setup_error(PlanetDataModule(root=str(root), num_workers=0))


def test_float_image_refused_at_setup(tmp_path):
    root = planet(tmp_path / "p")
    (root / "train" / "train_5.jpg").unlink()
    Image.fromarray(np.random.default_rng(0).random((48, 48), np.float32)).save(root / "train" / "train_5.tif")
    (root / "labels.csv").write_text((root / "labels.csv").read_text().replace("train_5,", "train_5.tif,"))
    msg = setup_error(PlanetDataModule(root=str(root), num_workers=0))
    assert msg.startswith(f"{root / 'train' / 'train_5.tif'}: image mode F (32-bit float) is not read") and "line 7" in msg


# -- BIWI ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x, y", [(2000.0, 0.0), (0.0, -3000.0), (-600.0, 0.0)])
def test_biwi_head_centre_outside_the_frame_is_refused(tmp_path, x, y):
    root = biwi(tmp_path / "b")
    pose(root / "01" / "frame_00001_pose.txt", x, y, 900.0)  # (-600, 0, 900): x = -6.3 px, just outside
    msg = setup_error(BiwiDataModule(root=str(root), valid_persons=["13"], num_workers=0))
    assert msg.startswith(f"{root / '01' / 'frame_00001_pose.txt'}: the head centre projects to (")
    assert "outside its 160x120 frame frame_00001_rgb.jpg" in msg


def test_biwi_head_centre_near_the_edge_is_kept(tmp_path):
    root = biwi(tmp_path / "b")
    f = 517.679 * 160 / 640
    pose(root / "01" / "frame_00001_pose.txt", 78.5 * 900 / f, 58.5 * 900 / f, 900.0)  # (158.5, 118.5): inside
    dm = BiwiDataModule(root=str(root), valid_persons=["13"], num_workers=0)
    dm.setup("fit")
    assert dm.datasets["train"].items[1][2] == pytest.approx((158.5, 118.5), abs=0.1)


def test_biwi_calibration_for_another_frame_size_is_refused(tmp_path):
    root = biwi(tmp_path / "b", cal="517.679 0 320\n0 517.679 240.5\n0 0 1\n")  # 640x480 intrinsics, 160x120 frames
    msg = setup_error(BiwiDataModule(root=str(root), valid_persons=["13"], num_workers=0))
    assert msg.startswith(f"{root / '01' / 'rgb.cal'}: principal point (320, 240.5) is not near the centre of frame_00000_rgb.jpg (160x120)")
    root = biwi(tmp_path / "b2")
    Image.open(root / "13" / "frame_00002_rgb.jpg").resize((640, 480)).save(root / "13" / "frame_00002_rgb.jpg")
    msg = setup_error(BiwiDataModule(root=str(root), valid_persons=["13"], num_workers=0))
    assert "13/rgb.cal: principal point (80, 60) is not near the centre of frame_00002_rgb.jpg (640x480)" in msg


@pytest.mark.parametrize("keep", [0.0, 0.5, None])
def test_biwi_broken_frame_found_at_setup(tmp_path, keep):
    root = biwi(tmp_path / "b")
    break_image(root / "13" / "frame_00000_rgb.jpg", keep)
    msg = setup_error(BiwiDataModule(root=str(root), valid_persons=["13"], num_workers=0))
    assert msg.startswith(f"{root / '13' / 'frame_00000_rgb.jpg'}: unreadable image")


# -- IMDB: duplicates across splits --------------------------------------------------------------------
def _reviews(n: int, valid_from: int) -> list[tuple[str, str, bool]]:
    return [(("negative", "positive")[k % 2], f"Review number {k}: {'good' if k % 2 else 'bad'} film.", k >= valid_from) for k in range(n)]


def test_imdb_validation_reviews_copied_into_train_are_left_out(tmp_path, monkeypatch):
    lines = []
    monkeypatch.setattr("datamodules.imdb.rank_zero_info", lines.append)
    rows = _reviews(12, 8)
    rows += [(lab, text.replace("Review", "<br />Review"), False) for lab, text, v in rows if v][:3]  # the same after cleaning
    rows += [rows[0]]  # and one repeated within training
    root = texts_csv(tmp_path / "i", rows)
    dm = IMDBDataModule(root=str(root), num_workers=0)
    dm.setup("fit")
    train, valid = dm.datasets["train"].reviews, dm.datasets["valid"].reviews
    assert len(valid) == 4 and len(train) == 8 and not set(train.texts) & set(valid.texts)
    assert len(set(train.texts)) == len(train)
    assert len(lines) == 1 and "left 4 duplicate review(s) out of training: 3 also in the validation split" in lines[0]
    assert "1 repeated within training" in lines[0] and str(root) in lines[0]


def test_imdb_acl_and_lm_duplicates(tmp_path, monkeypatch):
    lines = []
    monkeypatch.setattr("datamodules.imdb.rank_zero_info", lines.append)
    root = tmp_path / "acl"
    for sub, label in (("pos", "good"), ("neg", "bad")):
        (root / "train" / sub).mkdir(parents=True)
        for k in range(10):
            (root / "train" / sub / f"{k}_{7 if sub == 'pos' else 2}.txt").write_text(f"A {label} film, take {k if k < 5 else 0}.")
    for lm in (False, True):
        dm = IMDBDataModule(root=str(root), num_workers=0, lm=lm, valid_pct=0.3)
        dm.setup("fit")
        train, valid = dm.datasets["train"].reviews, dm.datasets["valid"].reviews
        assert not set(train.texts) & set(valid.texts) and len(set(train.texts)) == len(train)
        assert len(set(train.texts) | set(valid.texts)) == 10  # every distinct review is still somewhere
    assert len(lines) == 2 and all("duplicate review(s) out of training" in ln for ln in lines)


def test_imdb_no_duplicates_no_line(tmp_path, monkeypatch):
    lines = []
    monkeypatch.setattr("datamodules.imdb.rank_zero_info", lines.append)
    dm = IMDBDataModule(root=str(texts_csv(tmp_path / "i", _reviews(12, 8))), num_workers=0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 8 and lines == []


# -- loader workers: the same one line --------------------------------------------------------------
def test_worker_traceback_is_cut_to_the_message():
    wrapped = (
        "Caught DataError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nOSError: broken data stream\n\n'
        "The above exception was the direct cause of the following exception:\n\n"
        'Traceback (most recent call last):\n  File "y.py", line 2, in g\n'
        "datamodules.base.DataError: /d/f1.png: unreadable image (broken data stream).\n"
    )
    assert str(DataError(wrapped)) == "/d/f1.png: unreadable image (broken data stream)."
    assert str(DataError("/d/x: plain")) == "/d/x: plain"


@pytest.mark.parametrize("what", ["truncated image", "zero-byte image", "RGB mask", "mask id out of range", "16-bit mask"])
def test_worker_error_is_one_line(tmp_path, what):
    """A file broken after setup fails in a loader process: the DataError that reaches the main
    process says just what the in-process one says."""
    root = camvid(tmp_path / "c")
    dm = CamVidDataModule(root=str(root), size=(32, 64), batch_size=2, num_workers=1)
    dm.setup("fit")
    first = dm.datasets["valid"].items[0]
    if "image" in what:
        truncate(first[0], 0.0 if what.startswith("zero") else 0.5)
    else:
        m = np.asarray(Image.open(first[1]))
        img = {"RGB mask": np.stack([m, m, m], -1), "mask id out of range": m + 40, "16-bit mask": m.astype(np.uint16) * 257}[what]
        Image.fromarray(img).save(first[1])
    with pytest.raises(DataError) as e:
        next(iter(dm.val_dataloader()))  # not shuffled: item 0 first
    msg = str(e.value)
    assert msg.startswith(str(first[0] if "image" in what else first[1]) + ": ")
    assert "\n" not in msg and "Caught" not in msg and "Traceback" not in msg
    with pytest.raises(DataError) as e0:
        dm.datasets["valid"][0]
    assert str(e0.value) == msg  # what the in-process path says


def _cli(args: list[str], code: str = "", cwd: Path = ROOT) -> subprocess.CompletedProcess:
    prog = "import sys, train\n" + code + f"\nsys.argv = ['train.py', *{args!r}]\ntrain.main()\n"
    return subprocess.run([sys.executable, "-c", prog], cwd=cwd, capture_output=True, text=True, timeout=600)


FAST = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--data.init_args.size", "32", "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "1",
        "--model.init_args.net.init_args.weights", "null"]


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_cli_setup_error_is_one_line(tmp_path, keep):
    root = planet(tmp_path / "p")
    truncate(root / "train" / "train_3.jpg", keep)
    r = _cli(["fit", "--task", "planet", "--data.init_args.root", str(root), "--runs_dir", str(tmp_path / "runs"), *FAST])
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Caught" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {root / 'train' / 'train_3.jpg'}: unreadable image (")


@pytest.mark.slow
def test_cli_worker_error_mid_run_is_one_line_and_keeps_the_epoch(tmp_path):
    """Every image breaks after epoch 0: epoch 1's loader process fails; one line, exit 1, and
    on_exception.ckpt holds epoch 0's steps."""
    root = planet(tmp_path / "p")
    code = (
        "import pytorch_lightning as pl\nfrom pathlib import Path\n"
        "class Break(pl.Callback):\n"
        "    def on_train_epoch_end(self, trainer, module):\n"
        f"        for p in Path({str(root / 'train')!r}).iterdir(): p.write_bytes(p.read_bytes()[:200])\n"
        "make = train.KitCLI.instantiate_trainer\n"
        "def instantiate(self, **kw):\n    t = make(self, **kw); t.callbacks.append(Break()); return t\n"
        "train.KitCLI.instantiate_trainer = instantiate\n"
    )
    r = _cli(["fit", "--task", "planet", "--data.init_args.root", str(root), "--run_dir", str(tmp_path / "run"),
              "--trainer.max_epochs", "3", "--data.init_args.store", "false", *FAST], code)  # decoded in the loaders each epoch
    # (with the decode-once store, epochs after the first read the store: breaking the files then goes unseen)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Caught" not in r.stderr and "DataLoader worker" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and f"error: {root / 'train'}/train_" in errors[0] and ": unreadable image (" in errors[0]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "on_exception.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["epoch"] == 1


def test_jpegs_the_quick_test_cannot_vouch_for_are_decoded_within_a_budget(tmp_path):
    """A JPEG with bytes after its end marker (Planet's real files) passes the quick test; one whose
    trailing bytes look like a scan start is decoded to be sure, a bounded, seeded sample of them."""
    from datamodules.checks import check_images, probe_image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        p = tmp_path / f"t{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        p.write_bytes(p.read_bytes() + (b"x\x9c\x00\x00" if i == 0 else b"\xff\xda trailing"))
        paths.append(p)
    truncate(paths[4], 0.6)
    assert probe_image(paths[0]) == ((32, 32), True) and probe_image(paths[1]) == ((32, 32), False)
    assert check_image(paths[1]) == (32, 32)
    errors, left = check_images(paths, budget=None)
    assert list(errors) == [4] and left == 0 and "t4.jpg: unreadable image" in str(errors[4])
    errors, left = check_images(paths, budget=2)
    assert left == 3 and set(errors) <= {4}
    found = {k for seed in range(20) for k in check_images(paths, budget=2, seed=seed)[0]}
    assert found == {4}  # the sample moves with the seed
