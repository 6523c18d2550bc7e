"""Interpretation: what the model gets wrong on the validation split, at the end of ``fit``
(:class:`Interpret`) and as ``python train.py interpret --ckpt_path CKPT`` (:func:`interpret_checkpoint`).

Both collect the model's answers on the validation split (:mod:`tasks.interpret_collect`; at the
end of fit from its last validation where it can, see :class:`Interpret`) and write
``<run>/interpret/``: ``README.md`` (the summary, every table in markdown and the pictures), one
CSV per table, one PNG per picture and ``summary.json``; with a W&B logger, the pictures as images
and the tables as W&B tables under ``interpret/``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import yaml
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.model_helpers import is_overridden

from datamodules.base import DataError
from tasks.interpret import markdown_table
from tasks.interpret_collect import Collector, InterpretError, Report, collect, collector_for
from tasks.pictures import pyplot

FOLDER = "interpret"


def write_report(report: Report, folder: Path, source: str = "") -> Path:
    """The report's files in ``folder`` (made if needed); returns the path of its ``README.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    for name, fig in report.figures.items():
        fig.savefig(folder / f"{name}.png", dpi=80)
        plt.close(fig)
    for name, rows in report.tables.items():
        columns = list(rows[0]) if rows else []
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
    (folder / "summary.json").write_text(json.dumps({"kind": report.kind, "task": report.task, "source": source, **report.summary}, indent=2))
    lines = [f"# What {report.task} gets wrong ({report.kind}, validation split)", ""]
    if source:
        lines += [f"Weights: {source}", ""]
    lines += [markdown_table([{"statistic": k, "value": v} for k, v in report.summary.items()]), ""]
    for name, rows in report.tables.items():
        lines += [f"## {name}", "", f"{report.notes.get(name, '')} ([{name}.csv]({name}.csv))", ""]
        if name not in report.csv_only:
            lines += [markdown_table(rows) if rows else "(none)\n", ""]
    for name in report.figures:
        lines += [f"## {name}.png", "", report.notes.get(f"{name}.png", ""), "", f"![{name}]({name}.png)", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path


def log_report(report: Report, folder: Path, loggers: list, step: int = 0) -> None:
    """The report's pictures and tables to every W&B logger (``interpret/<name>``)."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        for name in report.figures:
            logger.log_image(key=f"{FOLDER}/{name}", images=[str(folder / f"{name}.png")], step=step)
        for name, rows in report.tables.items():
            if rows:
                columns = list(rows[0])
                logger.log_table(key=f"{FOLDER}/{name}", columns=columns, data=[[r.get(c) for c in columns] for r in rows], step=step)
        for k, v in report.summary.items():
            logger.experiment.summary[f"{FOLDER}/{k}"] = v


def validation_batches(trainer: pl.Trainer, datamodule, max_batches: int | None = None):
    """The validation loader's batches (at most ``max_batches``, and no more than the trainer's
    ``limit_val_batches`` lets validation see); one clear line where there is no validation split."""
    if datamodule is None or not is_overridden("val_dataloader", datamodule, pl.LightningDataModule):
        raise InterpretError(f"{type(datamodule).__name__}: no validation split (no val_dataloader) to interpret.")
    try:
        loader = datamodule.val_dataloader()
    except DataError as e:
        raise DataError(f"interpret needs a validation split: {e}") from None
    limit = trainer.limit_val_batches
    limit = limit if isinstance(limit, int) else int(len(loader) * limit) if limit < 1 else None  # as Lightning's validation
    limits = [n for n in (max_batches, limit) if n is not None]
    stop = min(limits) if limits else None
    for i, batch in enumerate(loader):
        if stop is not None and i >= stop:
            break
        yield batch


def run(trainer: pl.Trainer, model: pl.LightningModule, datamodule, folder: Path, k: int = 9, max_batches: int | None = None, source: str = "") -> Path:
    """Collect on the validation split, write ``folder``, log to W&B; returns its ``README.md``."""
    device = trainer.strategy.root_device
    model.to(device)
    report = collect(model, validation_batches(trainer, datamodule, max_batches), k=k, device=device, autocast=trainer.precision_plugin.forward_context())
    return publish(trainer, report, folder, source)


def publish(trainer: pl.Trainer, report: Report, folder: Path, source: str) -> Path:
    """Write ``report`` to ``folder``, log it to W&B and say so in one line; returns its ``README.md``."""
    path = write_report(report, folder, source)
    log_report(report, folder, trainer.loggers, trainer.global_step)
    print(f"Interpretation: {folder} ({', '.join(f'{k} {v}' for k, v in report.summary.items())})", flush=True)
    return path


class Interpret(pl.Callback):
    """At the end of ``fit``, interpret the final weights on the validation split: ``<run>/interpret/``.

    What the fit's last validation answered (its steps' ``preds``) is collected as it runs, when
    that validation is the fit's last one to come (the epoch limit or the step limit is reached) and
    one process sees the whole split; the report is then written from it with no second pass over
    the data. A fit that ended otherwise (early stopping, a time limit, a failed collection, DDP)
    runs the model over the validation split again at its end, as ``train.py interpret`` does.

    Args:
        enabled: run at the end of fit (``--interpretation.enabled false``: not).
        k: samples in the top-losses / worst-of tables and pictures.
        max_batches: at most this many validation batches (default: all, or as many as the
            trainer's ``limit_val_batches`` lets validation see).
    """

    def __init__(self, enabled: bool = True, k: int = 9, max_batches: int | None = None):
        self.enabled, self.k, self.max_batches = enabled, k, max_batches
        self._collector: Collector | None = None
        self._collected: tuple[Collector, int] | None = None  # (collector, global step it saw)

    def _wanted(self, trainer) -> bool:
        return self.enabled and trainer.is_global_zero and trainer.limit_val_batches != 0 and trainer.datamodule is not None

    def on_validation_epoch_start(self, trainer, pl_module):
        self._collector = None
        last = (trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1) or (0 < trainer.max_steps <= trainer.global_step)
        if trainer.sanity_checking or not last or trainer.world_size > 1 or not self._wanted(trainer):
            return
        try:
            self._collector = collector_for(pl_module, self.k)
        except InterpretError:
            return

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        c = self._collector
        if c is None or (self.max_batches is not None and batch_idx >= self.max_batches):
            return
        preds = outputs.get("preds") if isinstance(outputs, dict) else None
        if dataloader_idx or preds is None:
            self._collector = None  # not this kind of validation: collected again at the end
            return
        c.update(batch, c.from_step(preds.detach()))

    def on_validation_epoch_end(self, trainer, pl_module):
        if self._collector is not None and self._collector.names:
            self._collected = (self._collector, trainer.global_step)
        self._collector = None

    def on_fit_end(self, trainer, pl_module):
        collected, self._collected = self._collected, None
        if not self._wanted(trainer):
            return
        try:
            collector_for(pl_module)
        except InterpretError:  # e.g. the masked LM: nothing to interpret, nothing to say
            return
        on, folder, source = pl_module.device, Path(trainer.default_root_dir) / FOLDER, f"the end of fit (epoch {trainer.current_epoch})"
        try:
            if collected is not None and collected[1] == trainer.global_step:  # the final weights' answers
                publish(trainer, collected[0].report(), folder, source)
            else:
                run(trainer, pl_module, trainer.datamodule, folder, self.k, self.max_batches, source)
        except Exception as e:  # noqa: BLE001 - the run itself is complete: its checkpoints and metrics.json still come
            print(f"Interpretation failed (the run is complete; try python train.py interpret): {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        finally:
            pl_module.to(on)


def checkpoint_task(ckpt_path: str | Path) -> str | None:
    """The task class a checkpoint was trained with, from its run's ``config.yaml`` (``<run>/checkpoints/X.ckpt``)."""
    config = Path(ckpt_path).resolve().parent.parent / "config.yaml"
    try:
        model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
    except (OSError, yaml.YAMLError):
        return None
    path = model.get("class_path") if isinstance(model, dict) else None
    return str(path).rsplit(".", 1)[-1] if path else None


def interpret_checkpoint(trainer: pl.Trainer, model: pl.LightningModule, datamodule, ckpt_path: str | None, load_weights: Callable[[Any, str], str], k: int | None = None) -> str:
    """The ``interpret`` subcommand: ``ckpt_path``'s weights into ``model`` (``load_weights``: data
    only), then :func:`run` on the validation split into ``<run>/interpret/``. Bad input stops with
    one line (``SystemExit``): no checkpoint, one of another task, no validation split."""
    if ckpt_path is None:
        raise SystemExit("error: interpret needs --ckpt_path: a checkpoint such as runs/<task>/<time>/checkpoints/last.ckpt, or a bundle.")
    try:
        collector_for(model)
        trained = checkpoint_task(ckpt_path)
        if trained is not None and trained != type(model).__name__:
            raise InterpretError(f"{ckpt_path}: a checkpoint of {trained} (its run's config.yaml), not of {type(model).__name__}: use the --task it was trained with.")
        try:
            source = load_weights(model, ckpt_path)
        except ValueError as e:  # serving.bundle.BundleError: not loadable, or does not fit this model
            raise InterpretError(str(e)) from None
        datamodule.trainer = trainer  # as Lightning's validate would (e.g. the IMDB tokenizer follows the model's)
        trainer.strategy.connect(model)
        datamodule.setup("validate")
        callback = next((c for c in trainer.callbacks if isinstance(c, Interpret)), None)
        k = k or (callback.k if callback else 9)
        return str(run(trainer, model, datamodule, Path(trainer.default_root_dir) / FOLDER, k, callback.max_batches if callback else None, source))
    except (InterpretError, DataError) as e:
        raise SystemExit(f"error: {e}") from None
