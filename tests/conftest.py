"""Test environment: offline everything, a per-session sample cache, CLI and data helpers."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Nothing may wait on the network; set before wandb / transformers / albumentations are imported.
os.environ["WANDB_MODE"] = "offline"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ["WANDB_SILENT"] = "true"
os.environ["MPLBACKEND"] = "Agg"
if "LESSON3_CACHE" not in os.environ:
    # Removed when the session ends (``pytest_sessionfinish``): the samples and decode-once stores in it would
    # otherwise pile up in /tmp, one folder per run.
    _OWN_CACHE = tempfile.mkdtemp(prefix="lesson3-cache-")
    os.environ["LESSON3_CACHE"] = _OWN_CACHE
else:
    _OWN_CACHE = None

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_sessionfinish(session, exitstatus):
    """Remove the session's own sample cache (never one the caller set)."""
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def shared(name: str) -> Path:
    """A real sample under ``../shared/data``; skips the test where it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not present (real samples live only in the developers' ../shared)")
    return path


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Run ``train.cli_main`` with runs under ``tmp_path/runs`` and W&B off unless asked for.

    Returns a function ``(args, logger=False) -> (cli, run_dir)``.
    """
    from train import cli_main

    monkeypatch.delenv("LESSON3_RUN_DIR", raising=False)

    def run(args: list[str], logger: bool = False):
        extra = ["--runs_dir", str(tmp_path / "runs")]
        if not logger:
            extra += ["--trainer.logger", "false"]
        extra += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        cli = cli_main([*args, *extra])
        return cli, cli.run_dir

    return run


@pytest.fixture
def printed_config(capsys):
    """``train.cli_main([*args, "--print_config"])`` as ``(config dict, stderr)``."""
    import yaml

    from train import cli_main

    def printed(args: list[str]):
        with pytest.raises(SystemExit):
            cli_main([*args, "--print_config"])
        out = capsys.readouterr()
        return yaml.safe_load(out.out), out.err

    return printed
