"""``--task NAME``: a shortcut for ``fit --config configs/NAME.yaml`` (it also works after another
subcommand: ``python train.py validate --task camvid --ckpt_path ...``). A config whose first line is
``# extends: BASE`` is loaded on top of ``configs/BASE.yaml``; without a data root the built-in
sample's overlays (``configs/sample/NAME.yaml``) follow each config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SAMPLE_DIR = CONFIG_DIR / "sample"  # overlays for the built-in samples (see with_sample_overlays)


def task_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_chain(name: str) -> list[Path]:
    """``configs/NAME.yaml`` preceded by the configs it extends (first line ``# extends: BASE``)."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"error: unknown task '{name}'. Known tasks: {', '.join(task_names())}")
    first = path.read_text().splitlines()[:1]
    if first and first[0].startswith("# extends:"):
        return config_chain(first[0].split(":", 1)[1].strip()) + [path]
    return [path]


def _take_task(args: list[str]) -> str | None:
    """Remove ``--task NAME`` / ``--task=NAME`` from ``args`` (in place); the name, or None."""
    for i, a in enumerate(args):
        if a == "--task":
            if i + 1 >= len(args):
                raise SystemExit(f"error: --task needs a name. Known tasks: {', '.join(task_names())}")
            name = args[i + 1]
            del args[i : i + 2]
            return name
        if a.startswith("--task="):
            del args[i]
            return a.split("=", 1)[1]
    return None


def expand_task(args: list[str]) -> list[str]:
    """Replace ``--task NAME`` by ``--config`` options right after the subcommand (``fit`` if none)."""
    args = list(args)
    name = _take_task(args)
    if name is None:
        return with_run_config(args)
    if not args or args[0].startswith("-"):
        args.insert(0, "fit")
    chain = config_chain(name)
    if not root_given(args[1:]):
        chain = with_sample_overlays(chain)
    configs = [x for p in chain for x in ("--config", str(p))]
    return [args[0], *configs, "--name", name, *args[1:]]


RUN_CONFIG_SUBCOMMANDS = ("export", "interpret", "validate", "test", "predict")


def run_config(ckpt_path: str) -> Path | None:
    """The ``config.yaml`` of the run folder a checkpoint was written in (``<run>/checkpoints/X.ckpt``), or None."""
    path = Path(ckpt_path).expanduser()
    config = path.parent.parent / "config.yaml"
    return config if path.is_file() and path.parent.name == "checkpoints" and config.is_file() else None


def with_run_config(args: list[str]) -> list[str]:
    """``export|interpret|validate|test|predict --ckpt_path RUN/checkpoints/X.ckpt`` without ``--task``
    or ``--config``: the run's own ``config.yaml`` (network, data, classes, sizes) as the config, so
    the checkpoint alone is enough; options after it still override."""
    if not args or args[0] not in RUN_CONFIG_SUBCOMMANDS or any(a in ("--config", "-c") or a.startswith("--config=") for a in args):
        return args
    ckpt = next((a.split("=", 1)[1] for a in args if a.startswith("--ckpt_path=")), None)
    if ckpt is None and "--ckpt_path" in args[:-1]:
        ckpt = args[args.index("--ckpt_path") + 1]
    config = run_config(ckpt) if ckpt else None
    if config is None:
        return args
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"Config: {config} (the run that wrote {Path(ckpt).name})", file=sys.stderr, flush=True)
    return [args[0], "--config", str(config), *args[1:]]


def with_sample_overlays(chain: list[Path]) -> list[Path]:
    """Each config of the chain followed by its ``configs/sample/NAME.yaml``, where there is one:
    the small sizes and epochs that keep a run on the built-in sample to a few CPU minutes.
    Applied only when no data root is given, so a real-data run never inherits them
    (``--print_config`` shows what will run)."""
    out, found = [], []
    for p in chain:
        out.append(p)
        if (SAMPLE_DIR / p.name).is_file():
            out.append(SAMPLE_DIR / p.name)
            found.append(f"configs/sample/{p.name}")
    if found and os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"No --data.init_args.root: the built-in sample, with {', '.join(found)} on top", file=sys.stderr, flush=True)
    return out


def root_given(args: list[str]) -> bool:
    """Whether the command line, or a ``--config`` file on it, names ``data.(init_args.)root``."""
    keys = ("--data.root", "--data.init_args.root")
    for i, a in enumerate(args):
        if a in keys or a.split("=", 1)[0] in keys:
            value = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            return value.strip().lower() not in ("", "null", "none")
        if a == "--config" and i + 1 < len(args) and Path(args[i + 1]).is_file():
            data = (yaml.safe_load(Path(args[i + 1]).read_text()) or {}).get("data") or {}
            if isinstance(data, dict) and (data.get("root") or (data.get("init_args") or {}).get("root")):
                return True
    return False
