"""Inference lives with the model: ``predict_step`` and ``/predict`` give the same answer for the
same image (every task kind), serving starts without Lightning, and the layers import one way.

Tiny untrained networks (no pretrained weights), exported with ``serving.bundle.export_bundle``;
``predict`` batches come from the datamodules' own predict loaders, reading the files uploaded.
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT

LITE = {"backbone": "tf_efficientnet_lite0", "weights": None}
SIZE = (32, 32)


def noise_jpeg(path: Path, h: int, w: int, seed: int) -> bytes:
    """A smooth random picture (a JPEG large enough that a 32 px model reads it drafted)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    Image.fromarray(small).resize((w, h), Image.BILINEAR).save(path, "JPEG", quality=90)
    return path.read_bytes()


def make_task(kind: str):
    from models import TimmClassifier, UNet
    from models.text import TransformerClassifier
    from tasks.classify import ClassificationTask
    from tasks.planet import PlanetTask
    from tasks.pointreg import PointRegressionTask
    from tasks.segmentation import SegmentationTask
    from tasks.text import TextClassificationTask

    torch.manual_seed(0)
    if kind == "multilabel":
        task = PlanetTask(TimmClassifier(num_classes=3, **LITE), num_classes=3, class_names=["haze", "road", "water"], tta=True, decision="tuned")
        task.thresholds.copy_(torch.tensor([0.3, 0.5, 0.7]))
    elif kind == "segmentation":
        task = SegmentationTask(UNet(num_classes=4, encoder="tu-tf_efficientnet_lite0", weights=None), num_classes=4, class_names=list("abcd"), void_index=3)
    elif kind == "points":
        task = PointRegressionTask(TimmClassifier(num_classes=2, **LITE), zero_head=False, tta=True)
    elif kind == "classify":
        task = ClassificationTask(TimmClassifier(num_classes=3, **LITE), num_classes=3, class_names=["cat", "dog", "owl"])
    else:
        task = TextClassificationTask(TransformerClassifier(num_classes=2), num_classes=2, class_names=["negative", "positive"])
    assert task.kind == kind
    return task.eval()


def datamodule(kind: str, folder: Path):
    from datamodules.classify import ClassifyDataModule
    from datamodules.multilabel import MultiLabelDataModule
    from datamodules.points import PointsDataModule
    from datamodules.segment import SegmentationDataModule

    common = {"size": list(SIZE), "batch_size": 2, "num_workers": 0, "predict_dir": str(folder)}
    if kind == "segmentation":  # its setup reads the root's layout: the built-in CamVid sample
        from datamodules.camvid import CamVidDataModule

        return CamVidDataModule(root=None, **common)
    cls = {"multilabel": MultiLabelDataModule, "segmentation": SegmentationDataModule, "points": PointsDataModule, "classify": ClassifyDataModule}[kind]
    return cls(root=str(folder), **common)


def predict_batches(dm, stage: str = "predict") -> list[dict]:
    dm.setup(stage)
    return list(dm.predict_dataloader())


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("uploads")
    return {name: noise_jpeg(folder / name, h, w, seed) for name, h, w, seed in (("a.jpg", 150, 200, 1), ("b.jpg", 96, 128, 2))}


def served(task, tmp_path: Path):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.bundle import export_bundle

    size = 32 if task.kind == "text" else SIZE
    bundle = export_bundle(task, tmp_path / "bundle", size, name=task.kind, tta=bool(getattr(task, "tta", False)))  # as predict_step
    return TestClient(create_app(bundle, feedback_db=tmp_path / "feedback")), json.loads((bundle / "bundle.json").read_text())


def step_answers(task, batches: list[dict]) -> list[dict]:
    with torch.inference_mode():
        return [row for i, b in enumerate(batches) for row in task.predict_step(b, i)]


def differ(a: float, b: float, by: float) -> bool:
    return abs(a - b) > by


@pytest.mark.parametrize("kind", ["multilabel", "segmentation", "points", "classify"])
def test_predict_step_and_predict_agree_on_images(kind, images, tmp_path):
    folder = tmp_path / "predict"
    folder.mkdir()
    for name, data in images.items():
        (folder / name).write_bytes(data)
    task = make_task(kind)
    client, meta = served(task, tmp_path)
    assert meta["kind"] == kind and meta["input"]["draft"] is (kind != "segmentation") and meta["input"]["resize"] == "area"
    by_name = {Path(str(r["name"])).stem: r for r in step_answers(task, predict_batches(datamodule(kind, folder)))}
    assert sorted(by_name) == ["a", "b"]
    answers = {n: client.post("/predict", files={"file": (n, data, "image/jpeg")}).json() for n, data in images.items()}
    for name, ans in answers.items():
        want = by_name[Path(name).stem]
        if kind == "multilabel":
            got = {t["tag"]: t["probability"] for t in ans["tags"]}
            assert got == {c: pytest.approx(float(p), abs=2e-4) for c, p in zip(task.class_names, want["probs"])}
            assert sorted(ans["predicted"]) == sorted(want["tags"]) and meta["decision"] == "tuned"
            assert [t["threshold"] for t in sorted(ans["tags"], key=lambda t: task.class_names.index(t["tag"]))] == [0.3, 0.5, 0.7]
        elif kind == "classify":
            assert ans["label"] == want["label"] and ans["probability"] == pytest.approx(want["probability"], abs=2e-4)
        elif kind == "points":
            assert (ans["x"], ans["y"]) == (pytest.approx(want["x_px"], abs=0.02), pytest.approx(want["y_px"], abs=0.02))
        else:
            import base64

            mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(ans["mask_png"]))))
            assert mask.shape == tuple(want["mask"].shape) == Image.open(io.BytesIO(images[name])).size[::-1]
            assert (mask == want["mask"].numpy()).mean() > 0.999
    # the answers depend on the image (so agreeing is not trivial)
    a, b = answers["a.jpg"], answers["b.jpg"]
    if kind == "multilabel":
        assert differ(a["tags"][0]["probability"], b["tags"][0]["probability"], 1e-3) or a["tags"][0]["tag"] != b["tags"][0]["tag"]
    elif kind == "classify":
        assert a["probabilities"] != b["probabilities"]
    elif kind == "points":
        assert differ(a["x"] / a["width"], b["x"] / b["width"], 1e-3)


def test_predict_step_and_predict_agree_on_text(tmp_path):
    from datamodules.text import TextDataModule

    root = tmp_path / "texts"
    root.mkdir()
    rows = [("A <br />wonderful, moving film.", "positive"), ("Dull &amp; far too long.", "negative")] * 3
    import csv

    with open(root / "texts.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    reviews = ["A <br /><br />wonderful, moving film. " * 4, "Dull &amp; far   too long; I left early."]
    with open(tmp_path / "predict.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text",), *[(r,) for r in reviews]])
    task = make_task("text")
    dm = TextDataModule(root=str(root), csv="texts.csv", max_length=32, batch_size=2, num_workers=0, predict_path=str(tmp_path / "predict.csv"), classes=["negative", "positive"])
    steps = sorted(step_answers(task, predict_batches(dm)), key=lambda r: r["index"])
    client, meta = served(task, tmp_path)
    assert meta["input"]["max_length"] == 32 and len(steps) == 2
    for review, want in zip(reviews, steps):
        ans = client.post("/predict", json={"text": review}).json()
        assert ans["label"] == want["label"] and ans["probability"] == pytest.approx(want["probability"], abs=2e-4)


def test_serving_starts_without_lightning(tmp_path):
    """A fresh process loads a segmentation bundle (the one that used to import Lightning for its
    palette), creates the app and answers, with no Lightning, torchmetrics, tasks or datamodules."""
    from serving.bundle import export_bundle

    bundle = export_bundle(make_task("segmentation"), tmp_path / "bundle", SIZE, name="camvid")
    code = f"""
import io, json, sys
from PIL import Image
from fastapi.testclient import TestClient
from serving.app import create_app
c = TestClient(create_app({str(bundle)!r}, feedback_db={str(tmp_path / 'fb')!r}))
buf = io.BytesIO(); Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "PNG")
ans = c.post("/predict", files={{"file": ("x.png", buf.getvalue(), "image/png")}}).json()
assert (ans["width"], ans["height"]) == (40, 30), ans
banned = ("pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics", "tasks", "datamodules", "callbacks", "matplotlib", "albumentations")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in banned)))
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def our_imports(path: Path) -> set[str]:
    """The project packages a module imports (absolute imports; relative ones stay in its package)."""
    ours = {"models", "tasks", "datamodules", "callbacks", "serving", "train", "cli"}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & ours


@pytest.mark.parametrize("package,allowed", [("models", {"models"}), ("serving", {"models"})])
def test_layers_models_and_serving(package, allowed):
    """models/ imports nothing of ours; serving/ only models/ (its inference included)."""
    bad = {p.name: our_imports(p) - allowed for p in sorted((ROOT / package).glob("*.py")) if our_imports(p) - allowed}
    assert bad == {}
    assert our_imports(ROOT / "serve.py") <= {"serving"}


def test_datamodules_do_not_import_serving_or_tasks():
    bad = {p.name: our_imports(p) & {"serving", "tasks"} for p in sorted((ROOT / "datamodules").rglob("*.py")) if our_imports(p) & {"serving", "tasks"}}
    assert bad == {}


def test_palette_is_matplotlibs_tab20_without_matplotlib():
    import matplotlib

    from models.inference import palette

    cols = [matplotlib.colormaps["tab20"](i)[:3] for i in range(20)] + [matplotlib.colormaps["tab20b"](i)[:3] for i in range(20)]
    want = (np.array([cols[i % 40] for i in range(45)]) * 255).astype(np.uint8)
    want[7] = 0
    assert np.array_equal(palette(45, void_index=7), want)


def test_served_tags_follow_the_bundles_decision():
    """Planet's three decisions answer as ``PlanetTask.predict_step``'s ``decide_tags`` does."""
    from types import SimpleNamespace

    from models.decide import expected_f2_decision
    from serving.predict import Predictor

    probs = torch.tensor([0.9, 0.45, 0.3, 0.05])
    net = torch.nn.Linear(1, 1)
    for decision, want in (("threshold", probs >= 0.4), ("tuned", probs >= torch.tensor([0.95, 0.4, 0.2, 0.01])),
                           ("expected_f2", expected_f2_decision(probs[None], 2.0)[0])):
        meta = {"task": "multilabel", "classes": list("abcd"), "threshold": 0.4, "thresholds": [0.95, 0.4, 0.2, 0.01], "decision": decision, "input": {"size": [8, 8]}}
        got = Predictor(SimpleNamespace(meta=meta, net=net, palette=None))._tags(probs)
        assert sorted(got["predicted"]) == [c for c, k in zip("abcd", want.tolist()) if k], decision
    assert not torch.equal(probs >= 0.4, expected_f2_decision(probs[None], 2.0)[0])  # the decisions differ here


def test_a_large_jpeg_decodes_drafted_as_training_reads_it(tmp_path):
    """The served model input is the datamodules' (``read_rgb`` with the draft, area resize);
    an EXIF-turned JPEG is stored as a PNG and read in full, as training would read that PNG."""
    import cv2

    from datamodules.decode import read_rgb
    from serving.predict import Predictor

    from types import SimpleNamespace

    data = noise_jpeg(tmp_path / "big.jpg", 480, 640, 5)
    meta = {"task": "points", "classes": [], "input": {"size": [32, 48], "resize": "area", "draft": True}}
    pred = Predictor(SimpleNamespace(meta=meta, net=torch.nn.Linear(1, 1), palette=None))
    got = pred.decode(data)
    want = cv2.resize(read_rgb(tmp_path / "big.jpg", draft=(48, 32)), (48, 32), interpolation=cv2.INTER_AREA)
    assert got.size == (480, 640) and got.ext == ".jpg" and got.data == data and np.array_equal(got.small, want)
    full = cv2.resize(read_rgb(tmp_path / "big.jpg"), (48, 32), interpolation=cv2.INTER_AREA)
    assert not np.array_equal(full, want)  # the draft changes what the model sees: worth matching
    im = Image.open(io.BytesIO(data))
    exif = im.getexif()
    exif[0x0112] = 6  # turned 90 degrees
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=90)
    turned = pred.decode(buf.getvalue())
    assert turned.size == (640, 480) and turned.ext == ".png"
    stored = np.asarray(Image.open(io.BytesIO(turned.data)))
    assert stored.shape == (640, 480, 3) and np.array_equal(turned.small, cv2.resize(stored, (48, 32), interpolation=cv2.INTER_AREA))
