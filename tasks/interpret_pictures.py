"""Pictures of what a model gets wrong (``python train.py interpret``): top losses, confusion
matrices, segmentation error overlays, point errors. matplotlib figures, drawn with the helpers of
:mod:`tasks.pictures`; written to files by ``callbacks/interpret.py``."""

from __future__ import annotations

import math
import textwrap
from typing import Callable, Sequence

import numpy as np
import torch

from .pictures import grid, pyplot, to_hwc

TRUE, PRED = "lime", "red"


def _wrap(text: str, width: int = 30) -> str:
    return "\n".join(textwrap.wrap(text, width)) or "(none)"


def image_grid(items: Sequence[dict], title_of: Callable[[dict], str], draw: Callable | None = None, suptitle: str = "", cols: int = 4, cell: float = 3.0):
    """One image per item (``item['image']`` CHW) titled ``title_of(item)``; ``draw(ax, item)`` adds marks."""
    n = max(1, len(items))
    cols = min(cols, n)
    fig, axes = grid(math.ceil(n / cols), cols, cell=cell)
    for item, ax in zip(items, axes.flat):
        ax.imshow(to_hwc(item["image"]))
        if draw is not None:
            draw(ax, item)
        ax.set_title(title_of(item), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def top_losses_grid(items: Sequence[dict], suptitle: str = "Top losses: truth / prediction / probability / loss"):
    """fastai's ``plot_top_losses``: each item has ``image``, ``truth``, ``prediction``, ``probability``
    (text) and ``loss``; the title is red where truth and prediction differ."""
    def title(it):
        return f"{it['name']}\ntrue: {_wrap(it['truth'])}\npred: {_wrap(it['prediction'])}\n{it['probability']}  loss {it['loss']:.3f}"

    fig = image_grid(items, title, suptitle=suptitle, cell=3.4)
    for item, ax in zip(items, fig.axes):
        ax.title.set_color("darkgreen" if item["truth"] == item["prediction"] else "darkred")
    return fig


def confusion_figure(counts: torch.Tensor, rows: Sequence[str], cols: Sequence[str], title: str, xlabel: str = "predicted", ylabel: str = "truth"):
    """A count matrix coloured by its row-normalised shares, counts written in the cells (when small enough)."""
    plt = pyplot()
    counts = counts.double().cpu()
    share = (counts / counts.sum(1, keepdim=True).clamp_min(1)).numpy()
    side = max(4.0, 0.38 * max(len(rows), len(cols)) + 2)
    fig, ax = plt.subplots(figsize=(side * 1.1, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), labels=cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), labels=rows, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if len(rows) * len(cols) <= 21 * 22:  # counts written where they stay legible
        for (i, j), n in np.ndenumerate(counts.numpy().astype(int)):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=6, color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    fig.tight_layout()
    return fig


def segmentation_errors(items: Sequence[dict], colours: np.ndarray, void_index: int | None = None):
    """Per item (``image``, ``mask``, ``pred``, ``name``, ``iou``): the image, truth and prediction
    over it, and the wrong pixels in red (void grey)."""
    n = max(1, len(items))
    fig, axes = grid(n, 4)
    k = len(colours)
    for i, it in enumerate(items):
        img = to_hwc(it["image"])
        mask, pred = it["mask"].long().numpy(), it["pred"].long().numpy()
        axes[i, 0].imshow(img)
        axes[i, 0].set_title(f"{it['name']}  IoU {it['iou']:.3f}", fontsize=8, loc="left")
        for j, m in ((1, mask), (2, pred)):
            axes[i, j].imshow(img)
            axes[i, j].imshow(colours[m.clip(0, k - 1)], alpha=0.6)
        err = np.zeros((*mask.shape, 4))
        err[mask != pred] = (1, 0, 0, 0.8)
        if void_index is not None:
            err[mask == void_index] = (0.5, 0.5, 0.5, 0.6)
        axes[i, 3].imshow(img.mean(-1), cmap="gray")
        axes[i, 3].imshow(err)
    for j, t in enumerate(("image", "truth", "prediction", "wrong pixels (red; void grey)")):
        axes[0, j].set_title((axes[0, j].get_title(loc="left") + "\n" if j == 0 else "") + t, fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def points_grid(items: Sequence[dict]):
    """Per item (``image``, ``true_xy``, ``pred_xy`` in the shown image's pixels, ``name``, ``error``):
    truth green, prediction red, the error in original-image pixels."""
    def draw(ax, it):
        for xy, colour, size in ((it["true_xy"], TRUE, 60), (it["pred_xy"], PRED, 30)):
            ax.scatter([xy[0]], [xy[1]], s=size, c=colour, marker="o", edgecolors="black", linewidths=0.8)

    return image_grid(items, lambda it: f"{it['name']}\nerror {it['error']:.1f} px", draw, "Largest errors: truth green, prediction red")


def histogram_figure(errors: torch.Tensor, percentiles: dict[str, float], bins: int = 30, unit: str = "px"):
    """The error distribution with its percentiles marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    e = errors.double().numpy()
    ax.hist(e, bins=bins, color="steelblue", edgecolor="white")
    for i, (name, v) in enumerate(percentiles.items()):
        ax.axvline(v, color=f"C{i + 1}", linestyle="--", linewidth=1, label=f"{name} {v:.1f} {unit}")
    ax.set_xlabel(f"error ({unit}, original images)")
    ax.set_ylabel("images")
    ax.set_title(f"Error distribution over {len(e)} images", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def bar_figure(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str, ylabel: str):
    """A bar chart, e.g. the error rate per review-length bucket."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 2), 3.5))
    ax.bar(range(len(values)), values, color="indianred")
    ax.set_xticks(range(len(labels)), labels=labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
