"""Hostile files and requests: no code runs from a file a user is handed (pickles, bundle.json),
changed bundles are refused, and the server answers every bad request with a 4xx in bounded memory.

Bundles are exported from untrained tasks (no training needed: the checks are about loading and
serving). The pickle and serve.py cases run the real commands in subprocesses.
"""

from __future__ import annotations

import builtins
import collections
import concurrent.futures
import io
import json
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT

ENV = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONWARNINGS": "ignore"}
CAMVID = [f"class{i}" for i in range(31)] + ["Void"]  # 32 classes, as CamVid
PLANET = ["clear", "haze", "water", "primary"]


# -- fixtures: bundles, hostile files --------------------------------------------------------------
def _model(task: str):
    from models.classifier import TimmClassifier
    from models.unet import UNet

    if task == "camvid":
        from tasks.segmentation import SegmentationTask

        return SegmentationTask(net=UNet(num_classes=32, weights=None), num_classes=32, void_index=31, class_names=CAMVID)
    if task == "planet":
        from tasks.planet import PlanetTask

        return PlanetTask(net=TimmClassifier(num_classes=4, weights=None), num_classes=4, class_names=PLANET)
    if task == "biwi":
        from tasks.pointreg import PointRegressionTask

        return PointRegressionTask(net=TimmClassifier(num_classes=2, weights=None))
    from models.text import TransformerClassifier
    from tasks.text import TextClassificationTask

    return TextClassificationTask(net=TransformerClassifier(num_classes=2, pretrained=False), num_classes=2, class_names=["negative", "positive"])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from serving.bundle import export_bundle

    root = tmp_path_factory.mktemp("sec_bundles")
    torch.manual_seed(0)
    return {t: export_bundle(_model(t).eval(), root / t, 32 if t == "imdb" else (32, 32), name=t) for t in ("camvid", "planet", "biwi", "imdb")}


@pytest.fixture(scope="module")
def clients(bundles, tmp_path_factory):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    base = tmp_path_factory.mktemp("sec_served")
    return {t: TestClient(create_app(b, feedback_db=base / t), raise_server_exceptions=False) for t, b in bundles.items()}


class Canary:
    """Unpickling this creates ``path`` (``open(path, "w")``): proof that code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def evil_checkpoint(path: Path, canary: Path) -> Path:
    """A 'Lightning checkpoint' whose unpickling would create ``canary``."""
    torch.save({"state_dict": {"net.w": Canary(canary)}, "epoch": 0, "pytorch-lightning_version": "2.6.0"}, path)
    return path


def one_error_line(stderr: str, *words: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert all(w in errors[0] for w in words), errors[0]
    return errors[0]


def png_header(w: int, h: int) -> bytes:
    """A valid PNG of ``w x h`` 8-bit grey pixels as far as its header goes (tiny IDAT): a bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, fmt)
    return buf.getvalue()


def jpeg(h=40, w=60, seed=0) -> bytes:
    return encode(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8), "JPEG")


# -- 1. loading is data, never code ----------------------------------------------------------------------
def test_the_crafted_pickle_is_live(tmp_path):
    """Control: unpickled the old way (weights_only=False), the file does create the canary."""
    canary = tmp_path / "CANARY"
    ckpt = evil_checkpoint(tmp_path / "evil.ckpt", canary)
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(ckpt)!r}, weights_only=False)"], check=True, env=ENV, timeout=120)
    assert canary.exists()


def test_pickles_are_refused_in_process(tmp_path):
    from models.text import TransformerClassifier, encoder_state_from
    from models.weights import WeightsUnavailableError
    from serving.bundle import BundleError, load_weights

    canary = tmp_path / "CANARY"
    ckpt = evil_checkpoint(tmp_path / "evil.ckpt", canary)
    with pytest.raises(BundleError) as e:
        load_weights(_model("biwi"), ckpt)
    assert "\n" not in str(e.value) and "refused" in str(e.value) and "io.open" in str(e.value) and str(ckpt) in str(e.value)
    net = TransformerClassifier(num_classes=2, pretrained=False)
    with pytest.raises(WeightsUnavailableError, match="refused") as e:
        encoder_state_from(ckpt, net.encoder)
    assert "\n" not in str(e.value)
    folder = tmp_path / "encoder"  # a save_pretrained folder whose pytorch_model.bin is a pickle with code
    folder.mkdir()
    evil_checkpoint(folder / "pytorch_model.bin", canary)
    with pytest.raises(WeightsUnavailableError, match="pytorch_model.bin: refused"):
        encoder_state_from(folder, net.encoder)
    (tmp_path / "junk.ckpt").write_bytes(b"\x80\x04junk")
    with pytest.raises(BundleError, match="junk.ckpt: refused to load"):
        load_weights(_model("biwi"), tmp_path / "junk.ckpt")
    assert not canary.exists()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["export", "feedback", "encoder_ckpt"])
def test_pickles_are_refused_by_train_py(path, tmp_path):
    """``train.py export --ckpt_path``, ``fit --data.feedback DIR --ckpt_path`` and
    ``--model.init_args.encoder_ckpt``: one ``error:`` line, nothing run."""
    from serving.feedback import FeedbackStore

    canary = tmp_path / "CANARY"
    ckpt = evil_checkpoint(tmp_path / "evil.ckpt", canary)
    common = ["--runs_dir", str(tmp_path / "runs"), "--trainer.logger", "false", "--trainer.fast_dev_run", "true", "--data.init_args.num_workers", "0"]
    if path == "export":
        args = ["export", "--task", "planet", "--ckpt_path", str(ckpt), "--data.init_args.size", "32", *common]
    elif path == "feedback":
        store = FeedbackStore(tmp_path / "fb", task="multilabel")
        store.add(jpeg(), ".jpg", {"tags": ["clear"]})
        args = ["fit", "--task", "planet", "--data.feedback", str(store.folder), "--ckpt_path", str(ckpt), "--data.init_args.size", "32", *common]
    else:
        args = ["fit", "--task", "imdb", "--model.init_args.encoder_ckpt", str(ckpt), "--data.init_args.max_length", "32", *common]
    out = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    one_error_line(out.stderr, str(ckpt), "refused")
    assert not canary.exists()


def _edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / "bundle.json").read_text())
    change(meta)
    (folder / "bundle.json").write_text(json.dumps(meta))


def serve_py(bundle: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "serve.py", str(bundle), "--port", "1", *extra], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("net", [
    {"class_path": "subprocess.run", "init_args": {"args": ["touch", "CANARY"]}},
    {"name": "subprocess.run", "init_args": {"args": ["touch", "CANARY"]}},
    {"name": "models.unet.UNet", "init_args": {}},
    {"name": "UNet", "class_path": "subprocess.run", "init_args": {"args": ["touch", "CANARY"]}},
    {"name": ["UNet"], "init_args": {}},
])
def test_a_bundle_names_only_the_projects_networks(net, bundles, tmp_path):
    """A hand-written bundle.json naming ``subprocess.run`` (or anything off the allow-list):
    serve.py refuses it in one line and runs nothing."""
    from serving.bundle import BundleError, load_bundle

    bad = tmp_path / "bad"
    shutil.copytree(bundles["camvid"], bad)
    canary = tmp_path / "CANARY"
    net = json.loads(json.dumps(net).replace("CANARY", str(canary)))
    _edit_meta(bad, lambda m: m.update(net=net))
    with pytest.raises(BundleError, match="refused: network .* is not one of the project's networks"):
        load_bundle(bad)
    out = serve_py(bad)
    assert out.returncode == 1
    one_error_line(out.stderr, "bundle.json: refused: network", "UNet, TimmClassifier, TransformerClassifier")
    assert not canary.exists()


def test_a_changed_bundle_is_refused(bundles, tmp_path):
    from serving.bundle import BundleError, load_bundle, load_weights

    bad = tmp_path / "bad"
    shutil.copytree(bundles["biwi"], bad)
    w = bad / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights\.safetensors: refused: its SHA-256 differs"):
        load_bundle(bad)
    with pytest.raises(BundleError, match="SHA-256 differs"):
        load_weights(_model("biwi"), bad)
    out = serve_py(bad)
    assert out.returncode == 1
    one_error_line(out.stderr, "weights.safetensors: refused: its SHA-256 differs")
    # a listed file outside the bundle, an unlisted file in the text backbone, a changed tokenizer
    shutil.copy(bundles["biwi"] / "weights.safetensors", w)
    load_bundle(bad)  # the original weights again: accepted
    _edit_meta(bad, lambda m: m["files"].update({"../escape": "0" * 64}))
    with pytest.raises(BundleError, match="not a file inside the bundle"):
        load_bundle(bad)
    text = tmp_path / "text"
    shutil.copytree(bundles["imdb"], text)
    (text / "backbone" / "pytorch_model.bin").write_bytes(b"extra")
    with pytest.raises(BundleError, match="pytorch_model.bin: refused: not listed"):
        load_bundle(text)
    (text / "backbone" / "pytorch_model.bin").unlink()
    tok = text / "backbone" / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"[UNK]"', '"[UNQ]"', 1))
    with pytest.raises(BundleError, match="tokenizer.json: refused: its SHA-256 differs"):
        load_bundle(text)
    _edit_meta(bad, lambda m: m.update(version=1))
    with pytest.raises(BundleError, match="bundle version 1; this code reads version 2 .export it again"):
        load_bundle(bad)


def test_bundles_still_load_and_answer(bundles, clients):
    """The format change keeps every feature: IMDB's own tokenizer, Planet's thresholds, CamVid's palette."""
    from serving.bundle import load_bundle

    text = load_bundle(bundles["imdb"])
    assert text.tokenizer is not None and (bundles["imdb"] / "backbone" / "tokenizer.json").is_file()
    assert clients["imdb"].post("/predict", json={"text": "A fine film."}).json()["label"] in ("negative", "positive")
    assert len(clients["planet"].post("/predict", files={"file": ("a.jpg", jpeg(), "image/jpeg")}).json()["tags"]) == 4
    assert len(load_bundle(bundles["camvid"]).palette) == 32


# -- 6. the server under hostile input ----------------------------------------------------------------
def image_upload(data: bytes, name="a.png", kind="image/png"):
    return {"file": (name, data, kind)}


def test_json_size_and_depth_limits(clients):
    deep = "[" * 100_000 + "]" * 100_000
    p, t = clients["planet"], clients["imdb"]
    r = p.post("/feedback", files=image_upload(jpeg(), "a.jpg", "image/jpeg"), data={"correction": deep[:60_000]})
    assert r.status_code == 422 and "nested too deeply" in r.json()["error"], r.text  # was RecursionError, 500
    r = p.post("/feedback", files=image_upload(jpeg(), "a.jpg", "image/jpeg"), data={"correction": json.dumps({"tags": ["clear"], "pad": "x" * 70_000})})
    assert r.status_code == 413 and "field 'correction'" in r.json()["error"]
    r = t.post("/predict", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "nested too deeply" in r.json()["error"]
    r = t.post("/predict", content='{"text": ' + "[" * 40 + "]" * 40 + "}", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "nested too deeply" in r.json()["error"]
    r = t.post("/predict", content=json.dumps({"text": "é" * 500_000}, ensure_ascii=True), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "JSON body" in r.json()["error"] and "2,097,152" in r.json()["error"]
    r = t.post("/predict", content=b'{"text": "bad \\ud800 surrogate"}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "unicode" in r.json()["error"]
    r = t.post("/predict", content=b"[" * 5000)  # no content type
    assert r.status_code == 422, r.text
    assert t.post("/predict", json={"text": "[[[[ brackets in a review are fine ]]]]"}).status_code == 200


def test_images_and_masks_are_checked_before_decoding(clients):
    c = clients["camvid"]
    bomb = png_header(20_000, 20_000)
    assert len(bomb) < 200
    r = c.post("/predict", files=image_upload(bomb))
    assert r.status_code == 413 and "400000000 pixels" in r.json()["error"]
    r = c.post("/feedback", files={**image_upload(jpeg(), "a.jpg", "image/jpeg"), "mask": ("m.png", bomb, "image/png")})
    assert r.status_code == 413 and "mask is too large" in r.json()["error"], r.text
    r = c.post("/feedback", files={**image_upload(jpeg(), "a.jpg", "image/jpeg"), "mask": ("m.png", png_header(5000, 5000), "image/png")})
    assert r.status_code == 413 and "mask is 5000x5000 pixels" in r.json()["error"], r.text  # was DecompressionBombError, 500
    zeros = encode(np.zeros((6000, 6000), np.uint8))
    assert len(zeros) < 100_000
    r = c.post("/predict", files=image_upload(zeros))
    assert r.status_code == 413 and "limit is 16,000,000 pixels" in r.json()["error"]
    # 16-bit grey is scaled to 8 bits (not saturated white), and stored as the model saw it
    b = clients["biwi"]
    grey16 = np.full((30, 40), 32896, np.uint16)
    r = b.post("/feedback", files=image_upload(encode(grey16)), data={"correction": json.dumps({"x": 3, "y": 4})})
    assert r.status_code == 201, r.text
    stored = b.app.state.store.examples()[-1].input
    assert np.asarray(Image.open(stored).convert("RGB")).max() == 128


@pytest.mark.parametrize("mask, status, words", [
    (encode(np.full((40, 60), -5, np.int32), "TIFF", "I"), 422, "class id -5"),  # was stored as 251
    (encode(np.full((40, 60), 300, np.int32), "TIFF", "I"), 422, "class id 300"),
    (encode(np.full((40, 60), 1000, np.uint16)), 422, "class id 1000"),
    (encode(np.full((40, 60), 1.5, np.float32), "TIFF", "F"), 422, "mode F"),
    (encode(np.dstack([np.full((40, 60), 3, np.uint8)] * 2), "PNG", "LA"), 422, "mode LA"),
    (encode(np.dstack([np.full((40, 60), v, np.uint8) for v in (1, 2, 3)])), 422, "colour"),
    (encode(np.zeros((41, 60), np.uint8)), 422, "the image is 60x40"),
    (encode(np.random.default_rng(0).integers(0, 9, (40, 60), dtype=np.uint8))[:400], 422, "truncated or corrupt"),
    (b"GIF89a" + b"\0" * 10, 415, "mask is not an image"),
    (encode(np.full((40, 60), 7, np.int32), "TIFF", "I"), 201, ""),
    (encode(np.dstack([np.full((40, 60), 9, np.uint8)] * 4)), 201, ""),
])
def test_mask_values_are_checked_against_the_classes(clients, mask, status, words):
    c = clients["camvid"]
    r = c.post("/feedback", files={**image_upload(jpeg(), "a.jpg", "image/jpeg"), "mask": ("m.tif", mask, "image/tiff")})
    assert r.status_code == status, r.text
    if status == 201:
        stored = np.asarray(Image.open(c.app.state.store.examples()[-1].file("mask")))
        assert stored.dtype == np.uint8 and stored.shape == (40, 60) and len(np.unique(stored)) == 1 and int(stored[0, 0]) in (7, 9)
    else:
        assert words in r.json()["error"], r.json()


def test_feedback_idempotency_key(clients, tmp_path):
    from serving.feedback import FeedbackStore

    p, t = clients["planet"], clients["imdb"]
    store = p.app.state.store
    before = store.count()
    send = lambda key, tags=("clear",), **kw: p.post("/feedback", files=image_upload(jpeg(seed=5), "a.jpg", "image/jpeg"),  # noqa: E731
                                                   data={"correction": json.dumps({"tags": list(tags)}), **kw}, headers={"Idempotency-Key": key} if key else {})
    first = send("retry-123")
    again = send("retry-123")
    assert first.status_code == 201 and again.status_code == 200 and again.json()["replayed"] and again.json()["id"] == first.json()["id"]
    assert store.count() == before + 1 and len(list(store.inputs.iterdir())) == before + 1  # no second file either
    r = send("retry-123", tags=("haze",))
    assert r.status_code == 422 and "already used for another correction" in r.json()["error"]
    assert send(None, idempotency_key="as-a-field").status_code == 201 and send(None, idempotency_key="as-a-field").json()["replayed"]
    assert send("with space").status_code == 422 and send("a" * 300).status_code == 422
    r = p.post("/feedback", files=image_upload(jpeg(seed=5), "a.jpg", "image/jpeg"), data={"correction": '{"tags": []}', "idempotency_key": "x"}, headers={"Idempotency-Key": "y"})
    assert r.status_code == 422 and "differ" in r.json()["error"]
    # concurrent retries of one request: one row
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = sorted(f.result().status_code for f in [pool.submit(send, "burst-1", ("water",)) for _ in range(6)])
    assert codes == [200] * 5 + [201] and store.count() == before + 3
    # text: header or JSON field
    n = t.app.state.store.count()
    for _ in range(2):
        assert t.post("/feedback", json={"text": "Dull.", "label": "negative", "idempotency_key": "k1"}).status_code in (200, 201)
        assert t.post("/feedback", json={"text": "Great.", "label": "positive"}, headers={"Idempotency-Key": "k2"}).status_code in (200, 201)
    assert t.app.state.store.count() == n + 2
    # the key is a unique column in SQLite; a store from before keys existed is upgraded in place
    with sqlite3.connect(store.db) as con:
        with pytest.raises(sqlite3.IntegrityError):
            con.execute("INSERT INTO feedback (created, task, input, input_sha256, correction, idempotency_key) VALUES ('t', 'multilabel', 'x', 'y', '{}', 'retry-123')")
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / "feedback.db") as con:
        con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, "
                          "task TEXT NOT NULL, input TEXT NOT NULL, input_sha256 TEXT NOT NULL, correction TEXT NOT NULL, prediction TEXT);"
                          "INSERT INTO meta VALUES ('task', 'multilabel'), ('classes', '[]');")
    upgraded = FeedbackStore(old, task="multilabel")
    assert upgraded.add(b"img", ".jpg", {"tags": []}, key="k").id == upgraded.add(b"img", ".jpg", {"tags": []}, key="k").id == 1


def _garbage(rng: random.Random, n: int) -> str:
    """Unicode garbage: any code point, lone surrogates included (as JSON escapes)."""
    return "".join(chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000)])) for _ in range(n))


def _fuzz_images(rng: random.Random) -> list[bytes]:
    arr = lambda *shape, dt=np.uint8: np.random.default_rng(rng.randrange(1 << 30)).integers(0, 255, shape).astype(dt)  # noqa: E731
    good = jpeg(30, 40, rng.randrange(100))
    return [
        png_header(20_000, 20_000), png_header(100_000, 100_000), png_header(65_535, 1), png_header(5000, 4000), png_header(1, 1),
        encode(np.zeros((6000, 6000), np.uint8)), good[: len(good) // 3], b"", os.urandom(rng.randrange(1, 3000)), b"GIF89a" + os.urandom(50),
        encode(arr(20, 20, 4), "PNG"), encode(arr(20, 20, 2), "PNG", "LA"), encode(arr(20, 20, dt=np.uint16)), encode(arr(20, 20, dt=np.int32), "TIFF", "I"),
        encode(arr(20, 20).astype(np.float32), "TIFF", "F"), encode(arr(8, 8, 3), "GIF"), encode(arr(8, 8, 3), "BMP"), encode(arr(8, 8, 3), "WEBP"),
        encode(arr(8, 8, 4), "TIFF", "CMYK"), encode(arr(1, 1, 3)), good, b"\xff\xd8\xff\xe0" + os.urandom(200), b"BM" + struct.pack("<IHHIIiiHH", 0, 0, 0, 54, 40, 100_000, 100_000, 1, 24),
        b"II*\0" + os.urandom(100), _garbage(rng, 50).encode("utf-8", "surrogatepass"),
    ]


def _fuzz_masks(rng: random.Random) -> list[bytes]:
    z = lambda v, dt=np.uint8: np.full((30, 40), v, dt)  # noqa: E731
    return [
        png_header(20_000, 20_000), png_header(40, 30), encode(z(-5, np.int32), "TIFF", "I"), encode(z(-1, np.int32), "TIFF", "I"), encode(z(2**31 - 1, np.int32), "TIFF", "I"),
        encode(z(250)), encode(z(31)), encode(z(40_000, np.uint16)), encode(np.dstack([z(1), z(2), z(1)])), encode(np.dstack([z(4)] * 3)), encode(z(1.0, np.float32), "TIFF", "F"),
        encode(np.zeros((31, 40), np.uint8)), encode(np.dstack([z(3), z(255)]), "PNG", "LA"), encode(z(1, bool)), b"", os.urandom(500), encode(z(3))[:60],
    ]


def _fuzz_requests(rng: random.Random, n: int) -> list[tuple[str, str, str, dict]]:
    images, masks = _fuzz_images(rng), _fuzz_masks(rng)
    deep = lambda k: "[" * k + "]" * k  # noqa: E731
    jsons = [deep(100_000), deep(33), '{"text": ' + deep(5000) + "}", '{"text": "' + "x" * 2_200_000 + '"}', "{}", "null", "[]", '"text"', '{"text": 5}',
             '{"text": null}', '{"text": ""}', '{"text": "\\ud800\\udfff\\ud800"}', '{"text": "ok", "label": ' + deep(1000) + "}", '{"text": "' + "a" * 100_001 + '"}',
             '{"text": "fine", "label": "positive", "idempotency_key": "' + "k" * 300 + '"}', '{"text": "fine", "label": ' + json.dumps(_garbage(rng, 20)) + "}",
             "{'text': 'single quotes'}", '{"text": "NaN", "x": NaN}', "\ufeff{}", '{"text": "dup", "text": "dup2"}']
    corrections = [deep(100_000), deep(40), "{" * 50_000, '{"tags": ' + deep(30) + "}", '{"tags": {"a": 1}}', '{"tags": ["' + "x" * 70_000 + '"]}', '{"x": NaN, "y": 1}',
                   '{"x": 1e999, "y": -1e999}', '{"x": "3", "y": [1]}', '{"x": true, "y": false}', "[]", "", "not json", json.dumps({"tags": [_garbage(rng, 10)] * 50}),
                   json.dumps({"tags": ["clear"] * 10_000}), '{"tags": ["clear"]}', '{"x": 10, "y": 10}', '{"x": -10, "y": 1}', '"\\ud800"']
    ctypes = ["application/json", "text/plain", "application/xml", "application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=",
              "multipart/form-data; boundary=zz", "image/png", "application/vnd.api+json", "", "application/json; charset=utf-16", "\u00e9t\u00e9/x"]
    out = []
    for _ in range(n):
        task = rng.choice(["camvid", "planet", "biwi", "imdb"])
        kind = rng.randrange(9)
        path = rng.choice(["/predict", "/feedback"])
        if kind == 0:  # JSON bodies
            out.append((task, "POST", path, {"content": rng.choice(jsons).encode("utf-8", "surrogatepass"), "headers": {"content-type": rng.choice(ctypes[:1] + ctypes[8:9] + [""])}}))
        elif kind == 1:  # an upload
            out.append((task, "POST", path, {"files": {"file": ("x.png", rng.choice(images), rng.choice(["image/png", "application/octet-stream", "text/html"]))},
                                             "data": {"correction": rng.choice(corrections)}}))
        elif kind == 2:  # CamVid masks (and masks sent to other tasks)
            out.append((rng.choice(["camvid"] * 4 + ["planet"]), "POST", "/feedback", {"files": {"file": ("x.jpg", jpeg(30, 40), "image/jpeg"), "mask": ("m.png", rng.choice(masks), "image/png")}}))
        elif kind == 3:  # corrections
            out.append((rng.choice(["planet", "biwi", "camvid"]), "POST", "/feedback", {"files": {"file": ("x.jpg", jpeg(30, 40), "image/jpeg")}, "data": {"correction": rng.choice(corrections)}}))
        elif kind == 4:  # bad multipart
            bodies = [b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n" + os.urandom(100),  # never closed
                      b"--zz--\r\n", b"".join(b"--zz\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n" % i for i in range(1200)) + b"--zz--\r\n",
                      b"--zz\r\nContent-Disposition: form-data; name=\"correction\"\r\n\r\n" + b"x" * 1_100_000 + b"\r\n--zz--\r\n", os.urandom(2000),
                      b"--zz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nnot a file\r\n--zz--\r\n", b"--zz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--zz--\r\n",
                      b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\xff\xfe.png\"\r\nContent-Type: \xe9\r\n\r\n" + jpeg() + b"\r\n--zz--\r\n"]
            out.append((task, "POST", path, {"content": rng.choice(bodies), "headers": {"content-type": rng.choice(ctypes[4:7] + ["multipart/form-data; boundary=zz"] * 3)}}))
        elif kind == 5:  # empty bodies, wrong content types
            out.append((task, "POST", path, {"content": rng.choice([b"", b"text=hi", jpeg(), b"<xml/>"]), "headers": {"content-type": rng.choice(ctypes)}}))
        elif kind == 6:  # wrong methods, paths, queries
            out.append((task, rng.choice(["GET", "PUT", "DELETE", "PATCH", "POST"]), rng.choice(["/predict", "/feedback", "/info", "/health", "/nowhere", "/static/../serve.py", "/%ff", "/docs?x=" + "a" * 5000]),
                        {"content": rng.choice([b"", b"{}", os.urandom(100)])}))
        elif kind == 7:  # idempotency keys
            key = rng.choice(["k-" + str(rng.randrange(5)), "", " ", "a" * 400, "\u00e9".encode("utf-8").decode("latin-1"), "ok\tkey"])
            body = {"json": {"text": "A film.", "label": rng.choice(["positive", "neutral"])}} if task == "imdb" else {"files": {"file": ("x.jpg", jpeg(30, 40, 1), "image/jpeg")}, "data": {"correction": rng.choice(corrections[-4:])}}
            out.append((task, "POST", "/feedback", {**body, "headers": {"Idempotency-Key": key}}))
        else:  # text routes
            text = rng.choice([_garbage(rng, 200), "", " " * 50, "<br />" * 1000, "\0" * 10, "a " * 60_000, "Loved it."])
            body = {"text": text, "label": rng.choice(["positive", "negative", _garbage(rng, 5)])}
            out.append(("imdb", "POST", path, {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}))
    return out


def test_fuzz_has_no_server_errors(clients, capsys):
    """A bounded fuzz (360 requests, fixed seed) over the four apps: every answer is a 4xx (or a
    2xx), JSON with an "error" for refusals; the server still answers afterwards."""
    rng = random.Random(2024)
    requests = _fuzz_requests(rng, 360)
    counts: collections.Counter = collections.Counter()
    failures = []
    t0 = time.time()
    for task, method, path, kw in requests:
        if "headers" in kw:  # raw bytes on the wire (UTF-8 in a header is garbage to the server)
            kw = {**kw, "headers": {k: v.encode("utf-8") for k, v in kw["headers"].items()}}
        r = clients[task].request(method, path, **kw)
        counts[r.status_code] += 1
        if r.status_code >= 500 or (r.status_code >= 400 and "error" not in r.json()):
            failures.append((task, method, path, r.status_code, r.text[:300], {k: (str(v)[:120]) for k, v in kw.items()}))
    print(f"\nfuzz: {len(requests)} requests in {time.time() - t0:.1f} s, status codes {dict(sorted(counts.items()))}")
    assert not failures, failures[:5]
    assert sum(counts.values()) >= 300 and max(counts) < 500 and set(counts) & {200, 201} and len([c for c in counts if c >= 400]) >= 4
    for c in clients.values():
        assert c.get("/health").json()["status"] == "ok"


def _rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} for {pid}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure resident memory")
def test_memory_is_bounded_under_a_burst_and_returns(bundles, tmp_path):
    """serve.py (defaults: 16-megapixel limit, 2 decode slots) under 8 concurrent 4000x4000 uploads
    and corrections, then 96 mixed requests 8 at a time: the peak stays under 2 slots x (10 B/px x
    16 Mpx + 10 MB upload) + 64 MB over idle, and resident memory returns within 64 MB of idle."""
    import httpx

    from test_serve import free_port

    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "serve.py", str(bundles["camvid"]), "--port", str(port), "--feedback", str(tmp_path / "fb")],
                            cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-2000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yy, xx = np.indices((4000, 4000))
        big = encode(np.dstack([(xx // 16 % 256).astype(np.uint8), (yy // 16 % 256).astype(np.uint8), np.zeros((4000, 4000), np.uint8)]))
        mask = encode(((xx // 500 + yy // 500) % 32).astype(np.uint8))
        del yy, xx
        mid = encode(np.random.default_rng(1).integers(0, 255, (1500, 2000, 3), dtype=np.uint8), "JPEG")
        with httpx.Client(timeout=600) as c:
            assert c.post(url + "/predict", files=image_upload(jpeg())).status_code == 200
        time.sleep(0.5)
        idle = _rss_mb(proc.pid)
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM)

        def send(i: int, kind: str) -> int:
            with httpx.Client(timeout=600) as c:
                if kind == "big":
                    files = {**image_upload(big), "mask": ("m.png", mask, "image/png")} if i % 2 else image_upload(big)
                    return c.post(url + ("/feedback" if i % 2 else "/predict"), files=files).status_code
                body = [png_header(20_000, 20_000), encode(np.zeros((6000, 6000), np.uint8)), mid, jpeg(), mid[:5000], os.urandom(3000)][i % 6]
                return c.post(url + "/predict", files=image_upload(body)).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: send(i, "big"), range(8)))
        time.sleep(1.0)
        peak, after = _rss_mb(proc.pid, "VmHWM"), _rss_mb(proc.pid)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            mixed = collections.Counter(pool.map(lambda i: send(i, "mixed"), range(96)))
        time.sleep(1.0)
        peak2, after2 = _rss_mb(proc.pid, "VmHWM"), _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    bound = 2 * (10 * 16_000_000 + 10 * 2**20) / 2**20 + 64
    print(f"\nmemory: idle {idle:.0f} MB; 8 x 4000x4000 at once: peak {peak:.0f} MB (+{peak - idle:.0f}), after {after:.0f} MB (+{after - idle:.0f}); "
          f"then 96 mixed {dict(mixed)}: peak {peak2:.0f} MB (+{peak2 - idle:.0f}), after {after2:.0f} MB (+{after2 - idle:.0f}); bound +{bound:.0f} MB")
    assert sorted(codes) == [200] * 4 + [201] * 4 and max(mixed) < 500 and {200, 413, 415, 422} <= set(mixed)
    assert peak - idle < bound and peak2 - idle < bound
    assert after - idle < 64 and after2 - idle < 64
