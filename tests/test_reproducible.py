"""Same seed, same run; a killed run resumed with ``--ckpt_path last`` ends where the uninterrupted
one does; SIGTERM saves and exits non-zero; a plain ``fit`` never resumes by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from datamodules import CamVidDataModule
from datamodules.batch_augment import BatchAugment
from datamodules.imdb import BucketBatchSampler
from datamodules.loaders import EpochRandomSampler, EpochSampler

ROOT = Path(__file__).resolve().parents[1]
# CamVid's built-in sample, tiny: 2 epochs of 4 batches of 4 images at 32x32, 1 validation batch
SMALL = ["--task", "camvid", "--data.init_args.size", "[32,32]", "--data.init_args.batch_size", "4", "--trainer.max_epochs", "2",
         "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "1", "--pictures.show_batch", "false", "--pictures.show_results", "false"]


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# -- the pieces -------------------------------------------------------------------


def epoch_batches(dm: CamVidDataModule, epoch: int, resume: dict | None = None) -> list[dict]:
    if resume:
        dm.load_state_dict({"train_position": resume})  # as Lightning does from a checkpoint
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_augmented_batches_depend_on_seed_and_epoch_only_not_on_workers(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "42")
    batches = {}
    for workers in (0, 2):
        dm = CamVidDataModule(size=[32, 32], batch_size=4, num_workers=workers)
        dm.setup("fit")
        torch.manual_seed(workers)  # the global generators play no part
        np.random.seed(workers)
        batches[workers] = [epoch_batches(dm, e) for e in (0, 1)]
    for e in (0, 1):
        for a, b in zip(batches[0][e], batches[2][e]):
            assert a["name"] == b["name"] and torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    first = [b["name"] for b in batches[0][0]], [b["name"] for b in batches[0][1]]
    assert first[0] != first[1]  # another epoch, another order
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    dm = CamVidDataModule(size=[32, 32], batch_size=4, num_workers=0)
    dm.setup("fit")
    other = epoch_batches(dm, 0)
    assert [b["name"] for b in other] != first[0]  # another seed, another order


def test_a_resumed_epoch_skips_the_batches_already_trained_on(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "42")
    dm = CamVidDataModule(size=[32, 32], batch_size=4, num_workers=0)
    dm.setup("fit")
    full = epoch_batches(dm, 1)
    rest = epoch_batches(dm, 1, resume={"epoch": 1, "batches": 3})
    assert len(rest) == len(full) - 3
    for a, b in zip(full[3:], rest):
        assert a["name"] == b["name"] and torch.equal(a["image"], b["image"])  # same items, same augmentation
    assert len(epoch_batches(dm, 2, resume={"epoch": 1, "batches": 3})) == len(full)  # only for its own epoch


def test_epoch_samplers_are_reproducible_and_split_across_processes():
    data = list(range(10))
    a = [list(EpochSampler(data, 3, rank=r, num_replicas=2)) for r in (0, 1)]
    assert sorted(i for part in a for i, _ in part) == data and len(a[0]) == len(a[1]) == 5
    assert list(EpochSampler(data, 3)) == list(EpochSampler(data, 3))
    s = EpochSampler(data, 3)
    s.set_epoch(1)
    assert list(s) != list(EpochSampler(data, 3))
    lengths = list(np.random.default_rng(0).integers(5, 500, 100))
    orders = []
    for _ in range(2):
        sampler = EpochRandomSampler(range(100), seed=5)
        sampler.set_epoch(2)
        orders.append(list(BucketBatchSampler(sampler, 8, lengths=lengths, shuffle=True, chunk=2)))
    assert orders[0] == orders[1]
    bucket = BucketBatchSampler(sampler, 8, lengths=lengths, shuffle=True, chunk=2)
    bucket.skip = 4
    assert list(bucket) == orders[0][4:]


def test_device_augmentation_draws_depend_on_the_batch_count_only():
    def FakeTrainer(done):  # noqa: N802 - what generator_for reads of a Trainer
        progress = SimpleNamespace(total=SimpleNamespace(ready=done))
        return SimpleNamespace(global_rank=0, fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))

    aug = BatchAugment(seed=42, max_rotate=20, p_affine=1.0)
    batch = {"image": torch.rand(4, 3, 16, 16)}
    torch.manual_seed(0)
    a = aug(batch, aug.generator_for(FakeTrainer(5)))["image"]
    torch.manual_seed(1)
    b = aug(batch, aug.generator_for(FakeTrainer(5)))["image"]
    c = aug(batch, aug.generator_for(FakeTrainer(6)))["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ckpt_path_last_looks_in_the_given_run_or_the_newest_run(tmp_path):
    from cli.run_folder import find_last

    runs = tmp_path / "runs"

    def ckpt(run: str, name: str) -> Path:
        p = runs / "camvid" / run / "checkpoints" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        return p

    old = ckpt("20240101-000000", "last.ckpt")
    ckpt("20240102-000000-2", "last.ckpt")
    newest = ckpt("20240102-000000-10", "on_exception.ckpt")
    (runs / "camvid" / "20240103-000000").mkdir()  # a newer run without a checkpoint (failed at setup)
    os.utime(old, (2e9, 2e9))  # touched later than the others: the run still decides, not the file time
    assert find_last(str(runs), "camvid") == str(newest)
    assert find_last(str(runs), "camvid", str(old.parent.parent)) == str(old)
    exc = ckpt("20240101-000000", "on_exception.ckpt")
    os.utime(exc, (2.1e9, 2.1e9))
    assert find_last(str(runs), "camvid", str(old.parent.parent)) == str(exc)  # the newer of the run's two
    with pytest.raises(SystemExit, match="no last.ckpt or on_exception.ckpt in"):
        find_last(str(runs), "camvid", str(runs / "camvid" / "20240103-000000"))
    with pytest.raises(SystemExit, match="no run under"):
        find_last(str(runs), "planet")


# -- whole runs in this process ---------------------------------------------------------


FIRST_STEPS: list[int] = []


class FirstStep(pl.Callback):
    """Records the global step of the first training batch of each fit."""

    def on_train_start(self, trainer, pl_module):
        FIRST_STEPS.append(trainer.global_step)


@pytest.mark.slow
def test_plain_fit_in_a_used_run_folder_starts_fresh(run_cli, tmp_path):
    run_dir = tmp_path / "reused"
    one = ["--task", "camvid", "--data.init_args.size", "[32,32]", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
           "--pictures.show_batch", "false", "--pictures.show_results", "false", "--data.init_args.num_workers", "0", "--run_dir", str(run_dir)]
    run_cli([*one, "--trainer.max_epochs", "1"])
    last = run_dir / "checkpoints" / "last.ckpt"
    (run_dir / "checkpoints" / "on_exception.ckpt").write_bytes(last.read_bytes())  # as a crashed run leaves it
    FIRST_STEPS.clear()
    cli, _ = run_cli([*one, "--trainer.max_epochs", "2", "--trainer.callbacks+=test_reproducible.FirstStep"])
    assert cli.trainer.ckpt_path is None and FIRST_STEPS == [0]
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 4  # 2 epochs of 2 from scratch


# -- killed runs (real signals, so in a subprocess) ---------------------------------------


def train(args: list[str], run_dir: Path, kill: tuple[int, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", *SMALL, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
           "--trainer.enable_model_summary", "false", "--runs_dir", str(run_dir.parent), "--run_dir", str(run_dir), *args]
    if kill:
        cmd.append('--trainer.callbacks+={"class_path": "tests.killer.KillAt", "init_args": {"step": %d, "sig": "%s"}}' % kill)
    env = {k: v for k, v in os.environ.items() if k != "LESSON3_RUN_DIR"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("reproducible") / "full"
    p = train([], run)
    assert p.returncode == 0, p.stderr[-2000:]
    return run


@pytest.mark.slow
def test_two_runs_with_one_seed_are_identical_with_and_without_workers(uninterrupted):
    def result(run: Path):
        return json.loads((run / "metrics.json").read_text())["metrics"], weights(run / "checkpoints" / "last.ckpt")

    first = result(uninterrupted)  # the machine's default loader workers
    for workers in ("2", "0"):
        run = uninterrupted.parent / f"workers-{workers}"
        p = train(["--data.init_args.num_workers", workers], run)
        assert p.returncode == 0, p.stderr[-2000:]
        metrics, w = result(run)
        assert metrics == first[0] and max_abs_diff(w, first[1]) == 0.0
    run = uninterrupted.parent / "seed-7"
    assert train(["--seed_everything", "7"], run).returncode == 0
    assert result(run)[0] != first[0]  # the seed matters


@pytest.mark.slow
@pytest.mark.parametrize("every, kill_at, resumes_at", [(3, 7, 6), (0, 6, 4)], ids=["mid-epoch", "epoch-end"])
def test_kill_9_and_resume_ends_with_the_weights_of_the_uninterrupted_run(uninterrupted, every, kill_at, resumes_at):
    run = uninterrupted.parent / f"killed-{every}"
    opts = ["--last_every_n_steps", str(every)]
    p = train(opts, run, kill=(kill_at, "KILL"))
    assert p.returncode == -9, p.stderr[-2000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == resumes_at
    p = train([*opts, "--ckpt_path", "last"], run)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"Resuming from {run / 'checkpoints' / 'last.ckpt'}" in p.stdout
    assert "exists and is not empty" not in p.stderr  # going on in its own folder is expected
    assert max_abs_diff(weights(run / "checkpoints" / "last.ckpt"), weights(uninterrupted / "checkpoints" / "last.ckpt")) == 0.0
    full, resumed = (json.loads((r / "metrics.json").read_text())["metrics"] for r in (uninterrupted, run))
    assert {k: v for k, v in resumed.items() if k.startswith("val/")} == {k: v for k, v in full.items() if k.startswith("val/")}


@pytest.mark.slow
def test_sigterm_saves_exits_non_zero_and_resumes_exactly(uninterrupted):
    run = uninterrupted.parent / "terminated"
    p = train(["--last_every_n_steps", "0"], run, kill=(6, "TERM"))
    assert p.returncode == 143, p.stderr[-2000:]
    saved = run / "checkpoints" / "on_exception.ckpt"
    assert torch.load(saved, weights_only=True)["global_step"] == 6
    assert "error: stopped by SIGTERM at step 6" in p.stderr
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["global_step"] == 6
    p = train(["--ckpt_path", "last"], run)  # on_exception.ckpt is newer than last.ckpt (step 4)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"Resuming from {saved}" in p.stdout
    assert max_abs_diff(weights(run / "checkpoints" / "last.ckpt"), weights(uninterrupted / "checkpoints" / "last.ckpt")) == 0.0
    assert not saved.exists()  # a fit that ends normally removes it


def test_ctrl_c_saves_and_writes_metrics_interrupted(tmp_path):
    """Ctrl-C (SIGINT: Lightning's graceful stop, exit 1) leaves on_exception.ckpt and a metrics.json
    that says the run was interrupted, as SIGTERM does."""
    run = tmp_path / "ctrl-c"
    p = train(["--last_every_n_steps", "0"], run, kill=(3, "INT"))
    assert p.returncode == 1, p.stderr[-2000:]
    saved = run / "checkpoints" / "on_exception.ckpt"
    assert torch.load(saved, weights_only=True)["global_step"] == 3
    assert f"error: stopped by Ctrl-C at step 3; saved {saved}" in p.stderr
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["global_step"] == 3 and m["error"].startswith("stopped by Ctrl-C at step 3")
