"""Interpretation through the CLI on tiny trained models: the end of fit (pictures and tables that
agree with the last validation, planted errors first), the ``interpret`` subcommand, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from datamodules.biwi_sample import write_biwi_sample
from test_camvid import write_fastai
from test_planet import write_planet


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- the CLI: tiny trained models ------------------------------------------------------------
TINY = ["--data.init_args.num_workers", "0", "--pictures.show_batch", "false", "--pictures.show_results", "false"]


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    """``train.cli_main`` with runs under a module-wide folder (trained models shared by the tests)."""
    from train import cli_main

    runs = tmp_path_factory.mktemp("runs")

    def run(args: list[str], logger: bool = False):
        os.environ.pop("LESSON3_RUN_DIR", None)
        extra = ["--runs_dir", str(runs), "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        cli = cli_main([*args, *extra, *([] if logger else ["--trainer.logger", "false"])])
        os.environ.pop("LESSON3_RUN_DIR", None)
        return cli, cli.run_dir

    return run


def one_stage(folder: Path, epochs: int, lr: float, freeze_to: int = -1) -> list[str]:
    """``--config`` of a single training stage (the head alone at a high LR: what a few steps can learn for sure)."""
    path = folder / "stage.yaml"
    path.write_text(f"trainer:\n  callbacks:\n    - class_path: callbacks.Stages\n      init_args:\n        stages:\n"
                    f"          - {{epochs: {epochs}, freeze_to: {freeze_to}, lr: {lr}}}\n")
    return ["--config", str(path)]


def outputs(run: Path) -> tuple[dict, dict]:
    """(metrics.json's metrics, interpret/summary.json)."""
    return json.loads((run / "metrics.json").read_text())["metrics"], json.loads((run / "interpret" / "summary.json").read_text())


def write_tags(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image_name", "tags"])
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def planet(tmp_path_factory, runner):
    """Planet, fastai layout, every image tagged ``clear primary`` (the commonest real tags), the head
    trained alone for two epochs: it learns those for sure, so an image tagged with every other tag stands out."""
    folder = tmp_path_factory.mktemp("planet")
    root = write_planet(folder / "data", n=24, size=32)
    write_tags(root / "labels.csv", [{"image_name": r["image_name"], "tags": "clear primary"} for r in read_csv(root / "labels.csv")])
    common = ["--data.init_args.root", str(root), "--data.init_args.size", "32", "--data.init_args.batch_size", "8", *TINY]
    _, run = runner(["--task", "planet", *one_stage(folder, 2, 0.05), *common, "--trainer.max_epochs", "2"])
    return root, common, run


def test_fit_end_planet(planet):
    _, _, run = planet
    folder = run / "interpret"
    assert {"README.md", "summary.json", "tags.csv", "missed_added.csv", "confused_pairs.csv", "top_losses.csv", "top_losses.png", "confusion.png"} <= {p.name for p in folder.iterdir()}
    metrics, summary = outputs(run)
    assert summary["tta"] is False  # configs/planet.yaml: tta for validate/serving, not fit's epochs (tta_fit false)
    # the same weights and validation images as the last validation epoch: the same score
    key = {"threshold": "val/f2", "expected_f2": "val/f2_expected"}.get(summary["decision"], "val/f2_tuned" if metrics["val/tuned_in_use"] else "val/f2")
    assert summary["f2_samples"] == pytest.approx(metrics[key], abs=1e-4)
    assert summary["mean_loss"] == pytest.approx(metrics["val/loss"], abs=1e-3)
    tags = read_csv(folder / "tags.csv")
    assert len(tags) == 17 and sum(int(r["true"]) for r in tags) == sum(int(r["tp"]) + int(r["fn"]) for r in tags)
    top = read_csv(folder / "top_losses.csv")
    assert 0 < len(top) <= 9 and [float(r["loss"]) for r in top] == sorted((float(r["loss"]) for r in top), reverse=True)
    assert "## tags" in (folder / "README.md").read_text()


def test_subcommand_puts_planted_complement_labels_first(planet, runner, tmp_path):
    root, common, run = planet
    planted_root = tmp_path / "planted"
    shutil.copytree(root, planted_root)
    rows = read_csv(root / "labels.csv")
    from datamodules.planet import PLANET_TAGS

    planted = {r["image_name"] for r in rows[::2]}
    for r in rows:  # every other image gets exactly the tags it does not have
        if r["image_name"] in planted:
            r["tags"] = " ".join(t for t in PLANET_TAGS if t not in r["tags"].split())
    write_tags(planted_root / "labels.csv", rows)
    args = [a if a != str(root) else str(planted_root) for a in common]
    _, irun = runner(["interpret", "--task", "planet", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), *args, "--interpretation.k", "40"])
    top = [r["name"] for r in read_csv(irun / "interpret" / "top_losses.csv")]  # every validation image (k = 40)
    found = [n for n in top if n in planted]
    assert found and len(found) < len(top) and top[: len(found)] == found, (top, planted)
    summary = json.loads((irun / "interpret" / "summary.json").read_text())
    assert "last.ckpt" in summary["source"] and summary["tta"] is True  # as validate: the model's tta


def test_subcommand_bad_input(planet, camvid, runner, tmp_path):
    _, common, run = planet
    with pytest.raises(SystemExit, match="a checkpoint of SegmentationTask .* not of PlanetTask"):
        runner(["interpret", "--task", "planet", "--ckpt_path", str(camvid / "checkpoints" / "last.ckpt"), *common])
    moved = tmp_path / "moved.ckpt"  # no run config next to it: the weights do not fit
    shutil.copy(camvid / "checkpoints" / "last.ckpt", moved)
    with pytest.raises(SystemExit, match="does not fit this model"):
        runner(["interpret", "--task", "planet", "--ckpt_path", str(moved), *common])
    with pytest.raises(SystemExit, match="interpret needs a validation split"):
        runner(["interpret", "--task", "planet", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), *common, "--data.init_args.valid_pct", "0"])
    with pytest.raises(SystemExit, match="interpret needs --ckpt_path"):
        runner(["interpret", "--task", "planet", *common])


@pytest.fixture(scope="module")
def camvid(tmp_path_factory, runner):
    """CamVid, fastai layout; validation image 6's mask is all Animal, a class no training mask has
    (so the model, the decoder trained for two epochs, hardly ever predicts it: that image's IoU is about 0)."""
    folder = tmp_path_factory.mktemp("camvid")
    root = write_fastai(folder / "data", n=7, valid=(5, 6))
    label = root / "labels" / "0001TP_000006_P.png"
    Image.fromarray(np.zeros_like(np.asarray(Image.open(label))), mode="L").save(label)
    _, run = runner(["--task", "camvid", *one_stage(folder, 2, 0.01), "--data.init_args.root", str(root), "--data.init_args.size", "[32,32]",
                     "--data.init_args.batch_size", "2", *TINY, "--trainer.max_epochs", "2"], logger=True)
    return run


def test_fit_end_camvid_planted_mask_has_the_lowest_iou(camvid):
    folder = camvid / "interpret"
    worst = read_csv(folder / "lowest_iou.csv")
    assert worst[0]["name"] == "0001TP_000006.png" and float(worst[0]["iou"]) < min(0.01, float(worst[1]["iou"])), worst
    metrics, summary = outputs(camvid)
    assert summary["pixel_acc"] == pytest.approx(metrics["val/acc"], abs=1e-4)
    classes = {r["class"] for r in read_csv(folder / "classes.csv")}
    assert "Animal" in classes and "Void" not in classes
    assert (folder / "lowest_iou.png").stat().st_size > 1000 and (folder / "confusion.png").is_file()
    wandb = list((camvid / "wandb").glob("offline-run-*"))  # the offline W&B run (tests/conftest.py: WANDB_MODE offline)
    assert len(wandb) == 1 and list(wandb[0].glob("run-*.wandb")), wandb
    assert list(wandb[0].rglob("media/images/interpret/*.png")) and list(wandb[0].rglob("media/table/interpret/*.table.json"))


def test_fit_end_biwi_planted_point_has_the_largest_error(tmp_path, runner):
    from datamodules.biwi import read_calibration

    root = tmp_path / "biwi"
    write_biwi_sample(root, persons=("01", "02", "13"), frames=6)
    pose = sorted((root / "13").glob("*_pose.txt"))[2]
    K = read_calibration(root / "13" / "rgb.cal")
    Z = 1000.0  # the head centre moved to pixel (10, 10), a corner
    lines = pose.read_text().splitlines()
    lines[-1] = f"{(10 - K[0, 2]) * Z / K[0, 0]:g} {(10 - K[1, 2]) * Z / K[1, 1]:g} {Z:g} "
    pose.write_text("\n".join(lines) + "\n")
    _, run = runner(["--task", "biwi", "--data.init_args.root", str(root), "--data.init_args.valid_persons", "[13]", "--data.init_args.batch_size", "4",
                     "--data.init_args.size", "[48,64]", *TINY,
                     "--trainer.max_epochs", "1"])
    worst = read_csv(run / "interpret" / "largest_errors.csv")
    assert worst[0]["name"] == f"13/{pose.name.replace('_pose.txt', '_rgb.jpg')}" and float(worst[0]["true_x"]) == pytest.approx(10, abs=0.5), worst[0]
    metrics, summary = outputs(run)
    assert summary["tta"] is False  # as fit's validation epochs (configs/biwi.yaml: tta_fit false)
    assert summary["mean_error_px"] == pytest.approx(metrics["val/px_error"], rel=1e-4)
    pct = {r["statistic"]: float(r["error_px"]) for r in read_csv(run / "interpret" / "percentiles.csv")}
    assert pct["p100"] == pytest.approx(float(worst[0]["error_px"]), abs=0.01) and pct["p50"] <= pct["p90"] <= pct["p100"]
    assert (run / "interpret" / "error_histogram.png").is_file() and (run / "interpret" / "largest_errors.png").is_file()


def test_fit_end_can_be_turned_off(tmp_path, runner):
    root = write_fastai(tmp_path / "camvid", n=4, valid=(3,))
    _, run = runner(["--task", "camvid", "--data.init_args.root", str(root), "--data.init_args.size", "[32,32]", "--trainer.fast_dev_run", "true", *TINY,
                     "--interpretation.enabled", "false"])
    assert (run / "metrics.json").is_file() and not (run / "interpret").exists()


@pytest.mark.slow
def test_subcommand_error_is_one_line(planet, camvid, tmp_path):
    _, common, _ = planet
    out = subprocess.run(
        [sys.executable, "train.py", "interpret", "--task", "planet", "--ckpt_path", str(camvid / "checkpoints" / "last.ckpt"), *common,
         "--runs_dir", str(tmp_path / "runs"), "--trainer.logger", "false"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "LESSON3_RUN_DIR": ""}, timeout=300,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: ") and "a checkpoint of SegmentationTask" in out.stderr


@pytest.mark.slow
def test_fit_end_imdb(tmp_path, runner):
    from datamodules.imdb_sample import write_imdb_sample

    write_imdb_sample(tmp_path / "imdb", n=40, n_valid=8, seed=1)
    _, run = runner(["--task", "imdb", "--data.init_args.root", str(tmp_path / "imdb"), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                     "--data.init_args.batch_size", "4", *TINY])
    metrics, summary = outputs(run)
    assert summary["accuracy"] == pytest.approx(metrics["val/acc"], abs=1e-4) and summary["samples"] == 8
    by = read_csv(run / "interpret" / "errors_by_length.csv")
    assert sum(int(r["samples"]) for r in by) == 8 and sum(int(r["errors"]) for r in by) == round(8 * (1 - metrics["val/acc"]))
    wrong = read_csv(run / "interpret" / "most_wrong.csv")
    assert all(r["truth"] != r["prediction"] for r in wrong) and (run / "interpret" / "errors_by_length.png").is_file()


@pytest.mark.slow
def test_fit_end_classify(tmp_path, runner):
    pytest.importorskip("tasks.classify")
    _, run = runner(["--task", "classify", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", *TINY])
    metrics, summary = outputs(run)
    assert summary["accuracy"] == pytest.approx(metrics["val/acc"], abs=1e-4)
    folder = run / "interpret"
    assert {"classes.csv", "most_confused.csv", "confusion_matrix.csv", "top_losses.csv", "top_losses.png", "confusion.png"} <= {p.name for p in folder.iterdir()}
