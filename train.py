"""Command line: ``python train.py --task camvid`` or any LightningCLI command.

``--task NAME`` is a shortcut for ``fit --config configs/NAME.yaml`` (it also works after
another subcommand: ``python train.py validate --task camvid --ckpt_path ...``). A config
whose first line is ``# extends: BASE`` is loaded on top of ``configs/BASE.yaml``.

Every run gets a folder ``runs/<name>/<time>/`` holding ``config.yaml``, ``metrics.json``,
``checkpoints/``, ``pictures/``, ``predictions/`` and the offline W&B run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import torch
import yaml
from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks import MemoryFormat, Pictures, PredictionWriter, Recorder, SaveLast, Stages
from callbacks.predictions import ExceptionCheckpoint
from callbacks.stages import stage_size
from callbacks.interpret import Interpret
from callbacks.checkpoint_io import CheckpointError, check_loadable
from callbacks.nan_guard import NanGuard, TrainingDiverged, finite_json
from callbacks.lr_finder import find_lr
from callbacks.speed import auto_precision
from datamodules.base import DataError
from models.weights import WeightsUnavailableError
from serving.bundle import is_bundle

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SAMPLE_DIR = CONFIG_DIR / "sample"  # overlays for the built-in samples (see with_sample_overlays)
VERSIONED = ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "segmentation-models-pytorch", "timm", "albumentations", "transformers", "wandb")
# values a datamodule knows that its task (or network) needs; links whose source or
# target a given task lacks are skipped by jsonargparse
DATA_TO_MODEL = {
    "num_classes": ["model.init_args.num_classes", "model.init_args.net.init_args.num_classes"],
    "void_index": ["model.init_args.void_index"],
    "classes": ["model.init_args.class_names"],
    "band_stats": ["model.init_args.net.init_args.band_stats"],  # extra bands' normalisation (datamodules/bands.py)
}


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


def expand_task(args: list[str]) -> list[str]:
    """Replace ``--task NAME`` by ``--config`` options right after the subcommand (``fit`` if none)."""
    args = list(args)
    name = None
    for i, a in enumerate(args):
        if a == "--task":
            if i + 1 >= len(args):
                raise SystemExit(f"error: --task needs a name. Known tasks: {', '.join(task_names())}")
            name = args[i + 1]
            del args[i : i + 2]
            break
        if a.startswith("--task="):
            name = a.split("=", 1)[1]
            del args[i]
            break
    if name is None:
        return args
    if not args or args[0].startswith("-"):
        args.insert(0, "fit")
    chain = config_chain(name)
    if not root_given(args[1:]):
        chain = with_sample_overlays(chain)
    configs = [x for p in chain for x in ("--config", str(p))]
    return [args[0], *configs, "--name", name, *args[1:]]


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


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


RUN_STAMP = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?$")  # new_run_dir's folder names


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
    return path.resolve()


class KitTrainer(Trainer):
    """Lightning's Trainer plus the ``lr_find`` subcommand."""

    def lr_find(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        num_steps: int = 100,
        rule: str | None = None,
        freeze_to: int | None = None,
    ) -> float | None:
        """LR range test: plot, suggestion, and the model and optimizer left as they were.

        Args:
            min_lr: first LR of the sweep.
            max_lr: last LR of the sweep (it stops early when the loss diverges).
            num_steps: batches in the sweep.
            rule: ``valley``, ``steepest`` or ``minimum`` (default: the first stage's, else valley).
            freeze_to: first trainable layer group (default: the first stage's, else 0 = all).
        """
        first = next((c.stages[0] for c in self.callbacks if isinstance(c, Stages)), None)
        rule = rule or (first.rule if first else "valley")
        freeze_to = freeze_to if freeze_to is not None else (first.freeze_to if first else 0)
        datamodule.setup("fit")
        device = self.strategy.root_device
        model.to(device)
        n_groups = len([g for g in model.layer_groups() if g])
        start = freeze_to if freeze_to >= 0 else max(0, n_groups + freeze_to)
        mults = [0.0 if i < start else 1.0 for i in range(n_groups)]
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(self.precision)) if device.type == "cuda" else None
        sugg, every, plot = find_lr(
            model, datamodule.train_dataloader(), Path(self.default_root_dir), rule=rule, min_lr=min_lr,
            max_lr=max_lr, num_steps=num_steps, group_mults=mults, device=device, autocast_dtype=dtype,
        )
        for r, s in every.items():
            print(f"  {r:9s} {s.lr:.2e}  ({s.reason})" if s.lr is not None else f"  {r:9s} -         ({s.reason})")
        print(f"Suggested LR ({rule}): {sugg.lr:.2e}" if sugg.lr is not None else f"No LR suggestion ({rule}): {sugg.reason}")
        print(f"Plot: {plot}")
        from pytorch_lightning.loggers import WandbLogger

        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="pictures/lr_find", images=[str(plot)])
                logger.experiment.summary["lr_find/suggestion"] = sugg.lr
        return sugg.lr

    def export(self, model: LightningModule, datamodule: LightningDataModule | None = None, ckpt_path: str | None = None, out: str | None = None) -> str:
        """Write a self-contained inference bundle for ``python serve.py`` (see ``serving/bundle.py``).

        Args:
            ckpt_path: the trained weights: a checkpoint (e.g. ``runs/<task>/<time>/checkpoints/last.ckpt``) or a bundle.
            out: the bundle folder (default: ``<run folder>/bundle``).
        """
        from serving.bundle import BundleError, export_bundle, load_weights, trained_input_size

        if ckpt_path is None:
            raise SystemExit("error: export needs --ckpt_path: a checkpoint such as runs/<task>/<time>/checkpoints/last.ckpt, or a bundle.")
        # the size training ended at: from the checkpoint's run config, else this command's stages/data
        stages = [s.size for c in self.callbacks if isinstance(c, Stages) for s in c.stages if s.size is not None]
        size = trained_input_size(ckpt_path) or (stage_size(stages[-1], datamodule.size) if stages else getattr(datamodule, "size", None))
        try:
            load_weights(model, ckpt_path)
            path = export_bundle(model, out or Path(self.default_root_dir) / "bundle", size, name=Path(self.default_root_dir).parent.name, source=str(ckpt_path))
        except BundleError as e:
            raise SystemExit(f"error: {e}") from None
        print(f"Bundle: {path}  (serve it: python serve.py {path})", flush=True)
        return str(path)

    def interpret(self, model: LightningModule, datamodule: LightningDataModule | None = None, ckpt_path: str | None = None) -> str:
        """What the model gets wrong on the validation split: tables and pictures in ``<run>/interpret/`` (and W&B).

        Args:
            ckpt_path: the trained weights: a checkpoint of this task (e.g. ``runs/<task>/<time>/checkpoints/last.ckpt``) or a bundle.
        """
        from callbacks.interpret import interpret_checkpoint
        from serving.bundle import load_weights

        return interpret_checkpoint(self, model, datamodule, ckpt_path, load_weights)


class KitCLI(LightningCLI):
    """LightningCLI with the run folder, data-to-model links, pictures and ``metrics.json``."""

    def add_arguments_to_parser(self, parser):
        parser.add_argument("--name", type=str | None, default=None, help="run name: the folder is RUNS_DIR/NAME/TIME (default: the datamodule's name)")
        parser.add_argument("--runs_dir", type=str, default="runs", help="where run folders are made")
        parser.add_argument("--run_dir", type=str | None, default=None, help="use exactly this run folder (e.g. for torchrun/SLURM jobs)")
        parser.add_argument("--last_every_n_steps", type=int, default=500, help="also write last.ckpt every N optimizer steps within an epoch (0: at epoch ends only), so a killed run resumes mid-epoch")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # the best epoch(s) by the task's monitor; last.ckpt is written every epoch by SaveLast
        parser.set_defaults({"checkpoint.save_last": False, "checkpoint.filename": "epoch{epoch:03d}", "checkpoint.auto_insert_metric_name": False})
        parser.add_lightning_class_args(Pictures, "pictures")
        parser.add_lightning_class_args(MemoryFormat, "memory")
        parser.add_lightning_class_args(Interpret, "interpretation")  # --interpretation.enabled false: none at the end of fit
        for source, targets in DATA_TO_MODEL.items():
            for target in targets:
                parser.link_arguments(f"data.{source}", target, apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """The model comes from the config and command line only; ``--ckpt_path`` brings the weights
        and training state (Lightning would otherwise parse the checkpoint's hparams over the options)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}, "export": {"model", "datamodule"}, "interpret": {"model", "datamodule"}}

    def before_instantiate_classes(self):
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.get("precision") is None:
            cfg.trainer.precision = auto_precision(cfg.trainer.get("accelerator"))
        name = cfg.get("name") or self._default_name(cfg)
        resumed = None
        if self.subcommand in ("fit", "validate", "test", "predict", None) and cfg.get("ckpt_path") == "last":
            cfg.ckpt_path = self._find_last(cfg.runs_dir, name, cfg.get("run_dir"))
            if self.subcommand in ("fit", None) and not cfg.get("run_dir"):
                resumed = Path(cfg.ckpt_path).resolve().parent.parent  # a resumed fit goes on in its own folder
                os.environ["LESSON3_RUN_DIR"] = str(resumed)
        self.run_dir = Path(cfg.run_dir).resolve() if cfg.get("run_dir") else resumed or new_run_dir(cfg.runs_dir, name)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.trainer.default_root_dir = str(self.run_dir)
        cfg.checkpoint.dirpath = str(self.run_dir / "checkpoints")
        logger = cfg.trainer.get("logger")
        if logger not in (None, False, True) and not isinstance(logger, list) and "WandbLogger" in str(logger.get("class_path", "")):
            logger.init_args.save_dir = str(self.run_dir)
            logger.init_args.name = logger.init_args.get("name") or f"{name}-{self.run_dir.name}"
            logger.init_args.project = logger.init_args.get("project") or f"lesson3-{name}"
        self.init_weights = self._weights_only(cfg)
        if cfg.get("ckpt_path") not in (None, "last", "best") and not Path(cfg.ckpt_path).is_file() and not is_bundle(cfg.ckpt_path):
            raise SystemExit(f"error: --ckpt_path {cfg.ckpt_path}: no such checkpoint file.")
        self._print(f"Run folder: {self.run_dir}")
        if cfg.get("ckpt_path") not in (None, "best") and self.subcommand in ("fit", "validate", "test", "predict", None):
            self._print(f"{'Resuming from' if self.subcommand in ('fit', None) else 'Checkpoint:'} {Path(cfg.ckpt_path).resolve()}")
            if self.subcommand in ("fit", None) and Path(cfg.ckpt_path).resolve().is_relative_to(self.run_dir):
                # a run going on in its own folder: its checkpoints are expected there
                warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

    def _weights_only(self, cfg) -> str | None:
        """A bundle as ``--ckpt_path``, or any checkpoint when fine-tuning on ``--data.feedback``, brings
        the weights only (a new schedule): taken out of ``ckpt_path`` and loaded after instantiation."""
        ckpt = cfg.get("ckpt_path")
        if ckpt in (None, "last", "best") or self.subcommand in ("export", "interpret"):
            return None
        feedback = self.subcommand in ("fit", None) and (cfg.data.get("init_args") or {}).get("feedback")
        if is_bundle(ckpt) or (feedback and Path(ckpt).is_file()):
            cfg.ckpt_path = None
            return ckpt
        return None

    def instantiate_classes(self):
        super().instantiate_classes()
        if getattr(self, "init_weights", None):
            from serving.bundle import BundleError, load_weights

            try:
                self._print(f"Weights only from {load_weights(self.model, self.init_weights)}")
            except BundleError as e:
                raise SystemExit(f"error: {e}") from None

    @staticmethod
    def _default_name(cfg) -> str:
        cls = str(cfg.data.get("class_path", "run")).rsplit(".", 1)[-1]
        return cls.replace("DataModule", "").lower() or "run"

    @staticmethod
    def _find_last(runs_dir: str, name: str, run_dir: str | None = None) -> str:
        """``--ckpt_path last``: the newer of ``checkpoints/last.ckpt`` and ``on_exception.ckpt`` of
        ``run_dir``, or without one, of the newest run of this task (``RUNS_DIR/NAME/<time>``) that has one."""
        def checkpoints(folder: Path) -> list[Path]:
            return [p for p in (folder / "checkpoints" / "last.ckpt", folder / "checkpoints" / "on_exception.ckpt") if p.is_file()]

        if run_dir:
            found = checkpoints(Path(run_dir))
            if not found:
                raise SystemExit(f"error: --ckpt_path last: no last.ckpt or on_exception.ckpt in {Path(run_dir) / 'checkpoints'}.")
        else:
            stamped = [(m.group(1), int(m.group(2) or 1), d) for d in (Path(runs_dir) / name).glob("*") if (m := RUN_STAMP.match(d.name)) and d.is_dir()]
            found = next((c for *_, d in sorted(stamped, key=lambda t: t[:2], reverse=True) if (c := checkpoints(d))), None)
            if not found:
                raise SystemExit(f"error: --ckpt_path last: no run under {Path(runs_dir) / name} has checkpoints/last.ckpt or on_exception.ckpt.")
        return str(max(found, key=lambda p: p.stat().st_mtime_ns))

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        # not Lightning's OnExceptionCheckpoint: with it, a plain fit resumes from on_exception.ckpt
        trainer.callbacks.append(ExceptionCheckpoint(self.run_dir / "checkpoints" / "on_exception.ckpt"))
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer.callbacks.append(SaveLast(self.run_dir / "checkpoints" / "last.ckpt", every_n_steps=cfg.get("last_every_n_steps") or 0))
        trainer.callbacks.append(PredictionWriter())
        trainer.callbacks.append(Recorder())
        trainer.callbacks.append(NanGuard())  # non-finite loss/gradients/weights stop the run; saves finite only
        return trainer

    def _print(self, msg: str) -> None:
        if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
            print(msg, flush=True)

    # -- metrics.json -----------------------------------------------------------
    def write_metrics(self, stage: str, status: str = "completed", error: str | None = None) -> Path | None:
        """``metrics.json``: strict JSON (NaN/inf written as null and listed under ``non_finite``)."""
        if not self.trainer.is_global_zero:
            return None
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", None)
        stages = next((c for c in self.trainer.callbacks if isinstance(c, Stages)), None)
        out = {
            "subcommand": stage,
            "status": status,
            **({"error": error} if error else {}),
            "metrics": metrics,
            "model_lr": float(self.model.lr) if isinstance(getattr(self.model, "lr", None), (int, float)) else None,
            "stages_ran": stages.ran if stages is not None and stage == "fit" else None,
            "epochs": self.trainer.current_epoch,
            "global_step": self.trainer.global_step,
            "best_checkpoint": best if best and Path(best).is_file() else None,
            "last_checkpoint": next((str(c.path) for c in self.trainer.callbacks if isinstance(c, SaveLast) and c.path.is_file()), None),
            "run_dir": str(self.run_dir),
            "config": json.loads(json.dumps(cfg.as_dict(), default=str)),
            "versions": versions(),
        }
        out, bad = finite_json(json.loads(json.dumps(out, default=str)))
        if bad:
            out["non_finite"] = bad
            out["note"] = "non-finite values (NaN/inf) are written as null; non_finite lists their keys"
        path = self.run_dir / "metrics.json"
        path.write_text(json.dumps(out, indent=2, allow_nan=False))
        self._print(f"Metrics: {path}")
        return path

    def _run_subcommand(self, subcommand: str) -> None:
        """Checkpoints are read as data only (one line if not loadable); a diverged fit still writes metrics.json."""
        kwargs = self.config_init[subcommand]
        if kwargs.get("weights_only") is False:
            raise CheckpointError("--weights_only false is refused: checkpoints are loaded as data only")
        if subcommand in ("fit", "validate", "test", "predict") and kwargs.get("ckpt_path") not in (None, "last", "best", "hpc", "registry"):
            check_loadable(kwargs["ckpt_path"])
        try:
            super()._run_subcommand(subcommand)
        except TrainingDiverged as e:
            self.write_metrics(subcommand, status="diverged", error=str(e))
            raise
        except SIGTERMException:  # Lightning's: saved on_exception.ckpt, then exits with status 0
            ckpt = next((c.path for c in self.trainer.callbacks if isinstance(c, ExceptionCheckpoint)), None)
            msg = f"stopped by SIGTERM at step {self.trainer.global_step}"
            if ckpt is not None and ckpt.is_file():
                msg += f"; saved {ckpt} (resume: --ckpt_path last --run_dir {self.run_dir})"
            self.write_metrics(subcommand, status="interrupted", error=msg)
            print(f"error: {msg}", file=sys.stderr, flush=True)
            raise SystemExit(128 + signal.SIGTERM) from None

    def after_fit(self):
        self.write_metrics("fit")

    def after_validate(self):
        self.write_metrics("validate")

    def after_test(self):
        self.write_metrics("test")

    def after_predict(self):
        self._print(f"Predictions: {self.run_dir / 'predictions'}")


def cli_main(args: list[str] | None = None, run: bool = True) -> KitCLI:
    """Run the CLI on ``args`` (``sys.argv[1:]`` when None); returns the CLI object."""
    if args is None:
        sys.argv[1:] = expand_task(sys.argv[1:])
    else:
        args = expand_task(args)
        if not run and args and args[0] in KitCLI.subcommands():
            args = args[1:]  # without run there are no subcommands: the options configure fit
    return KitCLI(
        LightningModule,
        LightningDataModule,
        trainer_class=KitTrainer,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        # the model is built from the config and command line; --ckpt_path only brings weights and
        # training state (Lightning's default would put the checkpoint's hparams over CLI options)
        load_from_checkpoint_support=False,
        trainer_defaults={
            "logger": {"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": {"offline": True}},
        },
    )


def _user_error(e: BaseException) -> BaseException | None:
    """The DataError / WeightsUnavailableError / CheckpointError / TrainingDiverged behind an exception (jsonargparse wraps them)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (DataError, WeightsUnavailableError, CheckpointError, TrainingDiverged)):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def main() -> None:
    try:
        cli_main()
    except Exception as e:
        user = _user_error(e)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
