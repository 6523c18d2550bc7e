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


@pytest.mark.slow
def test_epoch_vs_plain_interleaves_the_arms(tmp_path):
    """(d): a project epoch and a plain epoch in turn, the first pair left out, medians in the JSON."""
    from test_camvid import write_segnet

    write_segnet(tmp_path / "data" / "camvid_segnet_trainval", counts=(4, 2, 0), hw=(36, 48))
    out = tmp_path / "d.json"
    env = {**{k: v for k, v in os.environ.items() if k != "LESSON3_RUN_DIR"}, "THROUGHPUT_DATA": str(tmp_path / "data")}
    cmd = [sys.executable, "benchmarks/throughput.py", "--epoch_vs_plain", "--device", "cpu", "--cases", "camvid-192x256", "planet-128",
           "--epochs", "3", "--batches", "1", "--repeats", "1", "--out", str(out), "--", "--data.init_args.batch_size", "2"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    camvid, planet = json.loads(out.read_text())["rows"]
    assert planet["skipped"].endswith("planet_sample_200 not present")
    assert len(camvid["project_runs"][0]) == len(camvid["plain_runs"][0]) == 3 and camvid["store"]  # the store was used
    pairs = [a / b for a, b in list(zip(camvid["project_runs"][0], camvid["plain_runs"][0]))[1:]]
    assert camvid["ratio"] == pytest.approx(sum(pairs) / 2) and camvid["ratio_range"] == [min(pairs), max(pairs)]
    assert "arms interleaved epoch by epoch" in res.stdout


@pytest.mark.slow
def test_recipes_benchmark_runs_both_arms(tmp_path):
    """benchmarks/recipes.py on a tiny SegNet-layout CamVid: both arms train 1 epoch, both rows in the JSON."""
    from test_camvid import write_segnet

    root = write_segnet(tmp_path / "segnet", counts=(4, 2, 0), hw=(36, 48))
    out = tmp_path / "recipes.json"
    env = {k: v for k, v in os.environ.items() if k != "LESSON3_RUN_DIR"}
    cmd = [sys.executable, "benchmarks/recipes.py", "--task", "camvid", "--root", str(root), "--size", "40", "48", "--epochs", "1", "--seeds", "0",
           "--out", str(out), "--", "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert sorted(row["arm"] for row in r["rows"]) == ["plain", "project"]
    md = out.with_suffix(".md").read_text()
    for row in r["rows"]:
        assert row["train_samples"] == 4  # one epoch over the 4 training frames, in both arms
        for name in ("val/acc", "val/miou"):  # one seed: each arm's summary is its one run's scores, and the md shows them
            assert r["summary"][row["arm"]][name] == {"mean": row["metrics"][name], "spread": 0.0}, (row["arm"], name)
        assert f"| {row['arm']} | 0 | {row['metrics']['val/acc']:.4f} | {row['metrics']['val/miou']:.4f} |" in md
    assert md.count("| project |") == 1


def test_recipes_benchmark_bad_folder_is_one_line(tmp_path):
    def run(root, *extra):
        return subprocess.run([sys.executable, "benchmarks/recipes.py", "--task", "camvid", "--root", str(root), "--epochs", "1", *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    res = run(tmp_path / "nope")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such data folder"]
    (tmp_path / "planet" / "train").mkdir(parents=True)  # not a CamVid layout
    res = run(tmp_path / "planet")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "not a CamVid folder" in lines[0], res.stderr
    res = run(tmp_path / "planet", "--size", "8", "8")
    assert res.returncode == 2 and "--data.size" in res.stderr.strip().splitlines()[-1], res.stderr


def test_recipe_stages_scale_to_the_benchmark_budget():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from recipes import scale_stages

    stages = [{"epochs": 12, "lr": "base", "size": [180, 240]}, {"epochs": 12, "lr": "base/2", "size": [360, 480]}]
    out = scale_stages(stages, 6, [120, 160])
    assert [s["epochs"] for s in out] == [3, 3] and [s["size"] for s in out] == [[60, 80], [120, 160]]
    assert [s["epochs"] for s in scale_stages([{"epochs": 1}, {"epochs": 9}], 3, None)] == [1, 2]
    assert scale_stages([{"epochs": 4, "size": 0.5}, {"epochs": 4, "size": 1.0}], 12, [96, 128]) == [{"epochs": 6, "size": 0.5}, {"epochs": 6, "size": 1.0}]


def test_plain_loop_flip_mirrors_points_and_masks():
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from recipes import hflip

    from tasks.pointreg import PointRegressionTask, to_pixels

    img = torch.zeros(1, 3, 4, 6, dtype=torch.uint8)
    img[0, :, 1, 4] = 255  # a dot at (x=4, y=1)
    target = torch.tensor([[(4 + 0.5) / 6 * 2 - 1, (1 + 0.5) / 4 * 2 - 1]])
    task = PointRegressionTask.__new__(PointRegressionTask)
    out = hflip(task, {"image": img, "target": target, "mask": img[:, 0]})
    ys, xs = torch.nonzero(out["image"][0, 0], as_tuple=True)
    assert (xs.item(), ys.item()) == (1, 1)
    assert torch.allclose(to_pixels(out["target"], torch.tensor([[4, 6]])), torch.tensor([[1.0, 1.0]]))
    assert torch.equal(out["mask"], out["image"][:, 0])


def test_lr_suggestion_cv_pools_the_folds_frames():
    """lr_suggestion_cv.summary: each run's error is the mean over every fold, ranked against the grid's best."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from lr_suggestion_cv import summary

    rows = [{"fold": k, "label": lab, "lr": lr, "px_error": err}
            for k, errs in enumerate([(10.0, 30.0, 12.0), (20.0, 10.0, 16.0)])
            for lab, lr, err in zip(("grid-0.001", "grid-0.003", "find-edge"), ("1e-03", "3e-03", [2e-3]), errs)]
    md, s = summary(rows + [{"fold": 0, "label": "find-valley", "lr": None, "px_error": None}])
    assert s["mean_px_error"] == {"grid-0.001": 15.0, "grid-0.003": 20.0, "find-edge": 14.0}
    assert s["grid_best"] == 15.0 and s["ratios"]["grid-0.003"] == 0.75 and s["ratios"]["find-edge"] == pytest.approx(15 / 14)
    assert "| find-edge | 2.0e-03, 2.0e-03 | 14.0 | 1.071 | 12.0 16.0 |" in md and "| find-valley | None | failed | | |" in md


def test_lr_suggestion_find_stages_sets_the_rule_where_the_recipe_finds_or_uses_base():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from lr_suggestion import find_stages

    staged = [{"epochs": 1, "freeze_to": -1, "lr": 3e-2}, {"epochs": 2, "lr": ["base/4", "base"]}, {"epochs": 1, "lr": "base/2"}]
    assert find_stages(staged, "sweep") == [staged[0], {"epochs": 2, "lr": ["find/4", "find"], "rule": "sweep"}, {"epochs": 1, "lr": "lr/2"}]
    found = [{"epochs": 40, "freeze_to": 0, "lr": "find", "rule": "edge"}]  # configs/camvid.yaml finds its LR already
    assert find_stages(found, "sweep") == [{**found[0], "rule": "sweep"}]
    with pytest.raises(SystemExit, match="nothing to find"):
        find_stages([{"epochs": 1, "lr": 1e-3}], "edge")
