"""Serving: export bundles from fast_dev_run models, the JSON API for every task, bad input, the
feedback store (also killed mid-write), fine-tuning on feedback, serve.py, and the page in Chromium."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT

COMMON = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--data.init_args.num_workers", "0"]
SMALL = {
    "camvid": ["--data.init_args.size", "[32,32]", "--data.init_args.batch_size", "2"],
    "planet": ["--data.init_args.size", "32", "--data.init_args.batch_size", "4", "--model.init_args.use_tuned", "always"],
    "biwi": ["--data.init_args.size", "[32,32]", "--data.init_args.batch_size", "2"],
    "imdb": ["--data.init_args.max_length", "32", "--data.init_args.batch_size", "2"],
}
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def cli(args: list[str], runs: Path):
    from train import cli_main

    os.environ.pop("LESSON3_RUN_DIR", None)
    return cli_main([*args, *COMMON, "--runs_dir", str(runs)])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Per task: a fast_dev_run model, its checkpoint, and the bundle ``train.py export`` wrote."""
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for task, small in SMALL.items():
        fit = cli(["--task", task, "--trainer.fast_dev_run", "true", *small], root / "runs")
        ckpt = root / f"{task}.ckpt"
        fit.trainer.save_checkpoint(str(ckpt))
        cli(["export", "--task", task, "--ckpt_path", str(ckpt), "--out", str(root / task), *small], root / "runs")
        out[task] = {"bundle": root / task, "model": fit.model.eval(), "datamodule": fit.datamodule, "ckpt": ckpt}
    return out


@pytest.fixture(scope="module")
def clients(bundles, tmp_path_factory):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    base = tmp_path_factory.mktemp("served")
    return {t: TestClient(create_app(b["bundle"], feedback_db=base / t, max_bytes=300_000, max_pixels=2_000_000)) for t, b in bundles.items()}


def jpeg(h=50, w=70, seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def upload(data: bytes, name="photo.jpg", field="file"):
    return {field: (name, data, "image/jpeg")}


# -- bundles ---------------------------------------------------------------------------------
@pytest.mark.parametrize("task", list(SMALL))
def test_bundle_is_self_contained_and_matches_the_model(bundles, task, monkeypatch):
    import models.weights
    from serving.bundle import load_bundle

    b = bundles[task]
    meta = json.loads((b["bundle"] / "bundle.json").read_text())
    assert meta["task"] == {"camvid": "segmentation", "planet": "multilabel", "biwi": "points", "imdb": "text"}[task]
    assert meta["name"] == task and meta["classes"] == list(getattr(b["model"], "class_names", []))
    assert meta["net"]["init_args"].get("weights", None) is None and meta["source_checkpoint"] == str(b["ckpt"])
    assert meta["net"]["name"] == {"camvid": "UNet", "imdb": "TransformerClassifier"}.get(task, "TimmClassifier") and "class_path" not in meta["net"]
    files = sorted(f.relative_to(b["bundle"]).as_posix() for f in b["bundle"].rglob("*") if f.is_file() and f.name != "bundle.json" and "feedback" not in f.parts)
    assert sorted(meta["files"]) == files and "weights.safetensors" in files  # every file, with its SHA-256
    assert all(hashlib.sha256((b["bundle"] / f).read_bytes()).hexdigest() == h for f, h in meta["files"].items())

    def offline_only(*a, **k):
        raise AssertionError("loading a bundle must not read pretrained weights")

    monkeypatch.setattr(models.weights, "lite0_state_dict", offline_only)
    monkeypatch.setattr("transformers.AutoModel.from_pretrained", offline_only)
    loaded = load_bundle(b["bundle"])
    model = b["model"]
    with torch.inference_mode():
        if task == "imdb":
            assert meta["input"] == {"kind": "text", "max_length": 32, "tokenizer": "backbone"}
            assert (b["bundle"] / "backbone" / "config.json").is_file() and (b["bundle"] / "backbone" / "tokenizer.json").is_file()
            enc = loaded.tokenizer(["a wonderful film", "dull and long"], padding=True, return_tensors="pt", return_token_type_ids=False)
            args = (enc["input_ids"], enc["attention_mask"])
        else:
            h, w = meta["input"]["size"]
            assert (h, w) == (32, 32) and meta["input"]["dtype"] == "uint8" and len(meta["input"]["normalize"]["mean"]) == 3
            args = (torch.randint(0, 255, (2, 3, h, w), dtype=torch.uint8),)
        torch.testing.assert_close(loaded.net(*args), model.net(*args), rtol=1e-4, atol=1e-4)
    if task == "planet":
        assert meta["thresholds"] == pytest.approx(model.thresholds.tolist(), abs=1e-6)
    if task == "camvid":
        assert meta["void_index"] == model.void_index and len(loaded.palette) == len(meta["classes"])


def test_export_needs_a_checkpoint_and_reports_bad_bundles(bundles, tmp_path):
    from serving.bundle import BundleError, load_bundle

    with pytest.raises(SystemExit, match="export needs --ckpt_path"):
        cli(["export", "--task", "biwi", *SMALL["biwi"]], tmp_path / "runs")
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(bundles["biwi"]["bundle"], broken)
    (broken / "weights.safetensors").write_bytes(b"not a state dict")
    with pytest.raises(BundleError, match=r"weights\.safetensors: refused: its SHA-256 differs"):
        load_bundle(broken)
    meta = json.loads((broken / "bundle.json").read_text())
    meta["files"]["weights.safetensors"] = hashlib.sha256(b"not a state dict").hexdigest()
    (broken / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"weights\.safetensors: unreadable weights"):
        load_bundle(broken)
    with pytest.raises(SystemExit, match="a 'points' bundle cannot initialise a 'multilabel' model"):
        cli(["validate", "--task", "planet", "--ckpt_path", str(bundles["biwi"]["bundle"]), *SMALL["planet"]], tmp_path / "runs")
    old = tmp_path / "old"  # written when a points bundle said "point": read in today's name
    shutil.copytree(bundles["biwi"]["bundle"], old)
    meta = json.loads((old / "bundle.json").read_text())
    (old / "bundle.json").write_text(json.dumps({**meta, "task": "point"}))
    assert load_bundle(old).task == "points"


def test_bundles_serve_one_pass_unless_export_asks_for_tta(bundles, tmp_path):
    """Planet's and BIWI's configs validate with TTA; their bundles serve one pass (the network's
    own cost) unless ``export --tta true``."""
    from serving.predict import Predictor

    for task in ("planet", "biwi"):
        assert bundles[task]["model"].tta and json.loads((bundles[task]["bundle"] / "bundle.json").read_text())["tta"] is False
    cli(["export", "--task", "planet", "--ckpt_path", str(bundles["planet"]["ckpt"]), "--out", str(tmp_path / "tta"), "--tta", "true", *SMALL["planet"]], tmp_path / "runs")
    assert json.loads((tmp_path / "tta" / "bundle.json").read_text())["tta"] is True
    from serving.bundle import load_bundle

    assert Predictor(load_bundle(tmp_path / "tta")).tta and not Predictor(load_bundle(bundles["planet"]["bundle"])).tta


# -- the API -----------------------------------------------------------------------------------
def test_health_info_and_openapi(clients, bundles):
    for task, c in clients.items():
        assert c.get("/health").json()["status"] == "ok"
        info = c.get("/info").json()
        assert info["task"] in ("multilabel", "segmentation", "points", "text") and bool(info["classes"]) == (task != "biwi")
        meta = json.loads((bundles[task]["bundle"] / "bundle.json").read_text())
        assert info["tta"] is bool(meta.get("tta", False))  # the page shows it
        schema = c.get("/openapi.json").json()
        body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
        assert ("application/json" in body) == (task == "imdb") and ("multipart/form-data" in body) == (task != "imdb")
        assert c.get("/").headers["content-type"].startswith("text/html") and "app.js" in c.get("/").text


def test_predict_planet(clients, bundles):
    r = clients["planet"].post("/predict", files=upload(jpeg()))
    assert r.status_code == 200, r.text
    ans = r.json()
    meta = json.loads((bundles["planet"]["bundle"] / "bundle.json").read_text())
    assert len(ans["tags"]) == 17 and [t["probability"] for t in ans["tags"]] == sorted((t["probability"] for t in ans["tags"]), reverse=True)
    by_tag = dict(zip(meta["classes"], meta["thresholds"]))
    for t in ans["tags"]:
        assert t["threshold"] == pytest.approx(by_tag[t["tag"]], abs=1e-4) and t["predicted"] == (t["probability"] >= t["threshold"])
    assert ans["predicted"] == [t["tag"] for t in ans["tags"] if t["predicted"]]


def test_predict_camvid_mask_at_upload_size(clients):
    r = clients["camvid"].post("/predict", files=upload(jpeg(50, 70)))
    assert r.status_code == 200, r.text
    ans = r.json()
    mask = Image.open(io.BytesIO(base64.b64decode(ans["mask_png"])))
    assert mask.size == (70, 50) and mask.mode == "L" and (ans["width"], ans["height"]) == (70, 50)
    ids = np.asarray(mask)
    assert sum(s["share"] for s in ans["shares"]) == pytest.approx(1, abs=1e-3)
    for s in ans["shares"]:
        assert s["share"] == pytest.approx((ids == s["id"]).mean(), abs=1e-4) and len(s["color"]) == 3


def test_camvid_mask_matches_predict_step_and_stays_bounded(bundles):
    """The served mask is SegmentationTask.predict_step's (bilinear logits, argmax at full size);
    above MAX_MASK_PIXELS the ids are enlarged by nearest neighbour instead."""
    import torch.nn.functional as F

    from serving.predict import MAX_MASK_PIXELS, Predictor

    logits = torch.randn(1, 5, 24, 32)
    ids = Predictor.upsample_argmax(logits, 150, 200)
    assert np.array_equal(ids, F.interpolate(logits, size=(150, 200), mode="bilinear", align_corners=False).argmax(1)[0].numpy())
    big = Predictor.upsample_argmax(logits, 2000, MAX_MASK_PIXELS // 1000)
    assert big.shape == (2000, MAX_MASK_PIXELS // 1000) and big.dtype == np.uint8 and int(big.max()) < 5


def test_predict_biwi_point_in_upload_pixels(clients, bundles):
    data = jpeg(120, 160)
    ans = clients["biwi"].post("/predict", files=upload(data)).json()
    assert (ans["width"], ans["height"]) == (160, 120)
    import cv2

    from tasks.pointreg import to_pixels

    x = cv2.resize(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), (32, 32), interpolation=cv2.INTER_AREA)
    with torch.inference_mode():
        scaled = bundles["biwi"]["model"].infer(torch.from_numpy(x).permute(2, 0, 1)[None])  # with its tta, as served
    expect = to_pixels(scaled.float(), torch.tensor([[120, 160]]))[0].tolist()
    assert (ans["x"], ans["y"]) == pytest.approx(expect, abs=0.02)


def test_predict_imdb(clients):
    ans = clients["imdb"].post("/predict", json={"text": "A <br />wonderful, moving film. " * 20}).json()
    assert ans["label"] in ("negative", "positive") and sum(ans["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert ans["probability"] == max(ans["probabilities"].values()) and ans["tokens"] == 32  # truncated to max_length


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_is_a_4xx_json_error_and_the_server_keeps_serving(clients):
    c = clients["camvid"]
    good = jpeg()
    cases = [
        (c.post("/predict", files=upload(b"%PDF-1.4 not an image", "doc.pdf")), 415, "not an image"),
        (c.post("/predict", files=upload(good[: len(good) // 2])), 422, "truncated"),
        (c.post("/predict", files=upload(b"")), 422, "empty"),
        (c.post("/predict", files=upload(good, field="image")), 422, "missing field 'file'"),
        (c.post("/predict", json={"text": "hi"}), 422, "missing field 'file'"),
        (c.post("/predict", files=upload(os.urandom(400_000))), 413, "limit is 300,000 bytes"),
        (c.post("/predict", content=iter([b"x" * 100_000] * 5), headers={"content-type": "multipart/form-data; boundary=zz"}), 413, "limit"),
        (c.post("/predict", files=upload(png(np.zeros((1500, 1500), np.uint8)), "big.png")), 413, "pixels"),
        (c.post("/feedback", files=upload(good), data={"correction": "{}"}), 422, "need field 'mask'"),
        (c.post("/feedback", files={**upload(good), "mask": ("m.png", png(np.zeros((10, 10), np.uint8)), "image/png")}), 422, "the image is 70x50"),
        (c.post("/feedback", files={**upload(good), "mask": ("m.png", png(np.full((50, 70), 99, np.uint8)), "image/png")}), 422, "class id 99"),
        (c.get("/nowhere"), 404, "Not Found"),
    ]
    t = clients["imdb"]
    cases += [
        (t.post("/predict", json={"text": "   <br />  "}), 422, "empty"),
        (t.post("/predict", json={"review": "fine"}), 422, "missing field 'text'"),
        (t.post("/predict", content=b"not json", headers={"content-type": "application/json"}), 422, "JSON"),
        (t.post("/predict", files=upload(good)), 422, "text"),
        (t.post("/feedback", json={"text": "fine", "label": "meh"}), 422, "not one of"),
    ]
    p = clients["planet"]
    cases += [
        (p.post("/feedback", files=upload(good), data={"correction": "{tags"}), 422, "not JSON"),
        (p.post("/feedback", files=upload(good), data={"correction": json.dumps({"tags": ["lava"]})}), 422, "unknown tag"),
        (clients["biwi"].post("/feedback", files=upload(good), data={"correction": json.dumps({"x": 500, "y": 1})}), 422, "outside"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, (r.status_code, r.text)
        assert r.headers["content-type"] == "application/json" and words in r.json()["error"], r.json()
    assert c.get("/health").json()["status"] == "ok"
    assert c.post("/predict", files=upload(good)).status_code == 200


# -- feedback --------------------------------------------------------------------------------------
def _feedback_for(task, c, bundles):
    """Post one correction; returns (answer, what the training target must be)."""
    if task == "planet":
        r = c.post("/feedback", files=upload(jpeg(40, 40, 1)), data={"correction": json.dumps({"tags": ["water", "clear"]})})
        return r, ["clear", "water"]
    if task == "camvid":
        mask = np.zeros((50, 70), np.uint8)
        mask[:, 35:] = 17
        return c.post("/feedback", files={**upload(jpeg(50, 70, 2)), "mask": ("mask.png", png(mask), "image/png")}), mask
    if task == "biwi":
        return c.post("/feedback", files=upload(jpeg(120, 160, 3)), data={"correction": json.dumps({"x": 40.0, "y": 90.0})}), (40.0, 90.0)
    return c.post("/feedback", json={"text": "Loved every minute of it.", "label": "positive"}), 1


@pytest.mark.parametrize("task", list(SMALL))
def test_feedback_is_stored_and_joins_the_training_split(task, clients, bundles):
    from datamodules.biwi import BiwiDataModule
    from datamodules.camvid import CamVidDataModule
    from datamodules.imdb import IMDBDataModule
    from datamodules.planet import PlanetDataModule

    c = clients[task]
    r, truth = _feedback_for(task, c, bundles)
    assert r.status_code == 201, r.text
    folder = c.app.state.store.folder
    ex = c.app.state.store.examples()[-1]
    assert ex.id == r.json()["id"] and ex.input.is_file() and ex.prediction
    kw = {"num_workers": 0, "feedback": str(folder)}
    if task == "planet":
        dm = PlanetDataModule(size=32, augment=False, **kw)
        dm.setup("fit")
        ds = dm.datasets["train"]
        assert ds.paths[-1] == ex.input and [n for n, v in zip(dm.classes, ds.targets[-1].tolist()) if v] == truth
    elif task == "camvid":
        dm = CamVidDataModule(size=(32, 64), augment=False, **kw)
        dm.setup("fit")
        item = dm.datasets["train"][len(dm.datasets["train"]) - 1]
        assert dm.datasets["train"].items[-1] == (ex.input, ex.file("mask"))
        assert (item["mask"][:, :30] == 0).all() and (item["mask"][:, 34:] == 17).all()
    elif task == "biwi":
        dm = BiwiDataModule(size=(32, 32), augment=False, **kw)
        dm.setup("fit")
        ds = dm.datasets["train"]
        assert ds.items[-1][2] == truth
        from datamodules.biwi import resize_point, scale_point

        expect = scale_point(resize_point(truth, (160, 120), (32, 32)), 32, 32)
        assert ds[len(ds) - 1]["target"].tolist() == pytest.approx(expect.tolist(), abs=1e-5)
    else:
        dm = IMDBDataModule(max_length=32, **kw)
        dm.setup("fit")
        reviews = dm.datasets["train"].reviews
        assert reviews.texts[-1] == "Loved every minute of it." and reviews.labels[-1] == truth
    wrong = {"planet": "points", "camvid": "multilabel", "biwi": "text", "imdb": "segmentation"}[task]
    from serving.feedback import FeedbackError, read_feedback

    with pytest.raises(FeedbackError, match=f"holds '{c.app.state.store.task}' feedback; this datamodule trains '{wrong}'"):
        read_feedback(folder, wrong)


WRITER = """
import sys
sys.path.insert(0, sys.argv[2])
from serving.feedback import FeedbackStore
store = FeedbackStore(sys.argv[1], task="multilabel", classes=["a", "b"])
i = 0
while True:
    store.add(bytes([i % 251]) * 300_000, ".jpg", {"tags": ["a"]}, {"i": i})
    i += 1
"""


def test_feedback_store_survives_a_killed_writer(tmp_path):
    from serving.feedback import FeedbackStore

    folder = tmp_path / "fb"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(ROOT)])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            db = folder / "feedback.db"
            if db.is_file():
                try:
                    with sqlite3.connect(db, timeout=5) as con:
                        if con.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] >= 8:
                            break
                except sqlite3.OperationalError:
                    pass
            assert proc.poll() is None, "the writer died by itself"
            time.sleep(0.05)
        else:
            pytest.fail("the writer stored too little in 60 s")
        os.kill(proc.pid, signal.SIGKILL)  # mid-loop: maybe mid-file, maybe mid-transaction
    finally:
        proc.kill()
        proc.wait()
    with sqlite3.connect(folder / "feedback.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = FeedbackStore(folder, task="multilabel", classes=["a", "b"])  # reopening cleans stray temporaries
    examples = store.examples()  # checks every committed row's file and its sha256
    assert len(examples) >= 8 and [e.id for e in examples] == list(range(1, len(examples) + 1))
    for e in examples:
        assert e.input.read_bytes() == bytes([e.prediction["i"] % 251]) * 300_000
    assert not list((folder / "inputs").glob(".tmp-*"))
    assert len(list((folder / "inputs").iterdir())) <= len(examples) + 1  # at most one complete file without its row
    assert store.add(b"after", ".jpg", {"tags": ["b"]}).id == len(examples) + 1


@pytest.mark.slow
def test_fine_tune_on_feedback_from_a_bundle(bundles, clients, tmp_path):
    """``fit --data.feedback DIR --ckpt_path BUNDLE``: the bundle's weights, the corrections in the training split."""
    c = clients["planet"]
    for seed in range(2):
        c.post("/feedback", files=upload(jpeg(40, 40, 10 + seed)), data={"correction": json.dumps({"tags": ["haze"]})})
    folder = c.app.state.store.folder
    n = c.app.state.store.count()
    bundle = bundles["planet"]["bundle"]
    fit = cli(["fit", "--task", "planet", "--data.feedback", str(folder), "--ckpt_path", str(bundle), "--trainer.fast_dev_run", "true",
               "--model.init_args.lr", "0", *SMALL["planet"]], tmp_path / "runs")
    ds = fit.datamodule.datasets["train"]
    stored = [e.input for e in c.app.state.store.examples()]
    assert ds.paths[-n:] == stored and ds.targets[-1].tolist() == [float(t == "haze") for t in fit.datamodule.classes]
    from safetensors.torch import load_file

    state = load_file(str(bundle / "weights.safetensors"))
    for k, v in fit.model.net.named_parameters():  # lr 0: still exactly the bundle's weights (batch-norm statistics move)
        torch.testing.assert_close(v.detach(), state[k], msg=k)
    # Planet's tuned thresholds come with the bundle (validation then tunes them again)
    from serving.bundle import load_weights

    meta = json.loads((bundle / "bundle.json").read_text())
    fit.model.thresholds.fill_(0.0)
    assert load_weights(fit.model, bundle) == f"bundle {bundle}"
    assert fit.model.thresholds.tolist() == pytest.approx(meta["thresholds"], abs=1e-6)


# -- serve.py and the page ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    """``python serve.py BUNDLE`` (CamVid) on a free localhost port."""
    import httpx

    base = tmp_path_factory.mktemp("serve_py")
    port, log = free_port(), (base / "server.log").open("w")
    cmd = [sys.executable, "serve.py", str(bundles["camvid"]["bundle"]), "--port", str(port), "--feedback", str(base / "feedback"), "--max-bytes", "2000000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"serve.py exited {proc.returncode}: {(base / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"serve.py did not answer in 120 s: {(base / 'server.log').read_text()[-2000:]}")
        time.sleep(0.3)
    yield {"url": url, "feedback": base / "feedback", "proc": proc}
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_serve_py_over_http(server):
    import httpx

    url = server["url"]
    assert httpx.get(f"{url}/health").json()["task"] == "segmentation"
    r = httpx.post(f"{url}/predict", files=upload(jpeg(30, 40)))
    assert r.status_code == 200 and r.json()["width"] == 40
    r = httpx.post(f"{url}/predict", files=upload(os.urandom(2_100_000)))
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert httpx.get(f"{url}/health").status_code == 200


def test_serve_py_names_a_bad_bundle(tmp_path):
    out = subprocess.run([sys.executable, "serve.py", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and f"error: {tmp_path}: not a bundle" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def chrome():
    """Headless Chromium through Selenium (skips where Chromium is not installed)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Chromium not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    yield driver
    driver.quit()


def page_state(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def wait_state(driver, want: str, timeout: float = 60) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status = lambda: driver.find_element(By.ID, "status")  # noqa: E731
    WebDriverWait(driver, timeout).until(lambda d: page_state(d) == want or "error" in (status().get_attribute("class") or ""))
    assert page_state(driver) == want, status().text


@contextlib.contextmanager
def served(app):
    """``app`` under uvicorn on a free localhost port, in a thread of this process."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["planet", "biwi", "imdb"])
def test_page_corrections_in_chromium(task, chrome, clients, tmp_path):
    """Predict and correct on the page: tick tags (Planet), click the point (BIWI), pick the label (IMDB)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    app = clients[task].app
    store, before = app.state.store, app.state.store.count()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(120, 160, 7))
    with served(app) as url:
        chrome.get(url + "/")
        wait_state(chrome, "ready", 30)
        if task == "imdb":
            chrome.find_element(By.ID, "text").send_keys("Two hours I will never get back.")
            chrome.find_element(By.ID, "predict-text").click()
        else:
            chrome.find_element(By.ID, "file").send_keys(str(photo))
        wait_state(chrome, "predicted")
        result = chrome.find_element(By.ID, "result").text
        chrome.find_element(By.ID, "wrong").click()
        if task == "planet":
            assert "Tags:" in result and "%" in result
            for box in chrome.find_elements(By.CSS_SELECTOR, "input[name=tag]"):
                if box.is_selected() != (box.get_attribute("value") in ("cloudy", "water")):
                    box.click()
        elif task == "biwi":
            assert "Head centre: x" in result
            canvas = chrome.find_element(By.ID, "canvas")
            chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
            w, h = canvas.size["width"], canvas.size["height"]
            ActionChains(chrome).move_to_element_with_offset(canvas, int(w * 0.25), -int(h * 0.25)).click().perform()
        else:
            assert "probability" in result
            predicted = result.split()[0]
        chrome.find_element(By.ID, "send-fix").click()
        wait_state(chrome, "corrected", 30)
    assert store.count() == before + 1
    ex = store.examples()[-1]
    if task == "planet":
        assert ex.correction == {"tags": ["cloudy", "water"]} and ex.input.read_bytes() == photo.read_bytes()
    elif task == "biwi":  # a quarter of the way from the centre, in the photo's pixels
        assert (ex.correction["x"], ex.correction["y"]) == pytest.approx((0.75 * 160 - 0.5, 0.25 * 120 - 0.5), abs=1.5)
    else:
        assert ex.correction["label"] != predicted and ex.input.read_text() == "Two hours I will never get back."


@pytest.mark.slow
def test_page_in_headless_chromium(server, bundles, chrome, tmp_path):
    """The page in a real browser, served by serve.py: upload a street photo, see the mask drawn,
    correct a region, send it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    from serving.feedback import FeedbackStore

    photo = sorted((bundles["camvid"]["datamodule"].root_path / "images").glob("*.png"))[0]
    driver = chrome
    driver.get(server["url"] + "/")
    wait_state(driver, "ready", 30)
    driver.find_element(By.ID, "file").send_keys(str(photo))
    wait_state(driver, "predicted")
    result = driver.find_element(By.ID, "result").text
    assert "Classes in the image" in result and "%" in result
    w, h = Image.open(photo).size
    canvas = driver.find_element(By.ID, "canvas")
    assert driver.execute_script("return [arguments[0].width, arguments[0].height]", canvas) == [w, h]
    # the overlay is drawn: the canvas differs from the photo itself
    drawn = np.array(driver.execute_script("return Array.from(arguments[0].getContext('2d').getImageData(0, 0, arguments[0].width, arguments[0].height).data)", canvas), np.uint8).reshape(h, w, 4)
    assert np.abs(drawn[..., :3].astype(int) - np.asarray(Image.open(photo).convert("RGB")).astype(int)).mean() > 5
    shot = tmp_path / "serve_screenshot.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("LESSON3_SCREENSHOT"):
        shutil.copy(shot, os.environ["LESSON3_SCREENSHOT"])
    # "wrong": paint a region as Road and send it
    driver.find_element(By.ID, "wrong").click()
    Select(driver.find_element(By.ID, "fix-class")).select_by_visible_text("Road")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    cw, ch = canvas.size["width"], canvas.size["height"]  # displayed size (scaled up from the photo's)
    ActionChains(driver).move_to_element_with_offset(canvas, -int(0.35 * cw), -int(0.35 * ch)).click_and_hold().move_by_offset(int(0.7 * cw), int(0.7 * ch)).release().perform()
    driver.find_element(By.ID, "send-fix").click()
    wait_state(driver, "corrected", 30)
    assert "Saved as correction #1" in driver.find_element(By.ID, "status").text
    store = FeedbackStore(server["feedback"])
    ex = store.examples()[-1]
    mask = np.asarray(Image.open(ex.file("mask")))
    road = store.classes.index("Road")
    assert mask.shape == (h, w) and (mask == road).mean() > 0.3 and mask[h // 2, w // 2] == road


def test_micro_batcher_batches_concurrent_callers_and_shares_errors():
    from serving.batching import MicroBatcher

    def slow_double(x):
        time.sleep(0.05)
        if (x < 0).any():
            raise ValueError("negative input")
        return x * 2

    mb = MicroBatcher(slow_double, max_batch=8)
    results, barrier = {}, threading.Barrier(12)

    def call(i):
        barrier.wait()
        results[i] = mb(torch.full((1, 3), float(i)))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(results[i], torch.full((1, 3), 2.0 * i)) for i in range(12))  # each its own row
    assert sum(mb.batch_sizes) == 12 and max(mb.batch_sizes) > 1 and max(mb.batch_sizes) <= 8
    assert mb(torch.ones(1, 3)).tolist() == [[2.0, 2.0, 2.0]]  # alone: a batch of one, at once
    with pytest.raises(ValueError, match="negative"):
        mb(-torch.ones(1, 3))
    assert mb(torch.ones(1, 3)).sum() == 6  # still serving after an error


def test_concurrent_requests_are_batched_with_the_same_answers(clients, monkeypatch):
    c = clients["biwi"]
    batcher = c.app.state.predictor.images
    images = [jpeg(seed=i) for i in range(8)]
    alone = [c.post("/predict", files=upload(img)).json() for img in images]
    forward = batcher.fn

    def slow_forward(x):  # the first forward lasts long enough for the other requests to queue
        time.sleep(0.3)
        return forward(x)

    monkeypatch.setattr(batcher, "fn", slow_forward)
    before = len(batcher.batch_sizes)
    answers, barrier = {}, threading.Barrier(len(images))

    def call(i):
        barrier.wait()
        answers[i] = c.post("/predict", files=upload(images[i])).json()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(len(images)):
        assert answers[i]["x"] == pytest.approx(alone[i]["x"], abs=0.05) and answers[i]["y"] == pytest.approx(alone[i]["y"], abs=0.05)
    sizes = batcher.batch_sizes[before:]
    assert sum(sizes) == 8 and len(sizes) < 8, sizes  # fewer forward passes than requests
