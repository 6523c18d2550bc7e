"""Trust in a run: NaN stops it (finite checkpoints, strict metrics.json, exit 1), --model.lr does what it
says with stages, and a checkpoint that would run code is refused in one line (issue 12)."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from callbacks.checkpoint_io import CheckpointError, FiniteCheckpointIO, NonFiniteWeights, check_loadable, non_finite
from callbacks.nan_guard import TrainingDiverged, check_step, finite_json, format_lrs
from callbacks.stage_plan import needs_find
from callbacks.stages import Stage, eval_lr, stage_lrs, uses_model_lr
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

SHORT = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--data.init_args.batch_size", "2",
         "--data.init_args.size", "[32,32]"]


def one_stage(epochs: int) -> str:
    """The task's stages replaced by one unfrozen stage at the model's lr, at the data's (small) size."""
    return f'--trainer.callbacks.init_args.stages=[{{"epochs": {epochs}, "freeze_to": 0, "lr": "base"}}]'


def strict_json(path):
    """``json.loads`` that refuses NaN / Infinity."""
    def refuse(c):
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(path.read_text(), parse_constant=refuse)


def assert_all_finite(folder):
    """Every checkpoint under ``folder`` loads with weights_only=True and holds finite tensors only."""
    files = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    for f in files:
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
        assert non_finite(ckpt["state_dict"]) == [], f
        for state in ckpt.get("optimizer_states", []):
            for per_param in state["state"].values():
                assert non_finite({k: v for k, v in per_param.items() if torch.is_tensor(v)}) == [], f
    return files


def run_main(monkeypatch, capsys, args):
    """``python train.py ARGS`` in this process: (exit code, stderr)."""
    import train

    monkeypatch.delenv("LESSON3_RUN_DIR", raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py", *args, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                                      "--trainer.enable_model_summary", "false"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main()
    return e.value.code, capsys.readouterr().err


# -- pure pieces -------------------------------------------------------------------------------
def test_step_checks_and_strict_json():
    assert check_step([torch.tensor(0.5), torch.tensor(1.0)], torch.tensor(3.0)) is None
    assert check_step([torch.tensor(0.5), torch.tensor(float("nan"))], torch.tensor(3.0)) == "the training loss is nan"
    assert check_step([torch.tensor(0.5)], torch.tensor(float("inf"))) == "the gradient norm is inf"
    assert format_lrs([1e-3, 1e-3]) == "LR 1.00e-03"
    assert format_lrs([0.0, 1e-3]) == "LRs per layer group [0.00e+00, 1.00e-03]"
    clean, bad = finite_json({"metrics": {"a": 1.0, "b": float("nan")}, "x": [float("-inf"), 2], "s": "nan"})
    assert clean == {"metrics": {"a": 1.0, "b": None}, "x": [None, 2], "s": "nan"} and bad == ["metrics.b", "x[0]"]
    json.dumps(clean, allow_nan=False)


def test_checkpoint_io_refuses_non_finite_weights(tmp_path):
    io = FiniteCheckpointIO(TorchCheckpointIO())
    io.save_checkpoint({"state_dict": {"w": torch.ones(3), "step": torch.tensor(2)}}, tmp_path / "ok.ckpt")
    assert io.load_checkpoint(tmp_path / "ok.ckpt")["state_dict"]["w"].sum() == 3
    with pytest.raises(NonFiniteWeights, match="1 weight tensor"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()
    with pytest.raises(CheckpointError, match="weights_only=False is refused"):
        io.load_checkpoint(tmp_path / "ok.ckpt", weights_only=False)


def test_stage_lr_expressions_of_the_model_lr():
    assert eval_lr("base", 5.0, None, 1e-3) == 1e-3
    assert eval_lr("base/4", 5.0, None, 1e-3) == pytest.approx(2.5e-4)
    assert eval_lr("lr/5", 1e-2, None, 1e-3) == pytest.approx(2e-3)  # lr stays the previous stage's head LR
    with pytest.raises(ValueError, match="model's lr"):
        eval_lr("base", 1.0, None)
    assert stage_lrs(Stage(lr=["base/100", "base"], freeze_to=-1), 3, 9.0, None, 1e-2) == pytest.approx([0.0, 0.0, 1e-2])
    assert uses_model_lr([Stage(lr=3e-2), Stage(lr=["base/4", "base"])]) and uses_model_lr([Stage(lr="lr")])
    assert not uses_model_lr([Stage(lr=3e-3)]) and not uses_model_lr([Stage(lr="find"), Stage(lr=["lr/100", "lr"])])


# -- the NaN guard through the CLI ----------------------------------------------------------------
def test_huge_lr_stops_with_one_line_and_exit_1(monkeypatch, capsys, tmp_path):
    run = tmp_path / "run"
    code, err = run_main(monkeypatch, capsys, ["--task", "camvid", "--model.init_args.lr", "1e6", one_stage(2),
                                               *SHORT, "--run_dir", str(run)])
    assert code == 1 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: training diverged at global step ") and "(epoch " in line and " LR " in line
    assert_all_finite(run / "checkpoints")
    m = strict_json(run / "metrics.json")
    assert m["status"] == "diverged" and m["error"] in line and m["model_lr"] == 1e6
    assert all(m["metrics"][k.removeprefix("metrics.")] is None for k in m.get("non_finite", []) if k.startswith("metrics."))


def test_nan_loss_mid_run_keeps_the_last_finite_checkpoints(run_cli, monkeypatch, tmp_path):
    from tasks import SegmentationTask

    forward = SegmentationTask.forward

    def poisoned(self, x):  # the loss turns NaN from global step 3 (the second step of epoch 1)
        out = forward(self, x)
        return out * float("nan") if self.training and self.trainer.global_step >= 3 else out

    monkeypatch.setattr(SegmentationTask, "forward", poisoned)
    with pytest.raises(TrainingDiverged) as e:
        run_cli(["--task", "camvid", one_stage(3), *SHORT])
    msg = str(e.value)
    assert msg.startswith("training diverged at global step 3 (epoch 1): the training loss is nan") and "; LR " in msg
    assert "checkpoints/last.ckpt" in msg and "\n" not in msg
    (run,) = (tmp_path / "runs" / "camvid").iterdir()
    files = assert_all_finite(run / "checkpoints")
    assert {f.name for f in files} >= {"last.ckpt", "epoch000.ckpt"}
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 and last["epoch"] == 0  # the epoch before the NaN, not overwritten
    m = strict_json(run / "metrics.json")
    assert m["status"] == "diverged" and m["global_step"] == 3 and m["last_checkpoint"].endswith("last.ckpt")
    assert m["best_checkpoint"] and m["best_checkpoint"].endswith("epoch000.ckpt")
    assert all(m["metrics"][k.removeprefix("metrics.")] is None for k in m.get("non_finite", []))
    assert m["stages_ran"][0]["max_lr_per_group"][-1] == pytest.approx(m["model_lr"])


# -- options do what they say ------------------------------------------------------------------------
def test_model_lr_sets_the_stage_lr(run_cli):
    from callbacks import Stages
    from train import cli_main

    assert cli_main(["--task", "camvid", "--model.lr", "1.5e-3", "--trainer.logger", "false"], run=False).model.lr == 1.5e-3  # short form
    cli, run = run_cli(["--task", "camvid", "--model.init_args.lr", "1.5e-3", one_stage(1), *SHORT])
    opt = cli.trainer.optimizers[0]
    assert [g["max_lr"] for g in opt.param_groups] == pytest.approx([1.5e-3] * len(opt.param_groups))  # what ran
    stages = next(c for c in cli.trainer.callbacks if isinstance(c, Stages))
    m = strict_json(run / "metrics.json")
    assert m["status"] == "completed" and m["model_lr"] == 1.5e-3
    assert m["stages_ran"] == stages.ran and m["stages_ran"][0]["lr"] == "base"
    assert m["stages_ran"][0]["max_lr_per_group"] == pytest.approx([1.5e-3] * len(opt.param_groups))
    assert m["stages_ran"][0]["epochs"] == [0, 0] and not math.isnan(m["metrics"]["val/loss"])


def test_every_shipped_recipe_takes_the_model_lr():
    """--model.lr sets an LR in every task's stages (or is the fallback of a stage's ``lr: find``)."""
    import yaml

    from conftest import ROOT

    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        for cb in (yaml.safe_load(path.read_text()) or {}).get("trainer", {}).get("callbacks", []) or []:
            if cb.get("class_path") == "callbacks.Stages":
                stages = [Stage(**s) for s in cb["init_args"]["stages"]]
                assert uses_model_lr(stages) or any(needs_find(s.lr) for s in stages), path


# -- checkpoints are data, never code ----------------------------------------------------------------
class _Canary:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling this would create the file


@pytest.mark.parametrize("sub", ["fit", "validate", "test", "predict"])
def test_crafted_checkpoint_refused_in_one_line(monkeypatch, capsys, tmp_path, sub):
    canary = tmp_path / "CANARY"
    evil = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "x": _Canary(str(canary))}, evil)
    code, err = run_main(monkeypatch, capsys, [sub, "--task", "camvid", "--ckpt_path", str(evil), "--runs_dir", str(tmp_path / "runs")])
    assert code == 1 and not canary.exists() and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: {evil}: not a loadable checkpoint (it holds Python objects") and "io.open" in line
    assert not list((tmp_path / "runs").glob("*/*/checkpoints/*.ckpt"))  # nothing written by the failed load


def test_bad_checkpoint_files_and_weights_only_false(monkeypatch, capsys, tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"junk.ckpt: not a loadable checkpoint \("):
        check_loadable(junk)
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.ones(2)}, plain)
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        check_loadable(plain)
    code, err = run_main(monkeypatch, capsys, ["validate", "--task", "camvid", "--ckpt_path", str(junk), "--weights_only", "false",
                                               "--runs_dir", str(tmp_path / "runs")])
    assert code == 1 and "error: --weights_only false is refused" in err and "Traceback" not in err
