"""The benchmark scripts run end to end (tiny settings; they measure, these tests only check they work)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_throughput_benchmark_runs_on_cpu(tmp_path):
    out = tmp_path / "tp.json"
    env = {**os.environ, "LESSON3_RUN_DIR": ""}
    env.pop("LESSON3_RUN_DIR")
    cmd = [sys.executable, "benchmarks/throughput.py", "--task", "biwi", "--device", "cpu", "--steps", "2", "--warmup", "1", "--repeats", "1",
           "--pipeline_batches", "2", "--workers", "0", "1", "--epoch_batches", "2", "--out", str(out),
           "--", "--data.init_args.batch_size", "4", "--data.init_args.augment_on", "gpu"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert [p["workers"] for p in r["pipeline"]] == [0, 1] and all(p["samples_per_s"] > 0 for p in r["pipeline"])
    assert r["device_augment_per_s"] > 0  # augment_on gpu: the batch augmentation is measured too
    assert r["steps"]["raw_steps_per_s"] > 0 and r["steps"]["project_steps_per_s"] > 0 and r["steps"]["ratio"] > 0
    assert r["epoch"]["samples"] == 8 and r["epoch"]["seconds"] > 0 and r["epoch"]["first_epoch_s"] > 0
    assert "project / raw" in res.stdout
