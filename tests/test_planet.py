"""Planet: Kaggle's samples-averaged F2, threshold tuning, both real layouts, bad input, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import fbeta_score

from conftest import shared
from datamodules import DataError
from datamodules.planet import PLANET_TAGS, PlanetDataModule, read_labels
from datamodules.planet_sample import draw_tags, make_tile, write_planet_sample
from recheck import assert_metrics_recomputed
from tasks.fbeta import SamplesFBeta, TunedFBeta, frequent_tags_baseline, samples_fbeta, tune_thresholds

WEATHER = {"clear", "cloudy", "haze", "partly_cloudy"}


def write_planet(root: Path, layout: str = "fastai", n: int = 12, size: int = 48, seed: int = 0, test: int = 0) -> Path:
    """A tiny Planet folder in a real layout, CMYK JPEGs like the real files.

    fastai: ``labels.csv`` + ``train/``; kaggle: ``train_v2.csv`` + ``train-jpg/`` (+ ``test-jpg/``
    and ``test-jpg-additional/`` with ``test`` images each).
    """
    csv_name, folder = ("labels.csv", "train") if layout == "fastai" else ("train_v2.csv", "train-jpg")
    (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        tags = draw_tags(rng)
        Image.fromarray(make_tile(rng, tags, size)).convert("CMYK").save(root / folder / f"train_{i}.jpg")
        rows.append((f"train_{i}", " ".join(tags)))
    with open(root / csv_name, "w", newline="") as f:
        csv.writer(f).writerows([("image_name", "tags"), *rows])
    for d, prefix in (("test-jpg", "test"), ("test-jpg-additional", "file")):
        if test:
            (root / d).mkdir()
            for i in range(test):
                Image.fromarray(make_tile(rng, draw_tags(rng), size)).convert("CMYK").save(root / d / f"{prefix}_{i}.jpg")
    return root


def rewrite_csv(path: Path, edit) -> None:
    rows = list(csv.reader(open(path)))
    edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


# -- the metric -------------------------------------------------------------------


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_samples_f2_matches_sklearn(zero_division):
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(300, 17, generator=g) < 0.15).int()
    probs = torch.rand(300, 17, generator=g)
    target[:10] = 0  # no true tags ...
    probs[:5] = 0.0  # ... and none predicted (zero division), or some predicted (5..9)
    probs[10:15] = 0.0  # true tags, none predicted
    preds = probs >= 0.2
    assert (~preds[:5]).all() and (target[:5] == 0).all() and preds[5:10].any()
    expected = fbeta_score(target.numpy(), preds.int().numpy(), beta=2, average="samples", zero_division=zero_division)
    metric = SamplesFBeta(beta=2, threshold=0.2, zero_division=zero_division)
    for chunk in range(0, 300, 64):  # accumulated over batches
        metric.update(probs[chunk : chunk + 64], target[chunk : chunk + 64])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    assert samples_fbeta(preds, target, zero_division=zero_division).mean().item() == pytest.approx(expected, abs=1e-9)


def test_per_tag_thresholds_and_hand_values():
    target = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]])
    probs = torch.tensor([[0.9, 0.3, 0.8], [0.1, 0.1, 0.1], [0.1, 0.5, 0.1]])
    # thresholds (0.5, 0.2, 0.9): row 0 predicts {0, 1}: F2 = 1; row 1 predicts nothing: 1 (zero_division);
    # row 2 predicts {1} against {0}: 0
    m = SamplesFBeta(threshold=[0.5, 0.2, 0.9])
    m.update(probs, target)
    assert m.compute().item() == pytest.approx(2 / 3)
    # tp=1, fn=1, fp=0: F2 = 5 / (5 + 4) for one image
    assert samples_fbeta(torch.tensor([[True, False]]), torch.tensor([[1, 1]])).item() == pytest.approx(5 / 9)


def test_accuracy_thresh_is_share_of_correct_tag_decisions():
    from torchmetrics.classification import MultilabelAccuracy

    g = torch.Generator().manual_seed(1)
    target, probs = (torch.rand(40, 17, generator=g) < 0.3).int(), torch.rand(40, 17, generator=g)
    acc = MultilabelAccuracy(num_labels=17, threshold=0.2, average="micro")(probs, target)
    assert acc.item() == pytest.approx(((probs >= 0.2).int() == target).float().mean().item(), abs=1e-6)


def test_tuned_thresholds_find_the_gap_and_keep_absent_tags():
    g = torch.Generator().manual_seed(2)
    n = 200
    target = torch.zeros(n, 3, dtype=torch.int)
    target[:, 0] = 1  # always present, scored 0.05..0.1: only a low threshold finds it
    target[: n // 2, 1] = 1  # tag 1: positives at 0.7, negatives at 0.6
    probs = torch.stack([0.05 + 0.05 * torch.rand(n, generator=g), torch.where(target[:, 1] == 1, 0.7, 0.6), torch.full((n,), 0.01)], 1)
    thr = tune_thresholds(probs, target)
    assert thr[0] <= 0.05 and 0.6 < thr[1] <= 0.7 and thr[2] == pytest.approx(0.2)  # tag 2 never occurs
    tuned = samples_fbeta(probs, target, threshold=thr).mean()
    assert tuned.item() == pytest.approx(1.0) and tuned > samples_fbeta(probs, target, threshold=0.2).mean()
    metric = TunedFBeta(start=0.2)
    metric.update(probs[:120], target[:120])
    metric.update(probs[120:], target[120:])
    assert metric.compute().item() == pytest.approx(1.0)
    assert torch.allclose(metric.thresholds, thr) and 0.9 < metric.cv_score.item() <= 1.0


def test_frequent_tags_baseline():
    train = torch.tensor([[1, 1, 0, 0]] * 6 + [[1, 0, 1, 0]] * 4)
    valid = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1]])
    tags, score = frequent_tags_baseline(train, valid)
    assert tags == [0, 1, 2] or tags == [0, 1]
    pred = torch.zeros_like(valid, dtype=torch.bool)
    pred[:, tags] = True
    assert score == pytest.approx(fbeta_score(valid.numpy(), pred.int().numpy(), beta=2, average="samples", zero_division=1.0))


def test_tuned_thresholds_are_used_where_they_generalise():
    from torch import nn

    from tasks.planet import PlanetTask

    n = 200
    g = torch.Generator().manual_seed(3)
    target = torch.zeros(n, 3, dtype=torch.int)
    target[:, 0] = 1
    target[: n // 2, 1] = 1
    signal = torch.stack([0.05 + 0.05 * torch.rand(n, generator=g), torch.where(target[:, 1] == 1, 0.7, 0.6), torch.full((n,), 0.01)], 1)
    noise = torch.rand(n, 3, generator=g)
    for use, probs, expect in [("auto", signal, True), ("never", signal, False), ("always", noise, True), ("auto", noise, None)]:
        task = PlanetTask(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), num_classes=3, class_names=["a", "b", "c"], use_tuned=use)
        m = TunedFBeta(start=0.2)
        m.update(probs, target)
        m.compute()
        used = task.pick_thresholds(m)
        assert used == (expect if expect is not None else bool(m.cv_score > m.fixed_score))
        assert torch.equal(task.thresholds, m.thresholds if used else torch.full((3,), 0.2))
    task.thresholds.copy_(torch.tensor([0.5, 0.05, 0.3]))
    assert task.decode(torch.tensor([0.9, 0.1, 0.3])) == ["a", "b", "c"]  # at or above its own threshold
    assert task.decode(torch.tensor([0.4, 0.01, 0.29])) == []


# -- data -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["fastai", "kaggle"])
def test_real_layouts_read_cmyk_as_rgb(tmp_path, layout):
    root = write_planet(tmp_path / "planet", layout, n=10)
    dm = PlanetDataModule(root=str(root), size=32, batch_size=4, num_workers=0)
    assert dm.classes == PLANET_TAGS and dm.num_classes == 17
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 8 and len(dm.datasets["valid"]) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["target"].shape == (4, 17) and set(batch["target"].unique().tolist()) <= {0.0, 1.0}
    rows = {r[0]: r[1].split() for r in list(csv.reader(open(next(root.glob("*.csv")))))[1:]}
    ds = dm.datasets["valid"]
    for i in range(len(ds)):
        item = ds[i]
        assert [PLANET_TAGS[j] for j in item["target"].nonzero().flatten().tolist()] == sorted(rows[item["name"]])
    # CMYK decoded to the RGB it was written from (a naive reader would show green as magenta)
    folder = root / ("train" if layout == "fastai" else "train-jpg")
    Image.new("RGB", (48, 48), (30, 120, 40)).convert("CMYK").save(folder / f"{ds.paths[0].stem}.jpg", quality=95)
    ds.transform = dm.transform(False)
    assert ds[0]["image"].float().mean((1, 2)).tolist() == pytest.approx([30, 120, 40], abs=3)


def test_split_is_seeded_and_size_changes(tmp_path):
    root = str(write_planet(tmp_path / "p", n=20))
    names = []
    for seed in (42, 42, 7):
        dm = PlanetDataModule(root=root, size=32, num_workers=0, seed=seed)
        dm.setup("fit")
        names.append(sorted(p.stem for p in dm.datasets["valid"].paths))
    assert len(names[0]) == 4 and names[0] == names[1] and names[0] != names[2]
    dm.set_size([48, 64])
    assert dm.size == (48, 64)
    assert dm.datasets["valid"][0]["image"].shape == (3, 48, 64)
    assert next(iter(dm.train_dataloader()))["image"].shape[-2:] == (48, 64)


def test_augmentation_only_on_train(tmp_path):
    dm = PlanetDataModule(root=str(write_planet(tmp_path / "p", n=10)), size=32, num_workers=0)
    dm.setup("fit")
    v = [dm.datasets["valid"][0]["image"] for _ in range(3)]
    assert all(torch.equal(v[0], x) for x in v)
    torch.manual_seed(0)
    np.random.seed(0)
    t = [dm.datasets["train"][0]["image"] for _ in range(6)]
    assert any(not torch.equal(t[0], x) for x in t[1:])


def test_kaggle_test_folders_are_the_default_predict_set(tmp_path):
    root = write_planet(tmp_path / "k", "kaggle", n=6, test=3)
    dm = PlanetDataModule(root=str(root), size=32, num_workers=0)
    dm.setup("predict")
    names = sorted(p.stem for p in dm.datasets["predict"].paths)
    assert names == ["file_0", "file_1", "file_2", "test_0", "test_1", "test_2"]
    assert "target" not in dm.datasets["predict"][0]
    fastai = PlanetDataModule(root=str(write_planet(tmp_path / "f", n=10)), size=32, num_workers=0)
    fastai.setup("predict")  # no test folder: the validation images
    assert fastai.datasets["predict"].paths == fastai.datasets["valid"].paths


def test_custom_class_list(tmp_path):
    root = write_planet(tmp_path / "p", n=10)
    rewrite_csv(root / "labels.csv", lambda rows: rows.__setitem__(slice(1, None), [[r[0], "clear"] for r in rows[1:]]))
    dm = PlanetDataModule(root=str(root), classes=["clear", "cloudy"], size=32, num_workers=0)
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.datasets["train"].targets[:, 0].eq(1).all()


def test_real_planet_sample_200():
    root = shared("planet_sample_200")
    dm = PlanetDataModule(root=str(root), size=64, batch_size=8, num_workers=0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 160 and len(dm.datasets["valid"]) == 40
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (8, 3, 64, 64) and batch["image"].dtype == torch.uint8
    both = torch.cat([dm.targets("train"), dm.targets("valid")])
    weather = [PLANET_TAGS.index(t) for t in sorted(WEATHER)]
    assert both[:, weather].sum(1).eq(1).all()  # one weather tag per image in the real data
    assert both.sum(0).gt(0).sum() == 15  # 15 of the 17 tags occur; the other two keep their outputs


def test_builtin_sample(tmp_path):
    write_planet_sample(tmp_path / "a", n=40)
    write_planet_sample(tmp_path / "b", n=40)
    assert (tmp_path / "a" / "labels.csv").read_text() == (tmp_path / "b" / "labels.csv").read_text()
    assert (tmp_path / "a" / "train" / "train_7.jpg").read_bytes() == (tmp_path / "b" / "train" / "train_7.jpg").read_bytes()
    with Image.open(tmp_path / "a" / "train" / "train_0.jpg") as im:
        assert im.mode == "CMYK" and im.size == (128, 128)
    rows = read_labels(tmp_path / "a" / "labels.csv", PLANET_TAGS)
    assert all(len(set(tags) & WEATHER) == 1 for _, tags, _ in rows)
    assert all(tags == ["cloudy"] for _, tags, _ in rows if "cloudy" in tags)
    rng = np.random.default_rng(0)
    tags = [t for _ in range(600) for t in draw_tags(rng)]
    assert set(tags) == set(PLANET_TAGS)  # every tag occurs in a default-sized sample
    assert max(tags.count(t) for t in PLANET_TAGS) < 600  # and none is on every image


def test_sample_tags_are_visible():
    """Tags change the pixels they should: water is blue, clouds white, haze flattens contrast."""

    def tile(tags, seed=0):
        return make_tile(np.random.default_rng(seed), tags, 64).astype(float)

    forest, water = tile(["clear", "primary"]), tile(["clear", "primary", "water"])
    blue = lambda im: (im[..., 2] - im[..., 1] > 20).mean()  # noqa: E731
    assert blue(water) > 0.02 and blue(forest) == 0
    assert tile(["cloudy"]).mean() > 180 and forest.mean() < 90
    assert tile(["haze", "primary", "agriculture"], 3).std() < tile(["clear", "primary", "agriculture"], 3).std()


# -- bad input ----------------------------------------------------------------------


def test_not_a_planet_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="not a Planet folder"):
        PlanetDataModule(root=str(tmp_path / "x")).setup("fit")
    with pytest.raises(DataError, match="does not exist"):
        PlanetDataModule(root=str(tmp_path / "nope")).setup("fit")


def test_missing_image_folder(tmp_path):
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "train_v2.csv").write_text("image_name,tags\ntrain_0,clear primary\n")
    with pytest.raises(DataError, match=r"train-jpg: missing folder"):
        PlanetDataModule(root=str(tmp_path / "k")).setup("fit")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda rows: rows[3].__setitem__(1, ""), r"labels\.csv, line 4 \(train_2\): empty tags field"),
        (lambda rows: rows[2].__setitem__(1, "clear primary jungle"), r"labels\.csv, line 3 \(train_1\): unknown tag\(s\) \['jungle'\]"),
        (lambda rows: rows[5].__setitem__(0, "train_0"), r"labels\.csv, line 6: duplicate image_name 'train_0' \(first on line 2\)"),
        (lambda rows: rows[4].__setitem__(0, ""), r"labels\.csv, line 5: empty image_name"),
        (lambda rows: rows.__setitem__(0, ["name", "labels"]), r"labels\.csv: expected the columns 'image_name,tags'"),
        (lambda rows: rows.append(["train_99", "clear"]), r"train_99\.jpg: image missing \(named in .*labels\.csv, line 12\)"),
    ],
)
def test_bad_csv_rows(tmp_path, edit, message):
    root = write_planet(tmp_path / "p", n=10)
    rewrite_csv(root / "labels.csv", edit)
    with pytest.raises(DataError, match=message):
        PlanetDataModule(root=str(root), num_workers=0).setup("fit")


def test_unreadable_image_fails_or_is_skipped(tmp_path):
    root = write_planet(tmp_path / "p", n=10)
    (root / "train" / "train_3.jpg").write_bytes(b"\xff\xd8 truncated")
    dm = PlanetDataModule(root=str(root), size=32, num_workers=0, valid_pct=0.0)
    with pytest.raises(DataError, match=r"train_3\.jpg: unreadable image .* Listed in labels\.csv, line 5\. .*skip_unreadable true"):
        dm.setup("fit")  # found at setup, before training
    dm = PlanetDataModule(root=str(root), size=32, num_workers=0, valid_pct=0.0, skip_unreadable=True)
    with pytest.warns(UserWarning, match="left out 1 unreadable image"):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == 9 and dm.skipped == [str(root / "train" / "train_3.jpg")]
    assert "train_3" not in [p.stem for p in dm.datasets["train"].paths]


def test_bad_options(tmp_path):
    with pytest.raises(DataError, match="size .*at least 16"):
        PlanetDataModule(size=8)
    with pytest.raises(DataError, match=r"duplicate tags \['clear'\]"):
        PlanetDataModule(classes=["clear", "clear"])
    (tmp_path / "empty").mkdir()
    root = write_planet(tmp_path / "p", n=6)
    with pytest.raises(DataError, match="no images"):
        PlanetDataModule(root=str(root), predict_dir=str(tmp_path / "empty")).setup("predict")


# -- task and CLI ---------------------------------------------------------------------


def test_fit_checkpoint_thresholds_and_predict(run_cli, tmp_path):
    root = write_planet(tmp_path / "planet", n=40, size=64)
    common = ["--data.init_args.root", str(root), "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "8"]
    cli, run_dir = run_cli(["--task", "planet", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"])
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    # F2 at 0.2, the tag accuracy and the loss are those of the final weights on the 8 validation chips (sklearn's F2)
    assert_metrics_recomputed(cli, metrics, ("val/f2", "val/acc_thresh", "val/loss"))
    dm = cli.datamodule  # the baseline logged is that of this split's tags
    assert metrics["val/f2_frequent"] == pytest.approx(frequent_tags_baseline(dm.targets("train"), dm.targets("valid"))[1])
    assert metrics["val/f2_tuned"] >= metrics["val/f2"] - 1e-6  # tuning starts from 0.2 and only accepts gains
    assert (run_dir / "pictures" / "show_batch.png").is_file() and (run_dir / "pictures" / "show_results.png").is_file()
    task = cli.model
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    saved = state["state_dict"]["thresholds"]
    assert list(state["tag_thresholds"]) == PLANET_TAGS and state["tag_thresholds"]["clear"] == pytest.approx(float(saved[5]), abs=1e-4)
    assert torch.equal(saved, task.thresholds) and saved.shape == (17,)
    assert metrics["val/tuned_in_use"] == 1 or torch.equal(saved, torch.full((17,), 0.2))

    pred_dir = tmp_path / "unlabelled"
    pred_dir.mkdir()
    rng = np.random.default_rng(9)
    for i in range(11):  # more than one batch of 8: the CSV is appended to
        Image.fromarray(make_tile(rng, draw_tags(rng), 64)).convert("CMYK").save(pred_dir / f"test_{i}.jpg")
    cli, pred_run = run_cli(["predict", "--task", "planet", *common, "--ckpt_path", str(ckpt), "--data.init_args.predict_dir", str(pred_dir)])
    rows = list(csv.reader(open(pred_run / "submission.csv")))
    assert rows[0] == ["image_name", "tags"] and len(rows) == 12
    assert sorted(r[0] for r in rows[1:]) == sorted(f"test_{i}" for i in range(11))
    probs = {r[0]: [float(v) for v in r[1:]] for r in list(csv.reader(open(pred_run / "predictions" / "probabilities.csv")))[1:]}
    for name, tags in rows[1:]:
        for tag, p, th in zip(PLANET_TAGS, probs[name], saved.tolist()):
            if abs(p - th) > 1e-4:  # the CSV rounds scores to 4 decimals
                assert (tag in tags.split()) == (p >= th), (name, tag, p, th)
    assert torch.equal(cli.model.thresholds, saved)  # loaded from the checkpoint, used by predict


@pytest.mark.slow
def test_default_recipe_learns_beyond_frequent_tags(run_cli, tmp_path):
    """A short run on the synthetic sample beats always predicting the frequent tags."""
    root = tmp_path / "sample"
    write_planet_sample(root, n=200)
    _, run_dir = run_cli([
        "--task", "planet", "--data.init_args.root", str(root), "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "16", "--trainer.max_epochs", "3", "--pictures.show_batch", "false", "--pictures.show_results", "false",
    ])
    m = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert m["val/f2"] > m["val/f2_frequent"] + 0.05, {k: v for k, v in m.items() if k.startswith("val/")}


@pytest.mark.slow
def test_resnet50_config_uses_the_lesson_stages(run_cli, tmp_path):
    """The lesson's ResNet-50 recipe: its first stage (frozen body, 128 px) on random weights."""
    root = write_planet(tmp_path / "planet", n=10, size=64)
    cli, run_dir = run_cli([
        "--task", "planet_resnet50", "--data.init_args.root", str(root), "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "4",
        # (the dotted form ``--model.init_args.net.init_args.weights null`` arrives as the string "None")
        "--model.init_args.net", '{"class_path": "models.TimmClassifier", "init_args": {"backbone": "resnet50", "weights": null}}',
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
        "--pictures.show_batch", "false", "--pictures.show_results", "false",
    ])
    stages = next(c for c in cli.trainer.callbacks if type(c).__name__ == "Stages")
    configured = cli.config["fit"]["trainer"]["callbacks"][0]["init_args"]["stages"]
    assert [s["epochs"] for s in configured] == [5, 5, 5, 5] and [s["freeze_to"] for s in configured] == [-1, 0, -1, 0]
    # --trainer.max_epochs 1 below the 4 stages: the first stage alone, one epoch, its one-cycle complete
    assert [s.epochs for s in stages.stages] == [1] and [s.freeze_to for s in stages.stages] == [-1]
    assert cli.datamodule.size == (128, 128) and cli.model.net.backbone_name == "resnet50"
