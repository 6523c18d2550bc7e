"""Command line: ``python train.py --task camvid`` or any LightningCLI command.

``--task NAME`` is a shortcut for ``fit --config configs/NAME.yaml`` (it also works after
another subcommand: ``python train.py validate --task camvid --ckpt_path ...``). A config
whose first line is ``# extends: BASE`` is loaded on top of ``configs/BASE.yaml``.

Every run gets a folder ``runs/<name>/<time>/`` holding ``config.yaml``, ``metrics.json``,
``checkpoints/``, ``pictures/``, ``predictions/`` and the offline W&B run. The parts live in
``cli/``: the ``--task`` shortcut, the run folder, ``--ckpt_path``, ``metrics.json`` and the
subcommands beyond Lightning's.
"""

from __future__ import annotations

import gc
import signal
import sys
import warnings

from pytorch_lightning import Callback, LightningDataModule, LightningModule
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from callbacks import MemoryFormat, Pictures, PredictionWriter, Recorder
from callbacks.checkpoint_io import CheckpointError
from callbacks.checkpoints import ExceptionCheckpoint, run_checkpoints
from callbacks.interpret import Interpret
from callbacks.nan_guard import NanGuard, TrainingDiverged
from callbacks.speed import auto_precision
from cli import checkpoint_args
from cli.metrics import write_metrics
from cli.run_folder import choose_run_dir, claim, claimed, default_name, point_into, rank_zero_print, unclaim_all
from cli.parser import KitParser
from cli.subcommands import KitTrainer
from cli.task_option import CONFIG_DIR, SAMPLE_DIR, config_chain, expand_task, root_given, task_names
from datamodules.base import DataError
from models.weights import WeightsUnavailableError

__all__ = ["CONFIG_DIR", "SAMPLE_DIR", "KitCLI", "KitTrainer", "cli_main", "config_chain", "expand_task", "main", "root_given", "task_names"]

# values a datamodule knows that its task (or network) needs; links whose source or
# target a given task lacks are skipped by jsonargparse
DATA_TO_MODEL = {
    "num_classes": ["model.init_args.num_classes", "model.init_args.net.init_args.num_classes"],
    "void_index": ["model.init_args.void_index"],
    "classes": ["model.init_args.class_names"],
    "band_stats": ["model.init_args.net.init_args.band_stats"],  # extra bands' normalisation (datamodules/bands.py)
}


class SaveAndLogConfig(SaveConfigCallback):
    """``config.yaml`` in the run folder (Lightning's) and the whole resolved config in the loggers'
    (W&B's run config: backbone, size, batch size, epochs, stages, seed, ... filterable there)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if trainer.loggers:
            import yaml

            config = yaml.safe_load(self.parser.dump(self.config, skip_unset=False))
            for logger in trainer.loggers:
                logger.log_hyperparams({"config": config})


class KitCLI(LightningCLI):
    """LightningCLI with the run folder, data-to-model links, pictures and ``metrics.json``."""

    def add_arguments_to_parser(self, parser):
        parser.add_argument("--name", type=str | None, default=None, help="run name: the folder is RUNS_DIR/NAME/TIME (default: the datamodule's name)")
        parser.add_argument("--runs_dir", type=str, default="runs", help="where run folders are made")
        parser.add_argument("--run_dir", type=str | None, default=None, help="use exactly this run folder (e.g. for torchrun/SLURM jobs)")
        parser.add_argument("--last_every_n_steps", type=int, default=500, help="also write last.ckpt every N optimizer steps within an epoch (0: at epoch ends only), so a killed run resumes mid-epoch")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # the best epoch(s) by the task's monitor; last.ckpt is a second ModelCheckpoint (callbacks/checkpoints.py)
        parser.set_defaults({"checkpoint.save_last": False, "checkpoint.filename": "epoch{epoch:03d}", "checkpoint.auto_insert_metric_name": False})
        parser.add_lightning_class_args(Pictures, "pictures")
        parser.add_lightning_class_args(MemoryFormat, "memory")
        parser.add_lightning_class_args(Interpret, "interpretation")  # --interpretation.enabled false: none at the end of fit
        for source, targets in DATA_TO_MODEL.items():
            for target in targets:
                parser.link_arguments(f"data.{source}", target, apply_on="instantiate")
        # the text datamodules tokenize with the model's backbone (also where lr_find sets them up without a trainer)
        parser.link_arguments("model.init_args.net.init_args.backbone", "data.init_args.backbone", apply_on="parse")

    def parse_arguments(self, parser, args) -> None:
        """The model comes from the config and command line only; ``--ckpt_path`` brings the weights
        and training state: it is held back until the classes are built (LightningCLI would parse a
        checkpoint's hyper-parameters over the options)."""
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        self.held_ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if self.held_ckpt_path is not None:
            self.config[sub].ckpt_path = None

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}, "export": {"model", "datamodule"}, "interpret": {"model", "datamodule"}}

    @property
    def cfg(self):
        """This subcommand's config."""
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self):
        cfg = self.cfg
        if getattr(self, "held_ckpt_path", None) is not None:
            cfg.ckpt_path = self.held_ckpt_path
        if self.subcommand in ("fit", None) and cfg.trainer.get("max_epochs") == 0:
            raise SystemExit("error: --trainer.max_epochs 0 trains nothing; give 1 or more (to score a checkpoint: validate --ckpt_path PATH).")
        if cfg.trainer.get("precision") is None:
            cfg.trainer.precision = auto_precision(cfg.trainer.get("accelerator"))
        self.run_dir = choose_run_dir(cfg, self.subcommand)
        claim(self.run_dir)
        point_into(cfg, self.run_dir, cfg.get("name") or default_name(cfg))
        self.init_weights = checkpoint_args.weights_only_source(cfg, self.subcommand)
        checkpoint_args.check_exists(cfg)
        if checkpoint_args.resumes_in(cfg, self.subcommand, self.run_dir):  # its checkpoints are expected there
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # (cli_main's scope)
        rank_zero_print(f"Run folder: {self.run_dir}")
        if (line := checkpoint_args.describe(cfg, self.subcommand)) is not None:
            rank_zero_print(line)

    def instantiate_classes(self):
        super().instantiate_classes()
        if self.subcommand is not None:  # checkpoints are read as data only (one line if not loadable)
            checkpoint_args.loading_kwargs(self.config_init[self.subcommand], self.subcommand)
        if getattr(self, "init_weights", None):
            rank_zero_print(f"Weights only from {checkpoint_args.load_init_weights(self.model, self.init_weights)}")

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks += run_checkpoints(self.run_dir / "checkpoints", self.cfg.get("last_every_n_steps") or 0)
        trainer.callbacks += [PredictionWriter(), Recorder()]
        if trainer.loggers:  # every parameter group's LR as a scalar per step (W&B's charts), not only the PNG
            trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))
        trainer.callbacks.append(NanGuard())  # non-finite loss/gradients/weights stop the run; saves finite only
        trainer.callbacks.append(RecordStop(self))  # after ExceptionCheckpoint: metrics.json names on_exception.ckpt
        return trainer

    def write_metrics(self, stage: str, status: str = "completed", error: str | None = None):
        """``metrics.json`` (see ``cli/metrics.py``)."""
        path = write_metrics(self.trainer, self.model, self.cfg.as_dict(), stage, status, error)
        if path is not None:
            rank_zero_print(f"Metrics: {path}")
        return path

    def after_fit(self):
        self.write_metrics("fit")

    def after_validate(self):
        self.write_metrics("validate")

    def after_test(self):
        self.write_metrics("test")

    def after_predict(self):
        rank_zero_print(f"Predictions: {self.run_dir / 'predictions'}")


class RecordStop(Callback):
    """``metrics.json`` for a run an exception ends: ``diverged`` (the NaN guard) or ``interrupted``
    (Ctrl-C, SIGTERM: with where it was saved and the command that resumes it)."""

    def __init__(self, cli: KitCLI):
        self.cli = cli

    def on_exception(self, trainer, pl_module, exception):
        cli = self.cli
        if isinstance(exception, TrainingDiverged):
            cli.write_metrics(cli.subcommand, status="diverged", error=str(exception))
            return
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        what = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
        ckpt = next((c.path for c in trainer.callbacks if isinstance(c, ExceptionCheckpoint)), None)
        msg = f"stopped by {what} at step {trainer.global_step}"
        if ckpt is not None and ckpt.is_file():
            msg += f"; saved {ckpt} (resume: --ckpt_path last --run_dir {cli.run_dir})"
        cli.write_metrics(cli.subcommand, status="interrupted", error=msg)
        print(f"error: {msg}", file=sys.stderr, flush=True)


def wandb_run():
    """The W&B run in progress in this process, if any (``wandb`` is imported only where one is used)."""
    wandb = sys.modules.get("wandb")
    return None if wandb is None else wandb.run


def cli_main(args: list[str] | None = None, run: bool = True) -> KitCLI:
    """Run the CLI on ``args`` (``sys.argv[1:]`` when None); returns the CLI object."""
    argv = sys.argv
    if args is None:
        sys.argv[1:] = expand_task(sys.argv[1:])
    else:
        args = expand_task(args)
        if not run and args and args[0] in KitCLI.subcommands():
            args = args[1:]  # without run there are no subcommands: the options configure fit
        sys.argv = sys.argv[:1]  # args replace the command line (e.g. pytest's own options)
    before, held = wandb_run(), claimed()
    try:
        with warnings.catch_warnings():  # (filters a run adds end with it)
            return _make_cli(args, run)
    except SIGTERMException:  # Lightning's, after on_exception.ckpt and metrics.json: the signal's exit status
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        sys.argv = argv
        if run:  # the run folder free again, the W&B run this command started ended (Lightning leaves it open):
            unclaim_all(keep=held)  # (only this command's) a notebook's or a test's next command starts clean
            if (started := wandb_run()) is not None and started is not before:
                started.finish()


def _make_cli(args: list[str] | None, run: bool) -> KitCLI:
    return KitCLI(
        LightningModule,
        LightningDataModule,
        trainer_class=KitTrainer,
        parser_class=KitParser,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_callback=SaveAndLogConfig,
        save_config_kwargs={"overwrite": True},
        # the model is built from the config and command line; --ckpt_path only brings weights and
        # training state (Lightning's default would put the checkpoint's hparams over CLI options)
        load_from_checkpoint_support=False,
        # the optimizer is the task's --model.init_args.optimizer: the stages set its groups' LRs and
        # one-cycle (LightningCLI's own --optimizer would replace them with one group of its own)
        auto_configure_optimizers=False,
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
    finally:
        # the process ends here: the interpreter's last collections over every object the imports
        # made (torch, Lightning, transformers, ...) cost ~1.5 s on 2 cores; atexit handlers still run
        gc.freeze()


if __name__ == "__main__":
    main()
