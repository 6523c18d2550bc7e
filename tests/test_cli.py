"""The real CLI end to end: --task, overrides, subcommands, run folder, metrics.json, resume, DDP."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from conftest import ROOT, shared
from recheck import assert_metrics_recomputed, training_losses
from test_camvid import write_fastai, write_segnet
from train import config_chain, expand_task

FAST = ["--trainer.fast_dev_run", "true"]


def test_expand_task():
    assert expand_task(["--task", "camvid", "--trainer.max_epochs", "3"])[:3] == ["fit", "--config", str(ROOT / "configs" / "camvid.yaml")]
    args = expand_task(["validate", "--task=camvid_resnet34", "--ckpt_path", "x"])
    # camvid, the sample's overlay for camvid (no root given), camvid_resnet34
    assert args[0] == "validate" and args.count("--config") == 3 and args[-2:] == ["--ckpt_path", "x"]
    assert expand_task(["validate", "--task=camvid_resnet34", "--data.init_args.root", "d"]).count("--config") == 2
    assert [p.stem for p in config_chain("camvid_resnet34")] == ["camvid", "camvid_resnet34"]
    assert expand_task(["fit", "--config", "a.yaml"]) == ["fit", "--config", "a.yaml"]


def test_unknown_task_lists_names():
    with pytest.raises(SystemExit, match="unknown task 'camvd'.*camvid"):
        expand_task(["--task", "camvd"])


def test_print_config(capsys):
    from train import cli_main

    with pytest.raises(SystemExit) as e:
        cli_main(["fit", "--config", str(ROOT / "configs" / "camvid.yaml"), "--model.init_args.lr", "0.01", "--print_config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "tasks.SegmentationTask" in out and "lr: 0.01" in out and "tu-tf_efficientnet_lite0" in out


def test_fit_writes_run_folder(run_cli):
    cli, run = run_cli(["--task", "camvid", *FAST, "--data.init_args.batch_size", "4", "--model.init_args.lr", "1e-3"])
    assert cli.model.lr == 1e-3 and cli.datamodule.batch_size == 4
    assert cli.model.net.unet.segmentation_head[0].out_channels == 32  # linked from codes.txt
    m = json.loads((run / "metrics.json").read_text())
    assert m["subcommand"] == "fit"
    for key in ("val/acc", "val/miou", "val/loss", "train/loss"):
        assert np.isfinite(m["metrics"][key]), key
    assert m["versions"]["torch"] and m["versions"]["pytorch-lightning"] == "2.6.6"
    assert m["config"]["model"]["init_args"]["lr"] == 1e-3
    assert (run / "pictures" / "show_batch.png").stat().st_size > 1000
    assert (run / "pictures" / "show_results.png").stat().st_size > 1000


def test_segnet_layout_links_twelve_classes(run_cli, tmp_path):
    root = write_segnet(tmp_path / "segnet")
    cli, run = run_cli(["--task", "camvid", *FAST, "--data.init_args.root", str(root), "--data.init_args.size", "[32,32]", "--data.init_args.batch_size", "2"])
    assert cli.model.net.unet.segmentation_head[0].out_channels == 12 and cli.model.void_index == 11
    cli, run = run_cli(["test", "--task", "camvid", "--data.init_args.root", str(root), "--data.init_args.size", "[32,32]"])
    assert "test/acc" in json.loads((run / "metrics.json").read_text())["metrics"]


@pytest.mark.slow
def test_validate_test_predict_from_checkpoint(run_cli, tmp_path):
    data = write_fastai(tmp_path / "camvid", n=6, hw=(40, 60))
    common = ["--data.init_args.root", str(data), "--data.init_args.size", "[32,64]", "--data.init_args.batch_size", "2"]
    # two epochs: the recipe's stage scaled to 2 epochs at --data.size, as validate runs
    _, run = run_cli(["--task", "camvid", "--trainer.max_epochs", "2", *common])
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (run / "config.yaml").is_file()
    assert json.loads((run / "metrics.json").read_text())["last_checkpoint"] == str(ckpt)
    fit_metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    _, vrun = run_cli(["validate", "--task", "camvid", "--ckpt_path", str(ckpt), *common])
    val = json.loads((vrun / "metrics.json").read_text())
    assert val["subcommand"] == "validate"
    assert abs(val["metrics"]["val/acc"] - fit_metrics["val/acc"]) < 5e-3  # same weights, same data (CPU kernels may differ by a few pixels)
    _, trun = run_cli(["test", "--task", "camvid", "--ckpt_path", str(ckpt), *common])
    assert "test/miou" in json.loads((trun / "metrics.json").read_text())["metrics"]
    pred_dir = tmp_path / "to_predict"
    pred_dir.mkdir()
    Image.fromarray(np.zeros((50, 70, 3), np.uint8)).save(pred_dir / "street.png")
    _, prun = run_cli(["predict", "--task", "camvid", "--ckpt_path", str(ckpt), *common, "--data.init_args.predict_dir", str(pred_dir)])
    mask = Image.open(prun / "predictions" / "street_P.png")
    assert mask.size == (70, 50) and mask.mode == "L"  # back at the original size, class ids
    assert int(np.asarray(mask).max()) < 32


class Crash(pl.Callback):
    """Simulates a crash (power cut, OOM...) at a given training step."""

    def __init__(self, at_step: int = 3):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


@pytest.mark.slow
def test_crash_keeps_weights_and_resume_with_ckpt_path_last(run_cli, tmp_path):
    data = write_fastai(tmp_path / "camvid", n=6, hw=(32, 32))
    common = ["--task", "camvid", "--data.init_args.root", str(data), "--data.init_args.size", "[32,32]", "--data.init_args.batch_size", "2", "--trainer.max_epochs", "2"]
    crash = '{"class_path": "test_cli.Crash", "init_args": {"at_step": 3}}'
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli([*common, f"--trainer.callbacks+={crash}"])
    saved = list((tmp_path / "runs" / "camvid").glob("*/checkpoints/on_exception.ckpt"))
    assert len(saved) == 1 and torch.load(saved[0], weights_only=True)["global_step"] == 3  # nothing trained is lost
    _, run = run_cli([*common, "--ckpt_path", "last"])
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs"] == 2 and m["global_step"] == 4  # continued from step 3, not from scratch
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_bad_ckpt_path(run_cli):
    with pytest.raises(SystemExit, match="no such checkpoint"):
        run_cli(["validate", "--task", "camvid", "--ckpt_path", "/nonexistent.ckpt"])


def test_wandb_offline_run(run_cli):
    one_batch = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1"]
    _, run = run_cli(["--task", "camvid", *one_batch], logger=True)
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert list(runs[0].rglob("show_results*.png"))
    record = next(runs[0].glob("run-*.wandb")).read_bytes()  # the run's config is in its records (protobuf: strings as they are)
    for key in (b"seed_everything", b"batch_size", b"tu-tf_efficientnet_lite0", b"callbacks.Stages", b"max_epochs"):
        assert key in record, key  # the whole resolved config, not only the model's hyperparameters
    import wandb

    assert wandb.run is None  # finished with its command: the next command in this process gets its own run
    _, second = run_cli(["--task", "camvid", *one_batch], logger=True)
    assert second != run and len(list((second / "wandb").glob("offline-run-*"))) == 1


def test_cli_error_message_names_the_file(tmp_path):
    """``python train.py`` prints one clear line (no traceback) for bad data."""
    root = write_fastai(tmp_path / "c")
    (root / "labels" / "0001TP_000001_P.png").unlink()
    env = {**os.environ, "LESSON3_RUN_DIR": ""}
    out = subprocess.run(
        [sys.executable, "train.py", "--task", "camvid", "--data.init_args.root", str(root), "--runs_dir", str(tmp_path / "runs"), "--trainer.logger", "false"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 1
    assert "error:" in out.stderr and "0001TP_000001_P.png: label file missing" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_real_camvid_tiny_two_epochs(run_cli):
    root = shared("camvid_tiny")
    cli, run = run_cli(["--task", "camvid", "--data.init_args.root", str(root), "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2"])
    m = json.loads((run / "metrics.json").read_text())["metrics"]
    # void-free pixel accuracy and mean IoU of the final weights on the 2 validation batches, counted here
    assert_metrics_recomputed(cli, m, ("val/acc", "val/miou"))
    losses = training_losses(cli)  # it learns: 3.4-3.8 (ln 32: 3.47) at the first step, 1.5-1.9 at the 8th (seeds 0, 1, 42)
    assert len(losses) == 8 and losses[-1] < 0.75 * losses[0], losses


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    """Lightning's own DDP over 2 CPU processes runs the staged recipe (LR range test broadcast,
    frozen stage, discriminative LRs, resize with loader rebuild, stage checkpoints) with the
    progress bar and the (offline) W&B logger on: this once hung at the first epoch end."""
    env = {k: v for k, v in os.environ.items() if k not in ("LESSON3_RUN_DIR", "LOCAL_RANK")}
    cmd = [
        sys.executable, "train.py", "--task", "camvid_lesson", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
        "--data.init_args.num_workers", "0", "--runs_dir", str(tmp_path / "runs"),
        "--trainer.callbacks.init_args.find_budget", "null",  # 1 batch an epoch: over any budget, the range test runs anyway
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((tmp_path / "runs" / "camvid_lesson").iterdir())
    assert len(runs) == 1  # both processes share rank 0's run folder
    m = json.loads((runs[0] / "metrics.json").read_text())
    assert {"val/acc", "val/miou", "val/loss"} <= set(m["metrics"])
    assert m["config"]["trainer"]["devices"] in (2, "2")
    ckpts = {p.name for p in (runs[0] / "checkpoints").iterdir()}
    assert {"stage-1.ckpt", "stage-2.ckpt", "stage-3.ckpt", "last.ckpt"} <= ckpts
    assert out.stdout.count("LR range test suggests") == 1  # rank 0 prints; rank 1 got it by broadcast


@pytest.mark.slow
def test_ddp_lr_sweep_on_two_cpu_processes(tmp_path):
    """``rule: sweep`` under Lightning's DDP: every process runs the same mini-runs (restored from one
    checkpoint), rank 0 chooses and prints, the run trains on."""
    env = {k: v for k, v in os.environ.items() if k not in ("LESSON3_RUN_DIR", "LOCAL_RANK")}
    stages = json.dumps([{"epochs": 2, "freeze_to": 0, "lr": "find", "rule": "sweep"}])
    cmd = [
        sys.executable, "train.py", "--task", "camvid", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
        "--data.init_args.num_workers", "0", "--runs_dir", str(tmp_path / "runs"), "--trainer.max_epochs", "2",
        "--trainer.callbacks.init_args.stages", stages, "--trainer.callbacks.init_args.find_budget", "null",
        "--trainer.callbacks.init_args.find_steps", "20",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("[stages] stage 1: ") == 1, out.stdout[-2000:]  # rank 0 says what the sweep found
    (run,) = list((tmp_path / "runs" / "camvid").iterdir())
    record = json.loads((run / "lr_sweep-stage-1.json").read_text())
    assert len(record["val_loss"]) == 4 and record["start_val_loss"] is not None and record["mini_steps"] == 8
    # (on 1 batch an epoch every mini-run may diverge: then no candidate helped and the fallback is kept)
    assert record["chosen"] in record["candidates"] or (record["chosen"] is None and "no mini-run lowered" in record["reason"])
    m = json.loads((run / "metrics.json").read_text())
    assert m["stages_ran"][0]["found_lr"] == pytest.approx(record["chosen"] or record["fallback"])


# what a run must not print: warnings the project once caused (issue 16)
NOT_OURS_TO_PRINT = {
    "implicit resume": r"ckpt_path=None\)` was called without a model",
    "implicit last": r'ckpt_path="last"\) is set, but there is no last checkpoint',
    "weights_only unset": r"weights_only",
    "args and argv": r"not recommended to provide both args and command line arguments",
    "dirpath changed": r"dirpath has changed",
    "module hook ignored": r"overridden `on_after_batch_transfer`",
    "callbacks missing": r"callbacks used to create the checkpoint need to be provided",
    "one-cycle thrown away": r"to estimate number of stepping batches",  # a schedule Stages would replace
}


def test_a_run_prints_no_warning_the_project_causes(run_cli, tmp_path, recwarn, caplog, capsys):
    """A fit, a fit from its last.ckpt in a new run folder (a load, callbacks restored) and a
    validate of it: no warning of the list above, and none attributed to our own code."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="pytorch_lightning")
    tiny = ["--task", "camvid", "--data.init_args.size", "[32,32]", "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
            "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--interpretation.enabled", "false", "--trainer.max_epochs", "1"]
    _, first = run_cli(tiny)
    last = first / "checkpoints" / "last.ckpt"
    _, second = run_cli([*tiny, "--ckpt_path", str(last)])  # the run had ended: nothing more to train
    assert json.loads((second / "metrics.json").read_text())["global_step"] == 2
    run_cli(["validate", *tiny, "--ckpt_path", str(last)])
    out = capsys.readouterr()
    text = "\n".join([out.out, out.err, caplog.text, *(str(w.message) for w in recwarn)])
    assert [name for name, pattern in NOT_OURS_TO_PRINT.items() if re.search(pattern, text)] == []
    ours = [f"{w.filename}:{w.lineno}: {w.message}" for w in recwarn if Path(w.filename).resolve().is_relative_to(ROOT) and ".venv" not in w.filename]
    assert ours == []


def test_every_parameter_groups_lr_is_a_scalar_per_step(run_cli, tmp_path):
    """LearningRateMonitor on whenever there is a logger: the LR of each group, each step (here a CSV logger)."""
    import csv

    logger = {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "csv")}}
    run_cli(["--task", "planet", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
             "--trainer.log_every_n_steps", "1", "--trainer.logger", json.dumps(logger)], logger=True)
    files = list((tmp_path / "csv").rglob("metrics.csv"))
    assert files, "no CSV logger output"
    rows = list(csv.DictReader(open(files[0])))
    lr_columns = [c for c in rows[0] if c.startswith("lr-")]
    assert len(lr_columns) >= 2  # one per layer group
    per_step = [r for r in rows if r[lr_columns[-1]]]
    assert len(per_step) == 3 and len({float(r[lr_columns[-1]]) for r in per_step}) == 3  # the one-cycle moves every step


def test_help_names_task_and_a_wrong_option_is_one_line():
    env = {k: v for k, v in os.environ.items() if k != "LESSON3_RUN_DIR"}
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "--task NAME" in out.stdout and "planet" in out.stdout and "--data.init_args.root" in out.stdout
    bad = subprocess.run([sys.executable, "train.py", "--task", "planet", "--trainer.max_epoch", "1"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) <= 3, bad.stderr
    assert lines[-1].startswith("error: ") and "did you mean --trainer.max_epochs?" in lines[-1], bad.stderr


def test_a_checkpoint_alone_exports_and_validates_with_its_runs_config(run_cli, tmp_path, capsys):
    """``export``/``validate --ckpt_path RUN/checkpoints/last.ckpt`` with no ``--task``: the run's own
    config.yaml is the config (data, classes, sizes); an export leaves no empty run folder behind."""
    fit, run = run_cli(["--task", "planet", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                        "--trainer.limit_val_batches", "2", "--interpretation.enabled", "false"])
    ckpt = run / "checkpoints" / "last.ckpt"
    run_cli(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "bundle")])
    assert f"Config: {run / 'config.yaml'}" in capsys.readouterr().err
    meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert meta["task"] == "multilabel" and meta["classes"] == fit.model.class_names
    assert meta["input"]["size"] == list(fit.datamodule.size)
    assert [p.name for p in (tmp_path / "runs" / "planet").iterdir()] == [run.name]  # the export's folder went
    _, again = run_cli(["validate", "--ckpt_path", str(ckpt), "--model.init_args.tta", "false"])  # (fit validates without TTA)
    trained, validated = (json.loads((r / "metrics.json").read_text())["metrics"] for r in (run, again))
    assert validated["val/f2"] == pytest.approx(trained["val/f2"], abs=1e-6)  # the same data, classes and weights
