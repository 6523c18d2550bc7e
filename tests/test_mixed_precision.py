"""The GPU configuration's code paths on the CPU: bf16 mixed precision with channels_last (Lightning
supports both there), through fit with a range test, resume, the ``lr_find`` subcommand, the NaN
guard, export and serving. ``benchmarks/gpu_throughput.sh`` stays the check on a real GPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from callbacks.nan_guard import TrainingDiverged
from tasks.planet import PlanetTask

BF16 = ["--trainer.precision", "bf16-mixed", "--memory.channels_last", "true"]
SHORT = ["--task", "planet", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
         "--data.init_args.batch_size", "8", "--data.init_args.size", "64", "--interpretation.enabled", "false"]
STAGES = ('--trainer.callbacks.init_args.stages=[{"epochs": 1, "freeze_to": -1, "lr": "find"}, '
          '{"epochs": 1, "freeze_to": 0, "lr": ["base/4", "base"]}]')
FIND = ["--trainer.callbacks.init_args.find_steps", "20", "--trainer.callbacks.init_args.find_budget", "null"]


@pytest.fixture
def autocast_seen(monkeypatch):
    """Whether CPU autocast was on at each training ``model_step`` (the range test's too)."""
    seen, step = [], PlanetTask.model_step

    def spy(self, batch, stage="train"):
        if stage == "train":
            seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return step(self, batch, stage)

    monkeypatch.setattr(PlanetTask, "model_step", spy)
    return seen


@pytest.mark.slow
def test_bf16_channels_last_fit_with_range_test_resume_export_and_serve(run_cli, tmp_path, autocast_seen):
    cli, run = run_cli([*SHORT, *BF16, STAGES, *FIND])
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "completed" and m["epochs"] == 2 and cli.trainer.precision == "bf16-mixed"
    conv = next(p for p in cli.model.net.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and conv.dtype == torch.float32  # (autocast: fp32 weights)
    assert len(autocast_seen) == 20 + 6 and all(autocast_seen)  # the range test's 20 steps and 2 x 3 training steps
    curve = json.loads((run / "lr_find-stage-1.json").read_text())
    assert len(curve["losses"]) >= 10 and all(math.isfinite(x) for x in curve["losses"][:10])
    assert m["stages_ran"][0]["found_lr"] is not None or curve["suggestion"] is None

    # resumed from the end of stage 1 in a new folder: the same weights as the uninterrupted run
    again, _ = run_cli([*SHORT, *BF16, STAGES, *FIND, "--ckpt_path", str(run / "checkpoints" / "stage-1.ckpt")])
    for k, v in cli.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k

    from serving.bundle import load_bundle
    from serving.predict import Predictor

    run_cli(["export", *SHORT, *BF16, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "bundle")])
    image = next((cli.datamodule.root_path).rglob("*.jpg")).read_bytes()
    answer = Predictor(load_bundle(tmp_path / "bundle")).predict_image(image)
    probs = [t["probability"] for t in answer["tags"]]
    assert len(probs) == 17 and all(0.0 < p < 1.0 for p in probs), answer


@pytest.mark.slow
def test_bf16_lr_find_subcommand_and_the_nan_guard(run_cli, autocast_seen):
    _, run = run_cli(["lr_find", *SHORT, *BF16, "--num_steps", "20"])
    record = json.loads((run / "lr_find.json").read_text())
    assert len(record["losses"]) >= 10 and all(math.isfinite(x) for x in record["losses"][:10])
    assert autocast_seen and all(autocast_seen)
    with pytest.raises(TrainingDiverged, match="training diverged at global step"):
        run_cli([*SHORT, *BF16, "--model.init_args.lr", "1e6", '--trainer.callbacks.init_args.stages=[{"epochs": 2, "lr": "base"}]'])
