"""A killed or full-disk run never hangs or corrupts (issue 29, part 1): the store's lock dies with its
process, a full disk falls back before decoding, checkpoints are never partial under their name,
``--ckpt_path last`` takes the newest loadable one, and two runs never share a run folder."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from test_camvid import write_fastai

import datamodules.store as store_mod
from callbacks.checkpoint_io import CheckpointWriteError, FiniteCheckpointIO
from cli.run_folder import LOCK, find_last
from datamodules.camvid import CamVidDataModule
from datamodules.locks import Busy, hold, holder, process_lock, release

ROOT = Path(__file__).resolve().parents[1]


def holding(lock: Path) -> int | None:
    if not lock.exists():
        return None
    fd = os.open(lock, os.O_RDWR)
    try:
        return holder(fd)
    finally:
        os.close(fd)


def processes_with(marker: str) -> list[int]:
    """PIDs whose command line holds ``marker`` (a child and the loader workers it forked)."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            pass
    return out


def wait_for(cond, seconds: float = 60.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_a_lock_names_its_holder_and_dies_with_it(tmp_path):
    lock = tmp_path / "x.lock"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time; sys.path.insert(0, {str(ROOT)!r})
        from datamodules.locks import hold
        hold({str(lock)!r}); print("held", flush=True); time.sleep(600)""")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert holding(lock) == child.pid
        with pytest.raises(Busy) as e:
            with process_lock(lock, blocking=False):
                pass
        assert e.value.pid == child.pid
        said = []
        done = threading.Event()

        def wait():
            with process_lock(lock, waiting=said.append):
                done.set()

        t = threading.Thread(target=wait)
        t.start()
        assert not done.wait(0.5)  # waits while the holder lives ...
        child.kill()  # ... and not a moment longer once it is killed
        assert done.wait(30)
        t.join()
        assert said == [child.pid]
    finally:
        child.kill()
        child.wait()


CHILD_BUILD = """
# {marker}
import sys, time
sys.path.insert(0, {root!r})
from datamodules.camvid import CamVidDataModule
dm = CamVidDataModule(root={data!r}, size=(240, 320), augment=False, num_workers=2, store=True, store_dir={store!r})
dm.setup("fit")
ds = dm.datasets["train"]
real = ds.decode
def slow(i):
    time.sleep(0.3)
    return real(i)
ds.decode = slow  # the forked decode workers inherit it
dm.use_store("train")
"""


def test_a_run_killed_while_building_the_store_does_not_hang_the_next(tmp_path):
    """kill -9 of a run while its loader workers decode into the store: the next run builds it. With
    ``flock`` a worker kept the lock for ever: items bigger than a pipe (240x320) leave it blocked
    writing to its result queue, whose reader is gone, so it never exits."""
    data, store = tmp_path / "camvid", tmp_path / "store"
    write_fastai(data, n=8, hw=(240, 320))
    marker = f"store-build-{os.getpid()}-{time.monotonic_ns()}"
    script = CHILD_BUILD.format(root=str(ROOT), data=str(data), store=str(store), marker=marker)
    child = subprocess.Popen([sys.executable, "-c", script], start_new_session=False)
    try:
        assert wait_for(lambda: any(store.glob(".*.tmp-*")), 120), "the child never started building"  # (under the lock)
        time.sleep(1.0)  # its workers are decoding now
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert wait_for(lambda: not processes_with(marker), 30), "the killed run's loader workers live on"
        dm = CamVidDataModule(root=str(data), size=(240, 320), augment=False, num_workers=0, store=True, store_dir=str(store))
        dm.setup("fit")
        done = threading.Event()
        t = threading.Thread(target=lambda: (dm.use_store("train"), done.set()), daemon=True)
        t.start()
        assert done.wait(120), "the next run hangs on the killed run's store lock"
        assert dm.datasets["train"].store is not None
    finally:
        if child.poll() is None:
            child.kill()


def test_a_store_that_does_not_fit_the_free_space_falls_back_before_decoding(tmp_path, monkeypatch):
    data = tmp_path / "camvid"
    write_fastai(data, hw=(48, 64))
    dm = CamVidDataModule(root=str(data), size=(32, 48), augment=False, num_workers=0, store=True, store_dir=str(tmp_path / "store"))
    dm.setup("fit")
    decoded = []
    real = dm.datasets["train"].decode
    monkeypatch.setattr(dm.datasets["train"], "decode", lambda i: decoded.append(i) or real(i))
    usage = store_mod.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(store_mod.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.warns(UserWarning, match=r"MB needed, 0\.0 MB free\); decoding the images on the fly"):
        dm.use_store("train")
    assert dm.datasets["train"].store is None and decoded == [0]  # only the first item, to size the arrays
    assert not [p for p in (tmp_path / "store").iterdir() if p.is_dir()]


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

    io = FiniteCheckpointIO(TorchCheckpointIO())
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)
    good = path.read_bytes()
    real_save = torch.save

    def full(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # part of it reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointWriteError) as e:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert str(e.value) == f"{path}: could not write the checkpoint (No space left on device); the previous last.ckpt is kept"
    assert path.read_bytes() == good and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_ckpt_path_last_takes_the_newest_loadable_checkpoint(tmp_path, capsys):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.ones(1)}}, ckpts / "last.ckpt")
    time.sleep(0.01)
    (ckpts / "on_exception.ckpt").write_bytes(b"")  # newer, but a full disk left it empty
    assert find_last("runs", "x", str(tmp_path / "run")) == str(ckpts / "last.ckpt")
    out = capsys.readouterr().out
    assert out.startswith(f"--ckpt_path last: skipping {ckpts / 'on_exception.ckpt'}: not a loadable checkpoint") and out.count("\n") == 1


def test_a_second_run_into_a_busy_run_folder_is_refused_in_one_line(tmp_path):
    from train import cli_main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time; sys.path.insert(0, {str(ROOT)!r})
        from datamodules.locks import hold
        hold({str(run_dir / LOCK)!r}); print("held", flush=True); time.sleep(600)""")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as e:
            cli_main(["fit", "--task", "planet", "--run_dir", str(run_dir), "--trainer.max_epochs", "1"])
        assert str(e.value) == f"error: {run_dir} is in use by another run (process {child.pid}): wait for it to end or pass another --run_dir."
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK]  # nothing of the refused run written
    finally:
        child.kill()
        child.wait()
    hold(run_dir / LOCK)  # free once its holder is gone
    release(run_dir / LOCK)


def test_weights_holding_nan_are_refused_by_validate_export_and_serve(tmp_path):
    """A checkpoint (validate/test/predict/resume, export) or a bundle (serve) whose weights hold NaN
    is refused in one line naming the file: a diverged model answers nothing."""
    from callbacks.checkpoint_io import CheckpointError, check_loadable
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
    from serving.bundle import BundleError, load_weights
    from serving.bundle_format import finite

    path = tmp_path / "diverged.ckpt"
    torch.save({"state_dict": {"net.w": torch.tensor([1.0, float("nan")]), "net.b": torch.zeros(2)}, "epoch": 3}, path)
    want = f"{path}: refused: 1 weight tensor(s) hold NaN/inf (net.w); the run that wrote it had diverged (resume or export an earlier checkpoint)"
    for load in (check_loadable, FiniteCheckpointIO(TorchCheckpointIO()).load_checkpoint):
        with pytest.raises(CheckpointError) as e:
            load(path)
        assert str(e.value) == want
    with pytest.raises(BundleError, match=r"diverged.ckpt: refused: 1 weight tensor\(s\) hold NaN/inf \(net.w\)"):
        load_weights(torch.nn.Linear(2, 2), path)  # export's and --init_weights' way in
    with pytest.raises(BundleError, match=r"weights.safetensors: refused: 1 weight tensor\(s\) hold NaN/inf \(w\)"):
        finite({"w": torch.tensor([float("inf")])}, tmp_path / "weights.safetensors")  # what read_state (serve) checks
    ok = {"w": torch.ones(2)}
    assert finite(ok, tmp_path / "x") is ok


def test_a_phone_photo_is_read_upright_in_training_checks_and_serving(tmp_path):
    """EXIF orientation 6 (a phone held upright): training, the data checks and the points' sizes see
    the photo as serving and a browser show it, so points and masks drawn on it fit."""
    import numpy as np
    from PIL import Image

    from datamodules.checks import probe_image
    from datamodules.decode import read_rgb
    from datamodules.point_dataset import image_size
    from serving.images import to_rgb

    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high as stored
    stored[:, :20] = (250, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: 20 wide, 40 high, the red half on top
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    train = read_rgb(path)
    assert train.shape == (40, 20, 3) and train[:20, :, 0].mean() > 200 and train[20:, :, 0].mean() < 50
    with Image.open(path) as im:
        served, turned = to_rgb(im)
    assert turned and np.array_equal(served, train)
    assert image_size(path) == (20, 40) and probe_image(path)[0] == (20, 40)
    assert read_rgb(path, draft=(10, 20)).shape == (20, 10, 3)  # the draft hint (w, h) is the upright one: decoded at 1/2


@pytest.mark.parametrize("mode", ["I;16", "I", "P-transparent", "RGBA", "LA", "CMYK", "F"])
def test_training_and_serving_read_every_mode_alike(tmp_path, mode):
    """One RGB reading (``models.inference.rgb_array``) behind both: the same pixels, or the same refusal."""
    import numpy as np
    from PIL import Image

    from datamodules.base import DataError
    from datamodules.decode import read_rgb
    from serving.images import InputError, to_rgb

    grey = np.arange(12 * 16, dtype=np.int64).reshape(12, 16) * 300
    path = tmp_path / "x.tif" if mode in ("I", "F", "CMYK") else tmp_path / "x.png"
    if mode in ("I;16", "I", "F"):
        Image.fromarray(grey.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])).save(path)
    elif mode == "P-transparent":
        im = Image.fromarray((grey % 256).astype(np.uint8)).convert("P")
        im.info["transparency"] = 0
        im.save(path, transparency=0)
    else:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)).convert(mode).save(path)
    with Image.open(path) as im:
        try:
            served = to_rgb(im)[0]
        except InputError as e:
            served = e
    if mode == "F":
        with pytest.raises(DataError, match=r"x\.tif: image mode F \(32-bit float\) is not read"):
            read_rgb(path)
        assert served.status == 415 and "image mode F (32-bit float) is not read" in str(served)
        return
    train = read_rgb(path)
    assert train.shape == (12, 16, 3) and np.array_equal(served, train)
    if mode in ("I;16", "I"):  # 16-bit scaled by 1/257, not saturated
        assert train[-1, -1, 0] == round(grey[-1, -1] / 257) and train[..., 0].max() < 255


def test_a_store_changed_in_place_is_noticed_and_built_again(tmp_path):
    """Same size, same modification time, other pixels: the sampled rows' digest differs, so the store
    is built again from the files instead of being trained on."""
    import numpy as np

    data = tmp_path / "camvid"
    write_fastai(data, hw=(48, 64))
    dm = CamVidDataModule(root=str(data), size=(32, 48), augment=False, num_workers=0, store=True, store_dir=str(tmp_path / "store"))
    dm.setup("fit")
    ds = dm.datasets["train"]
    dm.use_store("train")
    folder = ds.store.folder
    images = folder / "images.npy"
    st = images.stat()
    arr = np.load(images, mmap_mode="r+")
    arr[0] = 255 - arr[0]  # item 0 is always among the sampled rows
    arr.flush()
    del arr
    os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert images.stat().st_size == st.st_size and images.stat().st_mtime_ns == st.st_mtime_ns
    assert store_mod.open_store(folder, ds.store.key) is None
    ds.store = None
    dm.use_store("train")
    assert np.array_equal(ds.store[0].image, ds.decode(0).image)


def test_a_replaced_correction_mask_is_refused_like_a_replaced_input(tmp_path):
    from models.feedback import FeedbackError, read_feedback
    from serving.feedback import FeedbackStore

    store = FeedbackStore(tmp_path / "fb", task="segmentation", classes=["road", "sky"])
    ex = store.add(b"png-bytes-of-the-photo", ".png", {}, files={"mask": (b"png-bytes-of-the-mask", ".png")})
    assert [e.id for e in read_feedback(tmp_path / "fb", "segmentation", ["road", "sky"])] == [ex.id]
    mask = ex.file("mask")
    mask.write_bytes(b"png-bytes-of-another-mask")
    with pytest.raises(FeedbackError) as e:
        read_feedback(tmp_path / "fb", "segmentation", ["road", "sky"])
    assert str(e.value) == f"{tmp_path / 'fb' / 'feedback.db'}, row {ex.id}: its mask {mask} was changed since it was stored (sha256 differs)."


def test_a_bundle_json_that_does_not_match_its_network_is_refused(tmp_path):
    """2 class names for a 32-output network served ``"shares": []``; ``classes: []`` or a
    ``max_length`` past the encoder's positions gave 500s: each is one line at load now."""
    from types import SimpleNamespace

    from serving.bundle_format import BundleError, check_net

    seg = SimpleNamespace(init_args={"num_classes": 32})
    with pytest.raises(BundleError) as e:
        check_net(tmp_path, {"task": "segmentation", "classes": ["road", "sky"], "input": {}}, seg)
    assert str(e.value) == f"{tmp_path / 'bundle.json'}: lists 2 class name(s) but its network has 32 output(s); export the bundle again."
    check_net(tmp_path, {"task": "segmentation", "classes": [str(i) for i in range(32)], "input": {}}, seg)
    with pytest.raises(BundleError, match="lists x and y but its network has 3 output"):
        check_net(tmp_path, {"task": "points", "classes": [], "input": {}}, SimpleNamespace(init_args={"num_classes": 3}))
    text = SimpleNamespace(init_args={"num_classes": 2}, encoder=SimpleNamespace(config=SimpleNamespace(max_position_embeddings=512)))
    with pytest.raises(BundleError, match="lists 0 class name"):
        check_net(tmp_path, {"task": "text", "classes": [], "input": {"max_length": 256}}, text)
    with pytest.raises(BundleError, match="input.max_length 100000 is over its encoder's 512 positions"):
        check_net(tmp_path, {"task": "text", "classes": ["neg", "pos"], "input": {"max_length": 100000}}, text)


def test_masks_with_no_labelled_pixel_are_a_data_error_and_validation_only_classes_a_warning(tmp_path):
    import numpy as np
    from PIL import Image

    from datamodules.base import DataError

    root = tmp_path / "camvid"
    write_fastai(root, hw=(48, 64))
    classes = (root / "codes.txt").read_text().split()
    void = classes.index("Void") if "Void" in classes else None
    valid = set((root / "valid.txt").read_text().split())
    labels = sorted((root / "labels").glob("*_P.png"))
    rare = next(i for i in reversed(range(len(classes))) if i != void)
    for lab in labels:  # a class only the validation masks hold: in one validation mask, no other
        a = np.array(Image.open(lab))
        a[a == rare] = 0
        Image.fromarray(a).save(lab)
    held = next(lab for lab in labels if lab.name.replace("_P", "") in valid)
    a = np.array(Image.open(held))
    a[:4, :4] = rare
    Image.fromarray(a).save(held)
    dm = CamVidDataModule(root=str(root), size=(32, 48), augment=False, num_workers=0, store=False)
    with pytest.warns(UserWarning, match=rf"1 class\(es\) in the validation masks but in no training mask \({classes[rare]}\)"):
        dm.setup("fit")
    for lab in labels:  # every training pixel void (or, without a void class, the masks hold nothing else)
        if lab.name.replace("_P", "") not in valid:
            Image.fromarray(np.full((48, 64), void if void is not None else 0, np.uint8)).save(lab)
    if void is None:
        pytest.skip("the sample's codes have no void class")
    with pytest.raises(DataError, match="no labelled pixel in any of the .* training masks"):
        CamVidDataModule(root=str(root), size=(32, 48), augment=False, num_workers=0, store=False).setup("fit")


def as_windows_file(path: Path) -> None:
    """The same text with a UTF-8 BOM and CRLF line ends (as Notepad or Excel save it)."""
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))


def test_a_bom_and_crlf_read_the_same_in_codes_valid_txt_and_label_csvs(tmp_path):
    from test_planet import write_planet

    from datamodules.planet import PlanetDataModule

    def camvid_split(root):
        dm = CamVidDataModule(root=str(root), size=(32, 48), augment=False, num_workers=0, store=False)
        dm.setup("fit")
        return dm.classes, [[str(p.name) for p, _ in dm.datasets[s].items] for s in ("train", "valid")]

    def planet_tags(root):
        dm = PlanetDataModule(root=str(root), size=32, augment=False, num_workers=0, store=False)
        dm.setup("fit")
        return dm.classes, [dm.datasets[s].targets.tolist() for s in ("train", "valid")]

    for write, read, files in ((lambda r: write_fastai(r, hw=(48, 64)), camvid_split, ("codes.txt", "valid.txt")),
                               (lambda r: write_planet(r), planet_tags, ("labels.csv",))):
        unix, windows = tmp_path / f"{read.__name__}-unix", tmp_path / f"{read.__name__}-windows"
        write(unix)
        write(windows)
        for name in files:
            as_windows_file(windows / name)
            assert (windows / name).read_bytes().startswith(b"\xef\xbb\xbf") and b"\r\n" in (windows / name).read_bytes()
        assert read(windows) == read(unix)


def test_max_epochs_0_is_refused_in_one_line(tmp_path):
    from train import cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(["fit", "--task", "planet", "--run_dir", str(tmp_path / "run"), "--trainer.max_epochs", "0"])
    assert str(e.value).startswith("error: --trainer.max_epochs 0 trains nothing")


def test_serve_start_up_faults_of_the_feedback_store_are_one_line(tmp_path):
    """serve.py's --feedback: a truncated feedback.db, a file where the folder should be: one line each."""
    from models.feedback import FeedbackError
    from serving.feedback import FeedbackStore

    good = FeedbackStore(tmp_path / "fb", task="multilabel", classes=["a", "b"])
    good.add(b"jpeg", ".jpg", {"tags": ["a"]})
    db = tmp_path / "fb" / "feedback.db"
    for extra in db.parent.glob("feedback.db-*"):  # the WAL's side files: the database is the file alone
        extra.unlink()
    db.write_bytes(db.read_bytes()[:1000])  # truncated (a copy cut short, a full disk)
    with pytest.raises(FeedbackError) as e:
        FeedbackStore(tmp_path / "fb", task="multilabel", classes=["a", "b"])
    assert str(e.value).startswith(f"{db}: unusable feedback database (") and "\n" not in str(e.value)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    with pytest.raises(FeedbackError) as e:
        FeedbackStore(a_file, task="multilabel", classes=["a", "b"])
    assert str(e.value).startswith(f"{a_file}: cannot hold the feedback store (") and "--feedback DIR" in str(e.value)


def test_csv_fields_as_long_as_a_review_are_read_and_a_broken_row_is_one_line(tmp_path):
    from datamodules.base import DataError
    from datamodules.checks import csv_reader, csv_rows

    long_caption = "word " * 60_000  # 300 KB, over Python's default field limit (131072)
    path = tmp_path / "labels.csv"
    path.write_text(f'image_name,tags,caption\na,sky,"{long_caption}"\nb,sea,short\n', encoding="utf-8")
    rows = list(csv_rows(csv_reader(path), path))
    assert [r["image_name"] for r in rows] == ["a", "b"] and len(rows[0]["caption"]) == len(long_caption)
    import datamodules.checks as checks

    checks.CSV_FIELD_LIMIT = 100_000  # beyond the limit (64 MB; here 100 KB): one line naming the row
    try:
        with pytest.raises(DataError) as e:
            list(csv_rows(csv_reader(path), path))
    finally:
        checks.CSV_FIELD_LIMIT = 64 << 20
    assert str(e.value).startswith(f"{path}, line 2: not a readable CSV row (field larger than field limit") and "\n" not in str(e.value)


def test_a_class_only_in_valid_is_a_data_error_naming_it(tmp_path):
    from PIL import Image

    from datamodules.base import DataError
    from datamodules.classify import ClassifyDataModule

    for split, classes in (("train", ("cat", "dog")), ("valid", ("cat", "dog", "cow"))):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), (i * 40, 80, 120)).save(tmp_path / split / cls / f"{cls}{i}.png")
    dm = ClassifyDataModule(root=str(tmp_path), size=32, num_workers=0, store=False)
    with pytest.raises(DataError) as e:
        dm.setup("fit")
    assert str(e.value).startswith(f"class folder {tmp_path / 'valid' / 'cow'}: class 'cow' is in the validation split but has no training image")


@pytest.mark.parametrize("task", ["planet", "camvid", "biwi"])
def test_load_from_checkpoint_needs_only_the_path(run_cli, task):
    """A checkpoint records its network as data (registry name + init_args): Lightning's
    ``load_from_checkpoint(path)`` rebuilds the task with the trained weights, no config, nothing downloaded."""
    cli, run = run_cli(["--task", task, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
                        "--pictures.show_batch", "false", "--pictures.show_results", "false", "--interpretation.enabled", "false"])
    ckpt = run / "checkpoints" / "last.ckpt"
    cls = type(cli.model)
    model = cls.load_from_checkpoint(ckpt)
    trained = cli.model.state_dict()
    assert type(model.net) is type(cli.model.net) and set(model.state_dict()) == set(trained)
    assert all(torch.equal(v.cpu(), trained[k].cpu()) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="weights_only=False is refused"):
        cls.load_from_checkpoint(ckpt, weights_only=False)


def test_releasing_run_folders_tidies_empty_ones_and_tolerates_gone_ones(tmp_path, monkeypatch):
    import shutil

    from cli.run_folder import claim, new_run_dir, unclaim_all

    monkeypatch.delenv("LESSON3_RUN_DIR", raising=False)
    empty, used, gone = (new_run_dir(str(tmp_path / "runs"), n) for n in ("empty", "used", "gone"))
    monkeypatch.delenv("LESSON3_RUN_DIR", raising=False)
    for folder in (empty, used, gone):
        claim(folder)
    (used / "metrics.json").write_text("{}")
    shutil.rmtree(gone)  # e.g. a test's temporary folder, removed while still held
    other = new_run_dir(str(tmp_path / "runs"), "other")  # another command's, not yet used (cli_main(run=False))
    monkeypatch.delenv("LESSON3_RUN_DIR", raising=False)
    claim(other)
    unclaim_all(keep={other / ".run.lock"})
    assert not empty.exists() and (used / "metrics.json").is_file() and not gone.exists()
    assert other.is_dir()  # kept, and still held
    unclaim_all()
    assert not other.exists()
