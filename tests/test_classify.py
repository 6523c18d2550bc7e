"""Single-label classification: class folders (train/valid, <class>/*) and CSV layouts, the splitters,
bad input in one line, training end to end through the CLI, predictions, the built-in sample."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import DataError
from datamodules.classify import ClassifyDataModule
from datamodules.classify_sample import CLASSES, draw_shape, write_classify_sample
from recheck import assert_metrics_recomputed
from tasks.classify import ClassificationTask, majority_baseline

SHAPES = dict(zip(("bear", "guitar", "mushroom"), CLASSES))
TINY = ["--data.init_args.num_workers", "0", "--data.init_args.size", "32", "--data.init_args.batch_size", "4"]
QUIET = ["--trainer.max_epochs", "1", "--model.init_args.net.init_args.weights", "null"]


def write_folders(root: Path, n_train: int = 6, n_valid: int = 3, valid: bool = True, size: int = 40, seed: int = 0) -> Path:
    """``train/<class>/*.jpg`` (+ ``valid/<class>/*.png``), a drawn shape per class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid if valid else 0)):
        for label, shape in SHAPES.items():
            for i in range(n):
                (root / split / label).mkdir(parents=True, exist_ok=True)
                draw_shape(rng, shape, size).save(root / split / label / f"{label}{i}.{'jpg' if split == 'train' else 'png'}")
    return root


def write_csv(root: Path, n: int = 9, size: int = 40, header=("fname", "kind", "is_valid")) -> Path:
    """``photos/<name>.jpg`` and ``labels.csv`` rows ``name (no extension), class, is_valid``."""
    rng = np.random.default_rng(1)
    (root / "photos").mkdir(parents=True)
    rows = [header]
    for i in range(n):
        label = list(SHAPES)[i % 3]
        draw_shape(rng, SHAPES[label], size).save(root / "photos" / f"img{i}.jpg")
        rows.append((f"img{i}", label, "1" if i >= n - 3 else "0"))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def csv_module(root: Path, **kw) -> ClassifyDataModule:
    opts = dict(csv="labels.csv", file_column="fname", label_column="kind", folder="photos", suffix=".jpg", split="column:is_valid")
    return ClassifyDataModule(str(root), size=32, num_workers=0, **{**opts, **kw})


def edit_csv(path: Path, edit) -> None:
    rows = list(csv.reader(open(path)))
    edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


# -- layouts ---------------------------------------------------------------------------------
def test_train_valid_folders(tmp_path):
    root = write_folders(tmp_path / "d")
    Image.open(root / "train" / "bear" / "bear0.jpg").convert("L").save(root / "train" / "bear" / "grey.png")
    Image.open(root / "train" / "guitar" / "guitar0.jpg").convert("RGBA").save(root / "train" / "guitar" / "alpha.png")
    dm = ClassifyDataModule(str(root), size=32, num_workers=0)
    assert dm.layout() == "train_valid" and dm.classes == ["bear", "guitar", "mushroom"] and dm.num_classes == 3
    dm.setup("fit")
    train, valid = dm.datasets["train"], dm.datasets["valid"]
    assert len(train) == 20 and len(valid) == 9 and all(n.startswith("valid/") for n in valid.names)
    assert sorted(dm.targets("valid").tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i in range(len(train)):
        item = train[i]
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
        assert dm.classes[int(item["target"])] == Path(item["name"]).parent.name
    dm.set_size(48)
    assert dm.datasets["valid"][0]["image"].shape == (3, 48, 48)


def test_class_folders_at_the_root_split_randomly(tmp_path):
    root = write_folders(tmp_path / "d", n_train=8, valid=False) / "train"
    (root / "bear" / "more").mkdir()
    (root / "bear" / "bear0.jpg").rename(root / "bear" / "more" / "deep.jpg")  # sub-folders of a class count
    dm = ClassifyDataModule(str(root), size=32, num_workers=0, valid_pct=0.25, seed=3)
    assert dm.layout() == "class_folders" and dm.split_spec() == {"by": "random"}
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 18 and len(dm.datasets["valid"]) == 6
    assert "bear/more/deep.jpg" in dm.datasets["train"].names + dm.datasets["valid"].names
    again = ClassifyDataModule(str(root), size=32, num_workers=0, valid_pct=0.25, seed=3)
    again.setup("fit")
    other = ClassifyDataModule(str(root), size=32, num_workers=0, valid_pct=0.25, seed=4)
    other.setup("fit")
    assert again.datasets["valid"].names == dm.datasets["valid"].names != other.datasets["valid"].names


def test_train_without_valid_is_split_randomly(tmp_path):
    dm = ClassifyDataModule(str(write_folders(tmp_path / "d", valid=False)), size=32, num_workers=0, valid_pct=0.5)
    dm.setup("fit")
    assert dm.split_spec() == {"by": "random"} and len(dm.datasets["train"]) == len(dm.datasets["valid"]) == 9


def test_csv_columns_folder_suffix_and_split_column(tmp_path):
    root = write_csv(tmp_path / "d")
    dm = csv_module(root)
    assert dm.layout() == "csv" and dm.classes == ["bear", "guitar", "mushroom"]
    dm.setup("fit")
    assert dm.datasets["valid"].names == ["img6", "img7", "img8"] and len(dm.datasets["train"]) == 6
    assert dm.datasets["valid"].paths[0] == root / "photos" / "img6.jpg"
    assert dm.targets("valid").tolist() == [0, 1, 2]


def test_labels_csv_at_the_root_needs_no_option(tmp_path):
    root = write_csv(tmp_path / "d", header=("file", "label", "is_valid"))
    edit_csv(root / "labels.csv", lambda rows: [r.__setitem__(0, f"photos/{r[0]}.jpg") for r in rows[1:]])
    dm = ClassifyDataModule(str(root), size=32, num_workers=0, valid_pct=1 / 3)
    assert dm.layout() == "csv"
    dm.setup("fit")
    assert len(dm.datasets["valid"]) == 3 and dm.datasets["train"].names[0].startswith("photos/")


def test_given_classes_keep_their_order(tmp_path):
    root = write_folders(tmp_path / "d")
    dm = ClassifyDataModule(str(root), size=32, num_workers=0, classes=["mushroom", "guitar", "bear", "piano"])
    dm.setup("fit")
    assert dm.num_classes == 4 and dm.classes[int(dm.datasets["valid"][0]["target"])] == "bear"
    assert set(dm.targets("train").tolist()) == {0, 1, 2}  # piano has no images: allowed


def test_names_file_and_function_splitters(tmp_path, monkeypatch):
    root = write_folders(tmp_path / "d", valid=False)
    (root / "valid.txt").write_text("train/bear/bear1.jpg\nguitar2\n")  # a path or a stem
    dm = ClassifyDataModule(str(root), size=32, num_workers=0, split="names:valid.txt")
    dm.setup("fit")
    assert dm.datasets["valid"].names == ["train/bear/bear1.jpg", "train/guitar/guitar2.jpg"]
    (tmp_path / "mysplit.py").write_text("def is_valid(name):\n    return name.endswith('5.jpg')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    dm = ClassifyDataModule(str(root), size=32, num_workers=0, split="function:mysplit.is_valid")
    dm.setup("fit")
    assert [Path(n).name for n in dm.datasets["valid"].names] == ["bear5.jpg", "guitar5.jpg", "mushroom5.jpg"]
    sys.modules.pop("mysplit", None)


def test_renamed_train_and_valid_folders(tmp_path):
    root = write_folders(tmp_path / "d")
    (root / "train").rename(root / "training")
    (root / "valid").rename(root / "holdout")
    dm = ClassifyDataModule(str(root), size=32, num_workers=0, split={"by": "folder", "train": "training", "valid": "holdout"})
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 18 and len(dm.datasets["valid"]) == 9


def test_augmentation_on_either_path_and_only_for_training(tmp_path):
    root = write_folders(tmp_path / "d")
    cpu = ClassifyDataModule(str(root), size=32, num_workers=0, augment_on="cpu")
    cpu.setup("fit")
    assert cpu.batch_augment is None and cpu.datasets["train"].transform.transforms and not cpu.datasets["valid"].transform.transforms
    dev = ClassifyDataModule(str(root), size=32, num_workers=0, augment_on="gpu", augment="flip")
    dev.setup("fit")
    assert not dev.datasets["train"].transform.transforms and dev.batch_augment.max_rotate == 0 and dev.batch_augment.flip_h
    batch = next(iter(dev.train_dataloader()))
    out = dev.batch_augment(batch, torch.Generator().manual_seed(0))
    assert out["image"].shape == batch["image"].shape and torch.equal(out["target"], batch["target"])
    off = ClassifyDataModule(str(root), size=32, num_workers=0, augment=False, augment_on="gpu")
    off.setup("fit")
    assert off.batch_augment is None and not off.datasets["train"].transform.transforms


def test_predict_dir_and_default_predict_set(tmp_path):
    root = write_folders(tmp_path / "d")
    photos = tmp_path / "photos"
    photos.mkdir()
    draw_shape(np.random.default_rng(5), "circle").save(photos / "new.webp")
    dm = ClassifyDataModule(str(root), size=32, num_workers=0, predict_dir=str(photos))
    dm.setup("predict")
    assert dm.datasets["predict"].names == ["new.webp"] and dm.datasets["predict"].targets is None
    dm = ClassifyDataModule(str(root), size=32, num_workers=0)
    dm.setup("predict")
    assert len(dm.datasets["predict"]) == 9 and "target" not in dm.datasets["predict"][0]


# -- bad input: one line naming the file and the fix ----------------------------------------------------
def _empty_class(root):
    (root / "train" / "piano").mkdir()
    return root / "train" / "piano", "holds no images"


def _text_as_image(root):
    bad = root / "train" / "guitar" / "guitar3.jpg"
    bad.write_text("not a picture")
    return bad, "unreadable image"


def _truncated(root):
    bad = root / "valid" / "bear" / "bear1.png"
    bad.write_bytes(bad.read_bytes()[:200])
    return bad, "unreadable image"


def _one_class(root):
    for label in ("guitar", "mushroom"):
        for split in ("train", "valid"):
            for p in (root / split / label).iterdir():
                p.unlink()
            (root / split / label).rmdir()
    return root, "only one class"


@pytest.mark.parametrize("breaker", [_empty_class, _text_as_image, _truncated, _one_class])
def test_bad_class_folders(tmp_path, breaker):
    root = write_folders(tmp_path / "d")
    culprit, what = breaker(root)
    with pytest.raises(DataError) as e:
        ClassifyDataModule(str(root), size=32, num_workers=0).setup("fit")
    msg = str(e.value)
    assert "\n" not in msg and str(culprit) in msg and what in msg, msg


def test_unknown_label_when_classes_are_given(tmp_path):
    root = write_folders(tmp_path / "d")
    with pytest.raises(DataError, match=r"label 'mushroom' .* not one of the classes given \(bear, guitar\); add it to --data.init_args.classes"):
        ClassifyDataModule(str(root), size=32, num_workers=0, classes=["bear", "guitar"]).setup("fit")
    with pytest.raises(DataError, match=r"labels.csv, row 4: label 'mushroom'"):
        csv_module(write_csv(tmp_path / "c"), classes=["bear", "guitar"]).setup("fit")


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[3].__setitem__(0, "gone"), r"photos/gone.jpg: image missing \(named in .*labels.csv, row 4\); fix the name"),
    (lambda rows: rows[2].__setitem__(1, " "), r"labels.csv, row 3 \(img1\): empty 'kind' cell"),
    (lambda rows: rows[5].__setitem__(0, ""), r"labels.csv, row 6: empty 'fname' cell"),
    (lambda rows: rows[5].__setitem__(0, "img1"), r"labels.csv, row 6: 'img1' again \(first on row 3\)"),
    (lambda rows: rows[0].__setitem__(1, "breed"), r"labels.csv: no column\(s\) \['kind'\]; found \['fname', 'breed', 'is_valid'\]"),
    (lambda rows: rows[7].__setitem__(2, "maybe"), r"labels.csv row 8 column is_valid: 'maybe' is not true/false"),
])
def test_bad_csv_rows(tmp_path, edit, message):
    root = write_csv(tmp_path / "d")
    edit_csv(root / "labels.csv", edit)
    with pytest.raises(DataError, match=message):
        csv_module(root).setup("fit")


def test_neither_layout_and_bad_options(tmp_path):
    root = tmp_path / "loose"
    root.mkdir()
    draw_shape(np.random.default_rng(0), "circle").save(root / "a.jpg")
    with pytest.raises(DataError, match=r"loose: neither class folders \(train/<class>/\* .*nor a CSV"):
        ClassifyDataModule(str(root)).setup("fit")
    with pytest.raises(DataError, match="no such CSV"):
        ClassifyDataModule(str(root), csv="tags.csv").setup("fit")
    with pytest.raises(DataError, match="--data.split 'halves'"):
        ClassifyDataModule(str(root), split="halves")
    with pytest.raises(DataError, match=r"duplicate classes \['a'\]"):
        ClassifyDataModule(str(root), classes=["a", "b", "a"])
    (root / "train").mkdir()
    with pytest.raises(DataError, match=r"train: no class folders in it; put each class's images in .*train/<class>/"):
        ClassifyDataModule(str(root)).setup("fit")


def test_bad_data_through_the_cli_is_one_error_line(tmp_path, monkeypatch, capsys):
    import train

    root = write_folders(tmp_path / "d")
    (root / "valid" / "piano").mkdir()
    monkeypatch.delenv("LESSON3_RUN_DIR", raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py", "--task", "classify", "--data.init_args.root", str(root), *TINY, "--runs_dir", str(tmp_path / "runs"), "--trainer.logger", "false"])
    with pytest.raises(SystemExit) as e:
        train.main()
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" not in err
    assert f"error: {root / 'valid' / 'piano'}: class folder 'piano' holds no images" in err


# -- the task ---------------------------------------------------------------------------------
def test_majority_baseline_and_most_confused():
    assert majority_baseline(torch.tensor([0, 1, 1, 2]), torch.tensor([1, 0, 1, 1]), 3) == (1, 0.75)
    task = ClassificationTask(torch.nn.Linear(2, 3), num_classes=3, class_names=["a", "b", "c"])
    task.confusion = torch.tensor([[5, 2, 0], [0, 4, 3], [1, 0, 6]])
    assert task.most_confused() == [("b", "c", 3), ("a", "b", 2), ("c", "a", 1)] and task.most_confused(2) == [("b", "c", 3), ("a", "b", 2)]
    with pytest.raises(ValueError, match="2 class_names for num_classes=3"):
        ClassificationTask(torch.nn.Linear(2, 3), num_classes=3, class_names=["a", "b"])


def read_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(open(path)))


def test_fit_pictures_confusion_and_predict(run_cli, tmp_path):
    root = write_folders(tmp_path / "d")
    cli, run_dir = run_cli(["--task", "classify", "--data.init_args.root", str(root), *TINY, *QUIET])
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert metrics["val/acc_majority"] == pytest.approx(1 / 3)
    assert_metrics_recomputed(cli, metrics, ("val/acc", "val/loss"))  # the final weights on the 9 validation images
    pictures = run_dir / "pictures"
    for name in ("show_batch", "show_results", "confusion_matrix", "top_losses"):
        assert (pictures / f"{name}.png").is_file(), name
    rows = read_rows(pictures / "confusion_matrix.csv")
    assert rows[0][1:] == ["bear", "guitar", "mushroom"] and [r[0] for r in rows[1:]] == ["bear", "guitar", "mushroom"]
    counts = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert counts.sum() == 9 and (counts.sum(1) == 3).all()  # every validation image, by its true class
    assert np.trace(counts) / 9 == pytest.approx(metrics["val/acc"], abs=1e-6)
    assert torch.equal(cli.model.confusion, torch.as_tensor(counts))

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(7)
    for i in range(6):  # more than one batch of 4: the CSV is appended to
        draw_shape(rng, CLASSES[i % 3], 50).save(photos / f"p{i}.jpg")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cli, pred_run = run_cli(["predict", "--task", "classify", "--data.init_args.root", str(root), *TINY, *QUIET,
                             "--ckpt_path", str(ckpt), "--data.init_args.predict_dir", str(photos)])
    rows = read_rows(pred_run / "predictions" / "predictions.csv")
    assert rows[0] == ["name", "label", "probability", "bear", "guitar", "mushroom"] and sorted(r[0] for r in rows[1:]) == [f"p{i}.jpg" for i in range(6)]
    for name, label, p, *probs in rows[1:]:
        probs = [float(v) for v in probs]
        assert sum(probs) == pytest.approx(1, abs=2e-4) and float(p) == max(probs) and label == ["bear", "guitar", "mushroom"][int(np.argmax(probs))]


def test_csv_layout_trains_with_label_smoothing(run_cli, tmp_path):
    root = write_csv(tmp_path / "d", n=12)
    csv_opts = ["--data.init_args.csv", "labels.csv", "--data.init_args.file_column", "fname", "--data.init_args.label_column", "kind",
                "--data.init_args.folder", "photos", "--data.init_args.suffix", ".jpg", "--data.init_args.split", "column:is_valid"]
    cli, run_dir = run_cli(["--task", "classify", "--data.init_args.root", str(root), *csv_opts, *TINY, *QUIET,
                            "--model.init_args.label_smoothing", "0.1", "--pictures.show_batch", "false"])
    assert cli.model.label_smoothing == 0.1 and cli.model.class_names == ["bear", "guitar", "mushroom"]
    assert cli.model.net.model.get_classifier().out_features == 3
    assert len(cli.datamodule.datasets["valid"]) == 3 and json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


def test_label_smoothing_is_in_the_loss():
    F = torch.nn.functional
    logits, target = torch.tensor([[4.0, 0.0, 0.0], [0.0, 3.0, 0.0]]), torch.tensor([0, 2])
    batch = {"image": logits, "target": target}  # an identity "network": the images are the logits
    plain = ClassificationTask(torch.nn.Identity(), num_classes=3).model_step(batch)[0]
    smooth = ClassificationTask(torch.nn.Identity(), num_classes=3, label_smoothing=0.1).model_step(batch)[0]
    assert plain.item() == pytest.approx(F.cross_entropy(logits, target).item())
    assert smooth.item() == pytest.approx(F.cross_entropy(logits, target, label_smoothing=0.1).item()) and abs(smooth - plain) > 0.05
    with pytest.raises(ValueError, match="label_smoothing 1"):
        ClassificationTask(torch.nn.Identity(), num_classes=3, label_smoothing=1)


# -- the built-in sample and its overlay -----------------------------------------------------
def test_sample_is_deterministic_and_in_the_folder_layout(tmp_path):
    write_classify_sample(tmp_path / "a", n_train=2, n_valid=1)
    write_classify_sample(tmp_path / "b", n_train=2, n_valid=1)
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files) == 9 and files[0] == "train/circle/circle_000.jpg" and "valid/triangle/triangle_000.jpg" in files
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    dm = ClassifyDataModule(str(tmp_path / "a"), size=32, num_workers=0)
    assert dm.classes == list(CLASSES) and dm.split_spec() == {"by": "folder"}


def test_task_resolves_to_the_sample_overlay_without_root(printed_config, tmp_path):
    import yaml

    from train import SAMPLE_DIR

    printed = printed_config
    cfg, note = printed(["--task", "classify"])
    sample = yaml.safe_load((SAMPLE_DIR / "classify.yaml").read_text())
    assert "configs/sample/classify.yaml" in note and cfg["data"]["init_args"]["root"] is None
    assert cfg["data"]["init_args"]["size"] == sample["data"]["init_args"]["size"] == 64 and cfg["trainer"]["max_epochs"] == 5
    assert cfg["data"]["class_path"] == "datamodules.classify.ClassifyDataModule" and cfg["model"]["class_path"] == "tasks.classify.ClassificationTask"
    real, note = printed(["--task", "classify", "--data.init_args.root", str(tmp_path)])
    stages = real["trainer"]["callbacks"][0]["init_args"]["stages"]
    assert "configs/sample" not in note and real["data"]["init_args"]["size"] == 224 and [s["size"] for s in stages] == [0.5, 1.0]


@pytest.mark.slow
def test_builtin_sample_learns_the_shapes(run_cli):
    """``--task classify`` alone (the sample and its overlay) beats the majority class by far."""
    _, run_dir = run_cli(["--task", "classify", "--data.init_args.num_workers", "0"])
    m = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert m["val/acc"] > m["val/acc_majority"] + 0.3, m


# -- serving: export, /predict, /feedback, fine-tuning on the corrections ---------------------------
def test_export_serve_feedback_and_fine_tune(run_cli, tmp_path):
    import io

    import cv2
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.bundle import load_bundle

    root = write_folders(tmp_path / "d")
    args = ["--task", "classify", "--data.init_args.root", str(root), *TINY, "--model.init_args.net.init_args.weights", "null"]
    fit, _ = run_cli([*args, "--trainer.fast_dev_run", "true"])
    ckpt = tmp_path / "c.ckpt"
    fit.trainer.save_checkpoint(str(ckpt))
    run_cli(["export", *args, "--ckpt_path", str(ckpt), "--out", str(tmp_path / "bundle")])
    meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert meta["task"] == "classify" and meta["classes"] == ["bear", "guitar", "mushroom"] and meta["input"]["size"] == [32, 32]
    assert meta["net"]["name"] == "TimmClassifier" and load_bundle(tmp_path / "bundle").task == "classify"

    client = TestClient(create_app(tmp_path / "bundle", feedback_db=tmp_path / "fb"))
    rgb = np.asarray(draw_shape(np.random.default_rng(3), "square", 50))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    r = client.post("/predict", files={"file": ("x.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    ans = r.json()
    small = torch.from_numpy(cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        probs = fit.model.eval().net(small).softmax(-1)[0]
    assert list(ans["probabilities"]) == meta["classes"] and ans["label"] == meta["classes"][int(probs.argmax())]
    assert [ans["probabilities"][c] for c in meta["classes"]] == pytest.approx(probs.tolist(), abs=2e-4)
    assert ans["probability"] == max(ans["probabilities"].values()) and client.get("/info").json()["task"] == "classify"

    files = {"file": ("x.png", buf.getvalue(), "image/png")}
    bad = client.post("/feedback", files=files, data={"correction": json.dumps({"label": "piano"})})
    assert bad.status_code == 422 and "piano" in bad.json()["error"]
    ok = client.post("/feedback", files=files, data={"correction": json.dumps({"label": "guitar"})})
    assert ok.status_code == 201, ok.text

    tune, _ = run_cli([*args, "--data.feedback", str(tmp_path / "fb"), "--ckpt_path", str(tmp_path / "bundle"), "--trainer.fast_dev_run", "true"])
    train = tune.datamodule.datasets["train"]
    assert len(train) == 19 and int(train.targets[-1]) == 1 and train.sources[-1].startswith("feedback row")
    assert train[len(train) - 1]["image"].shape == (3, 32, 32)


def test_exported_size_resolves_fractional_stage_sizes(tmp_path):
    """A recipe's last stage ``size: 1.0`` is the data's size, in the run's config as in the export command."""
    import yaml

    from serving.bundle import trained_input_size

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    stages = [{"epochs": 1, "size": 0.5}, {"epochs": 1, "size": 1.0}]
    for data_size, expect in ((224, (224, 224)), ([64, 96], (64, 96))):
        cfg = {"trainer": {"callbacks": [{"class_path": "callbacks.Stages", "init_args": {"stages": stages}}]}, "data": {"init_args": {"size": data_size}}}
        (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))
        assert trained_input_size(ckpt) == expect


# -- unreadable images and the default split: the options every image kind shares ------------------
def test_skip_unreadable_leaves_bad_images_out(tmp_path):
    root = write_folders(tmp_path / "d")
    text, _ = _text_as_image(root)
    truncated, _ = _truncated(root)
    with pytest.raises(DataError) as e:
        ClassifyDataModule(str(root), size=32, num_workers=0).setup("fit")
    msg = str(e.value)
    assert msg.startswith(f"{text}: unreadable image") and f"Listed in class folder {root / 'train' / 'guitar'}" in msg
    assert msg.endswith("--data.init_args.skip_unreadable true leaves such images out.") and "\n" not in msg
    dm = ClassifyDataModule(str(root), size=32, num_workers=0, skip_unreadable=True)
    with pytest.warns(UserWarning, match=r"left out 2 unreadable image\(s\)"):
        dm.setup("fit")
    assert sorted(dm.skipped) == sorted([str(text), str(truncated)])
    train, valid = dm.datasets["train"], dm.datasets["valid"]
    assert len(train) == 17 and len(valid) == 8 and text not in train.paths and truncated not in valid.paths
    assert all(train[i]["image"].shape == (3, 32, 32) for i in range(len(train)))


def test_csv_splits_by_its_is_valid_column_by_default(tmp_path):
    root = write_csv(tmp_path / "d", n=12)
    dm = csv_module(root, split=None)
    dm.setup("fit")
    assert dm.split_spec() == {"by": "column", "column": "is_valid"}
    assert dm.datasets["valid"].names == ["img9", "img10", "img11"] and len(dm.datasets["train"]) == 9
    edit_csv(root / "labels.csv", lambda rows: [r.pop() for r in rows])  # no is_valid column: a seeded random 20%
    dm = csv_module(root, split=None)
    dm.setup("fit")
    assert dm.split_spec() == {"by": "random"} and len(dm.datasets["valid"]) == 2 and len(dm.datasets["train"]) == 10
