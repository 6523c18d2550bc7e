"""The decode-once store (datamodules/store.py): the same items as decoding on the fly, rebuilt when a
file changes, atomic, one line for a bad file, shared by processes, and a full disk falls back."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from test_camvid import write_fastai
from test_planet import write_planet

import datamodules.store as store_mod
from datamodules.base import DataError
from datamodules.camvid import CamVidDataModule
from datamodules.planet import PlanetDataModule
from datamodules.points import PointsDataModule, write_points_sample
from datamodules.store import Store, get_store, store_root


def stores(folder) -> list:
    """The complete-looking stores under a folder (with a manifest)."""
    return sorted(p.parent for p in folder.glob("*/manifest.json"))


def camvid(tmp_path, **kw):
    root = tmp_path / "camvid"
    if not root.exists():
        write_fastai(root, hw=(48, 64))
    dm = CamVidDataModule(root=str(root), size=(32, 48), augment=False, num_workers=0, store_dir=str(tmp_path / "store"), **kw)
    dm.setup("fit")
    return dm


def same_items(a, b, keys=("image", "mask", "target", "orig_size")) -> None:
    assert len(a) == len(b)
    for i in range(len(a)):
        x, y = a[i], b[i]
        for k in keys:
            if k in x:
                assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), (i, k)


def test_store_items_are_bitwise_the_decoded_ones(tmp_path):
    """Images and masks (CamVid, resized), Planet's CMYK JPEGs (draft + area resize) and points'
    images, orig sizes and targets: from the store exactly as decoded from the files."""
    on, off = camvid(tmp_path, store=True), camvid(tmp_path, store=False)
    for s in ("train", "valid"):
        on.use_store(s)
        assert isinstance(on.datasets[s].store, Store)
        same_items(on.datasets[s], off.datasets[s])
    batch = next(iter(on.train_dataloader()))  # served from the store
    assert batch["image"].dtype == torch.uint8 and batch["mask"].shape[1:] == (32, 48)
    assert len(stores(tmp_path / "store")) == 2  # train and valid at 32x48

    planet_root = write_planet(tmp_path / "planet", n=10, size=60)
    kw = dict(root=str(planet_root), size=40, augment=False, num_workers=0, store_dir=str(tmp_path / "store"))
    p_on, p_off = PlanetDataModule(**kw, store=True), PlanetDataModule(**kw, store=False)
    for dm in (p_on, p_off):
        dm.setup("fit")
        dm.use_store("train")
    assert p_on.datasets["train"].store is not None and p_off.datasets["train"].store is None
    same_items(p_on.datasets["train"], p_off.datasets["train"])

    write_points_sample(tmp_path / "points")
    kw = dict(root=str(tmp_path / "points"), size=(48, 64), augment=False, num_workers=0, store_dir=str(tmp_path / "store"))
    q_on, q_off = PointsDataModule(**kw), PointsDataModule(**kw, store=False)  # store: auto (fits the budget)
    for dm in (q_on, q_off):
        dm.setup("fit")
        dm.use_store("valid")
    assert q_on.datasets["valid"].store is not None
    same_items(q_on.datasets["valid"], q_off.datasets["valid"])


def test_each_size_has_its_store_and_a_changed_file_rebuilds_it(tmp_path):
    dm = camvid(tmp_path, store=True)
    dm.use_store("train")
    first = dm.datasets["train"].store.folder
    dm.set_size((64, 96))  # progressive resizing: a store per size, built once
    dm.use_store("train")
    assert dm.datasets["train"].store.size == (64, 96) and dm.datasets["train"][0]["image"].shape == (3, 64, 96)
    dm.set_size((32, 48))
    dm.use_store("train")
    assert dm.datasets["train"].store.folder == first  # the first size's store is found again
    assert len(stores(tmp_path / "store")) == 2
    img, lab = dm.datasets["train"].items[0]
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(lab)
    os.utime(lab, ns=(1, 1))
    dm.use_store("train")
    assert dm.datasets["train"].store.folder != first and int(dm.datasets["train"][0]["mask"].max()) == 0
    same_items(dm.datasets["train"], camvid(tmp_path, store=False).datasets["train"])


def test_a_crash_mid_build_leaves_no_usable_store_and_the_next_run_rebuilds(tmp_path, monkeypatch):
    dm = camvid(tmp_path, store=True)
    ds, real = dm.datasets["train"], dm.datasets["train"].decode
    calls = []

    def crashing(i):
        calls.append(i)
        if len(calls) == 3:
            raise RuntimeError("killed mid-build")
        return real(i)

    monkeypatch.setattr(ds, "decode", crashing)
    with pytest.raises(RuntimeError, match="killed mid-build"):
        dm.use_store("train")
    root = tmp_path / "store"
    assert ds.store is None and stores(root) == [] and not [p for p in root.iterdir() if p.is_dir()]
    # a hard kill leaves the temporary folder (no manifest); it is neither read nor kept
    monkeypatch.setattr(ds, "decode", real)
    key = store_mod.fingerprint(ds, dm.size)
    stale = root / f".{type(ds).__name__}-32x48-{key}.tmp-1-1"
    stale.mkdir()
    (stale / "images.npy").write_bytes(b"half")
    dm.use_store("train")
    assert ds.store is not None and not stale.exists() and len(stores(root)) == 1
    # a complete-looking folder with a damaged array is built again
    (ds.store.folder / "images.npy").write_bytes(b"damaged")
    ds.store = None
    dm.use_store("train")
    same_items(ds, camvid(tmp_path, store=False).datasets["train"])


def test_an_unreadable_file_while_building_is_one_line_naming_it(tmp_path):
    dm = camvid(tmp_path, store=True)
    img, _ = dm.datasets["train"].items[2]
    img.write_bytes(b"not a png")  # broken after setup's checks, before the store is built
    with pytest.raises(DataError) as e:
        dm.use_store("train")
    assert str(img) in str(e.value) and "\n" not in str(e.value)
    assert stores(tmp_path / "store") == []


def test_two_processes_share_one_store_one_builds_the_other_waits(tmp_path, monkeypatch):
    """Two ranks (threads here, each with its own lock file handle, as processes would have): one
    decodes every item, the other waits on the lock and opens the same files."""
    dms = [camvid(tmp_path, store=True) for _ in range(2)]
    decodes = []
    for rank, dm in enumerate(dms):
        real = dm.datasets["train"].decode

        def slow(i, real=real, rank=rank):
            decodes.append(rank)
            time.sleep(0.02)
            return real(i)

        monkeypatch.setattr(dm.datasets["train"], "decode", slow)
    errors = []

    def run(dm):
        try:
            dm.use_store("train")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(dm,)) for dm in dms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    n = len(dms[0].datasets["train"])
    assert len(decodes) == n + 1 and len(set(decodes)) == 1  # one builder (its first item twice: the shape probe)
    assert dms[0].datasets["train"].store.folder == dms[1].datasets["train"].store.folder
    assert len(stores(tmp_path / "store")) == 1


def test_a_full_disk_falls_back_to_decoding_with_one_warning(tmp_path, monkeypatch):
    dm = camvid(tmp_path, store=True)
    real_save = np.save

    tries = []

    def full(*args, **kwargs):
        tries.append(args)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_mod.np, "save", full)
    with pytest.warns(UserWarning, match="decoding the images on the fly") as record:
        loader = dm.train_dataloader()
    assert len([w for w in record if "store" in str(w.message)]) == 1
    built = len(tries)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.train_dataloader()  # the next loader (a stage boundary, a reload): no second build, no second warning
    assert len(tries) == built >= 1
    monkeypatch.setattr(store_mod.np, "save", real_save)
    assert dm.datasets["train"].store is None and stores(tmp_path / "store") == []
    assert not [p for p in (tmp_path / "store").iterdir() if p.is_dir()]
    assert next(iter(loader))["image"].shape[-2:] == (32, 48)  # trains on, decoding the files


def test_store_options_budget_and_default_folder(tmp_path, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm = camvid(tmp_path, store_budget_gb=1e-6)  # auto: over the budget, decoded on the fly
        dm.use_store("train")
    assert dm.datasets["train"].store is None and not (tmp_path / "store").exists()
    off = camvid(tmp_path, store=False)
    off.use_store("train")
    assert off.datasets["train"].store is None
    with pytest.raises(DataError, match="store 'sometimes'"):
        CamVidDataModule(store="sometimes")
    monkeypatch.setenv("LESSON3_CACHE", str(tmp_path / "cache"))
    assert store_root() == tmp_path / "cache" / "store"
    alias = camvid(tmp_path, cache_resized=True)  # the former option's name
    assert alias.store_mode() == "on"
    ds = alias.datasets["valid"]
    s = get_store(ds, alias.size, tmp_path / "other")
    manifest = json.loads((s.folder / "manifest.json").read_text())
    assert manifest["items"] == len(ds) and manifest["size"] == [32, 48] and s[0].image.shape == (32, 48, 3)
