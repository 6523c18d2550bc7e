"""The subcommands beyond Lightning's ``fit``/``validate``/``test``/``predict``: methods of the
Trainer, as LightningCLI runs them (``python train.py lr_find|export|interpret --task NAME ...``)."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.loggers import WandbLogger

from callbacks.lr_finder import FIND_DEFAULTS
from callbacks.lr_suggest import DEFAULT_RULE
from callbacks.lr_finder import lr_find as range_test
from callbacks.stages import Stages, stage_size


def _print_suggestions(every: dict, sugg, rule: str, plot, fallback: float) -> None:
    for r, s in every.items():
        print(f"  {r:9s} {s.lr:.2e}  ({s.reason})" if s.lr is not None else f"  {r:9s} -         ({s.reason})")
    print(f"Suggested LR ({rule}): {sugg.lr:.2e}" if sugg.lr is not None
          else f"No LR suggestion ({rule}): {sugg.reason}; a stage with lr: find would keep its fallback, {fallback:.2e}")
    print(f"Plot: {plot}")


class KitTrainer(Trainer):
    """Lightning's Trainer plus the ``lr_find``, ``export`` and ``interpret`` subcommands."""

    def _first_stage(self):
        return next((c.stages[0] for c in self.callbacks if isinstance(c, Stages)), None)

    def lr_find(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        min_lr: float = FIND_DEFAULTS["min_lr"],
        max_lr: float = FIND_DEFAULTS["max_lr"],
        num_steps: int = FIND_DEFAULTS["num_steps"],
        rule: str | None = None,
        freeze_to: int | None = None,
    ) -> float | None:
        """LR range test (``callbacks/lr_finder.py``) at the first stage's settings: plot, suggestion,
        and the model and optimizer left as they were.

        Args:
            min_lr: first LR of the sweep.
            max_lr: last LR of the sweep (it stops early when the loss diverges).
            num_steps: batches in the sweep.
            rule: ``edge``, ``valley``, ``steepest`` or ``minimum`` (default: the first stage's, else edge).
            freeze_to: first trainable layer group (default: the first stage's, else 0 = all).
        """
        first = self._first_stage()
        rule = rule or (first.rule if first else DEFAULT_RULE)
        freeze_to = freeze_to if freeze_to is not None else (first.freeze_to if first else 0)
        sugg, every, plot = range_test(self, model, datamodule, Path(self.default_root_dir), rule=rule, freeze_to=freeze_to,
                                       min_lr=min_lr, max_lr=max_lr, num_steps=num_steps, fallback=float(model.lr), keep=(Stages,))
        _print_suggestions(every, sugg, rule, plot, float(model.lr))
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="pictures/lr_find", images=[str(plot)])
                logger.experiment.summary["lr_find/suggestion"] = sugg.lr
        return sugg.lr

    def export(self, model: LightningModule, datamodule: LightningDataModule | None = None, ckpt_path: str | None = None, out: str | None = None,
               tta: bool = False, weights_only: bool | None = None) -> str:
        """Write a self-contained inference bundle for ``python serve.py`` (see ``serving/bundle.py``).

        Args:
            ckpt_path: the trained weights: a checkpoint (e.g. ``runs/<task>/<time>/checkpoints/last.ckpt``) or a bundle.
            out: the bundle folder (default: ``bundle/`` beside the checkpoint's ``checkpoints/`` folder,
                i.e. in the run that trained it; else in this command's run folder).
            tta: the bundle serves answers averaged over each image's flips (Planet 8 passes, the
                others 2); default: one pass. The model's own ``tta`` is for validate/test/predict.
            weights_only: accepted for a run's ``config.yaml``; checkpoints are always read as data only.
        """
        from serving.bundle import BundleError, export_bundle, load_weights, trained_input_size

        if ckpt_path is None:
            raise SystemExit("error: export needs --ckpt_path: a checkpoint such as runs/<task>/<time>/checkpoints/last.ckpt, or a bundle.")
        # the size training ended at: from the checkpoint's run config, else this command's stages/data
        stages = [s.size for c in self.callbacks if isinstance(c, Stages) for s in c.stages if s.size is not None]
        size = trained_input_size(ckpt_path) or (stage_size(stages[-1], datamodule.size) if stages else getattr(datamodule, "size", None))
        root = Path(self.default_root_dir)
        try:
            load_weights(model, ckpt_path)
            ckpt = Path(ckpt_path).expanduser()
            beside = ckpt.parent.parent / "bundle" if ckpt.is_file() and ckpt.parent.name == "checkpoints" else None
            path = export_bundle(model, out or beside or root / "bundle", size, name=root.parent.name, source=str(ckpt_path), tta=tta)
        except BundleError as e:
            raise SystemExit(f"error: {e}") from None
        print(f"Bundle: {path}  (serve it: python serve.py {path})", flush=True)
        return str(path)

    def interpret(self, model: LightningModule, datamodule: LightningDataModule | None = None, ckpt_path: str | None = None,
                  weights_only: bool | None = None) -> str:
        """What the model gets wrong on the validation split: tables and pictures in ``<run>/interpret/`` (and W&B).

        Args:
            ckpt_path: the trained weights: a checkpoint of this task (e.g. ``runs/<task>/<time>/checkpoints/last.ckpt``) or a bundle.
            weights_only: accepted for a run's ``config.yaml``; checkpoints are always read as data only.
        """
        from callbacks.interpret import interpret_checkpoint
        from serving.bundle import load_weights

        return interpret_checkpoint(self, model, datamodule, ckpt_path, load_weights)
