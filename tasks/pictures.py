"""Small drawing helpers for ``show_batch`` / ``show_results`` figures (matplotlib, Agg)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from models.inference import palette  # noqa: F401 - the segmentation colours, shared with serving


def save_figure(trainer, fig, name: str) -> Path | None:
    """Write ``<run>/pictures/<name>.png`` (rank 0 only; the run folder is the trainer's
    ``default_root_dir``) and log it to W&B when that logger is on."""
    if fig is None or not trainer.is_global_zero:
        if fig is not None:
            pyplot().close(fig)
        return None
    path = Path(trainer.default_root_dir) / "pictures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # a review in a script the font lacks: boxes in the picture, not a warning per glyph
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        fig.savefig(path, dpi=80)
    pyplot().close(fig)
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=f"pictures/{name}", images=[str(path)], step=trainer.global_step)
    return path


def pyplot():
    """matplotlib's pyplot on the Agg backend, or a one-line install hint."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - matplotlib is in requirements.txt
        raise ImportError("Pictures and plots need matplotlib: pip install matplotlib") from e
    return plt


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """A CHW image tensor (uint8, or float in 0..1) as an HWC uint8 array (its first 3 channels: RGB of R, G, B, NIR)."""
    x = image.detach().cpu()[:3]
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(1, 2, 0).numpy()


def grid(n_rows: int, n_cols: int, cell: float = 2.5):
    plt = pyplot()
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols * 1.3, cell * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes
