"""The run folder ``RUNS_DIR/NAME/YYYYmmdd-HHMMSS[-k]/`` and ``--ckpt_path last``.

A fresh folder per run (shared with DDP child processes through ``LESSON3_RUN_DIR``), ``--run_dir``
to name one, and a fit resumed with ``--ckpt_path last`` goes on in the folder it resumes from.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

RUN_STAMP = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?$")  # new_run_dir's folder names
RESUMABLE = ("last.ckpt", "on_exception.ckpt")
LOCK = ".run.lock"  # held while a run writes into its folder
_CLAIMED: set[Path] = set()
_CREATED: set[Path] = set()  # run folders this process made


def rank_zero_print(msg: str) -> None:
    """``print`` on the first process of the first node only."""
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        print(msg, flush=True)


def new_run_dir(runs_dir: str, name: str) -> Path:
    """A fresh ``runs_dir/name/YYYYmmdd-HHMMSS[-k]`` folder (shared with DDP child processes)."""
    inherited = os.environ.get("LESSON3_RUN_DIR")
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(inherited)
    base = Path(runs_dir) / name / time.strftime("%Y%m%d-%H%M%S")
    path, k = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            break
        except FileExistsError:
            k += 1
            path = base.with_name(f"{base.name}-{k}")
    os.environ["LESSON3_RUN_DIR"] = str(path.resolve())
    _CREATED.add(path.resolve())
    return path.resolve()


def claim(run_dir: Path) -> None:
    """Hold ``run_dir``'s lock for this run (the first process of a DDP job; released when it ends):
    a second run into the same folder stops with one line instead of mixing its files in."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        return
    from datamodules.locks import Busy, hold

    try:
        hold(run_dir / LOCK)
        _CLAIMED.add(run_dir / LOCK)
    except OSError:  # a read-only folder: nothing to guard (the run's own writes say what is wrong)
        return
    except Busy as e:
        raise SystemExit(f"error: {run_dir} is in use by another run (process {e.pid}): wait for it to end or pass another --run_dir.") from None


def claimed() -> set[Path]:
    """The run folders' locks this process holds now."""
    return set(_CLAIMED)


def unclaim_all(keep: set[Path] = frozenset()) -> None:
    """Release the run folders this process holds but those in ``keep`` (another command's, e.g. a
    ``cli_main(run=False)`` whose trainer has yet to run), so a notebook's next command may reuse
    them; one it made and left empty (an ``export --out`` elsewhere) goes."""
    from datamodules.locks import release

    for lock in _CLAIMED - set(keep):
        _CLAIMED.discard(lock)
        release(lock)
        folder = lock.parent.resolve()
        try:
            empty = folder in _CREATED and {p.name for p in folder.iterdir()} <= {LOCK}
        except OSError:  # gone already (a test's temporary folder), or unreadable: nothing to tidy
            continue
        if empty:
            shutil.rmtree(folder, ignore_errors=True)


def _resumable(folder: Path) -> list[Path]:
    return [p for p in (folder / "checkpoints" / n for n in RESUMABLE) if p.is_file()]


def newest_loadable(found: list[Path]) -> Path:
    """The newest of ``found`` that loads (a damaged one is skipped with one line), else the newest:
    its load then fails with its own one-line error."""
    from callbacks.checkpoint_io import CheckpointError, check_loadable

    ordered = sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in ordered:
        try:
            check_loadable(path)
            return path
        except CheckpointError as e:
            if path is not ordered[-1]:
                rank_zero_print(f"--ckpt_path last: skipping {e}")
    return ordered[0]


def find_last(runs_dir: str, name: str, run_dir: str | None = None) -> str:
    """``--ckpt_path last``: the newer loadable one of ``checkpoints/last.ckpt`` and ``on_exception.ckpt``
    of ``run_dir``, or without one, of the newest run of this task (``RUNS_DIR/NAME/<time>``) that has one."""
    if run_dir:
        found = _resumable(Path(run_dir))
        if not found:
            raise SystemExit(f"error: --ckpt_path last: no last.ckpt or on_exception.ckpt in {Path(run_dir) / 'checkpoints'}.")
    else:
        stamped = [(m.group(1), int(m.group(2) or 1), d) for d in (Path(runs_dir) / name).glob("*") if (m := RUN_STAMP.match(d.name)) and d.is_dir()]
        found = next((c for *_, d in sorted(stamped, key=lambda t: t[:2], reverse=True) if (c := _resumable(d))), None)
        if not found:
            raise SystemExit(f"error: --ckpt_path last: no run under {Path(runs_dir) / name} has checkpoints/last.ckpt or on_exception.ckpt.")
    return str(newest_loadable(found))


def default_name(cfg) -> str:
    """The run name without ``--name``: the datamodule's class name (``CamVidDataModule``: camvid)."""
    cls = str(cfg.data.get("class_path", "run")).rsplit(".", 1)[-1]
    return cls.replace("DataModule", "").lower() or "run"


def choose_run_dir(cfg, subcommand: str | None) -> Path:
    """The run folder for ``cfg`` (made), resolving ``--ckpt_path last`` in ``cfg`` on the way."""
    name = cfg.get("name") or default_name(cfg)
    resumed = None
    if subcommand in ("fit", "validate", "test", "predict", None) and cfg.get("ckpt_path") == "last":
        cfg.ckpt_path = find_last(cfg.runs_dir, name, cfg.get("run_dir"))
        if subcommand in ("fit", None) and not cfg.get("run_dir"):
            resumed = Path(cfg.ckpt_path).resolve().parent.parent  # a resumed fit goes on in its own folder
            os.environ["LESSON3_RUN_DIR"] = str(resumed)
    run_dir = Path(cfg.run_dir).resolve() if cfg.get("run_dir") else resumed or new_run_dir(cfg.runs_dir, name)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def point_into(cfg, run_dir: Path, name: str) -> None:
    """The trainer's root, the checkpoints and the W&B logger of ``cfg`` into ``run_dir``."""
    cfg.trainer.default_root_dir = str(run_dir)
    cfg.checkpoint.dirpath = str(run_dir / "checkpoints")
    logger = cfg.trainer.get("logger")
    if logger not in (None, False, True) and not isinstance(logger, list) and "WandbLogger" in str(logger.get("class_path", "")):
        logger.init_args.save_dir = str(run_dir)
        logger.init_args.name = logger.init_args.get("name") or f"{name}-{run_dir.name}"
        logger.init_args.project = logger.init_args.get("project") or f"lesson3-{name}"
