"""The LR range test (Smith 2015, fastai's ``lr_find``): a sweep that leaves no trace.

:func:`range_test` trains on a few batches with an exponentially growing LR, on a throw-away
optimizer, then restores the weights, buffers (batch-norm statistics), the training mode and
every RNG; :func:`find_lr` adds the suggestions (``callbacks.lr_suggest``), the plot and a JSON record.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .lr_suggest import Suggestion, smooth_centered, suggest_all


@dataclass
class RangeTest:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _batches(loader, n: int):
    """``n`` batches, going round the loader again if it is shorter."""
    done = 0
    while done < n:
        empty = True
        for batch in loader:
            empty = False
            yield batch
            done += 1
            if done >= n:
                return
        if empty:
            raise ValueError("the training loader is empty: nothing to run the LR range test on")


def range_test(
    model,
    loader,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    group_mults: list[float] | None = None,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    diverge: float = 4.0,
) -> RangeTest:
    """Sweep the LR from ``min_lr`` to ``max_lr`` over ``num_steps`` batches; restore everything after.

    Args:
        model: a task (``BaseTask``): ``layer_groups()`` and ``loss_on(batch)``.
        loader: training batches.
        group_mults: LR multiplier per layer group (0 = frozen; discriminative ratios); default all 1.
        autocast_dtype: mixed-precision dtype on GPU (``torch.bfloat16``/``torch.float16``) or None.
        diverge: stop once the smoothed loss exceeds this multiple of the best.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    groups = [g for g in model.layer_groups() if g]
    mults = list(group_mults) if group_mults is not None else [1.0] * len(groups)
    if len(mults) != len(groups):
        raise ValueError(f"group_mults has {len(mults)} values for {len(groups)} layer groups")
    saved_state = copy.deepcopy(model.state_dict())
    saved_rng, was_training = rng_state(), model.training
    opt = torch.optim.AdamW([{"params": g, "lr": min_lr * m} for g, m in zip(groups, mults)], weight_decay=getattr(model, "weight_decay", 0.0))
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
    result, best, avg = RangeTest(), float("inf"), 0.0
    try:
        model.train()
        ratio = max_lr / min_lr
        for step, batch in enumerate(_batches(loader, num_steps)):
            lr = min_lr * ratio ** (step / max(1, num_steps - 1))
            for g, m in zip(opt.param_groups, mults):
                g["lr"] = lr * m
            batch = model.transfer_batch_to_device(batch, device, 0)
            ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            with ctx:
                loss = model.loss_on(batch)
            value = float(loss.detach())
            result.lrs.append(lr)
            result.losses.append(value)
            if not np.isfinite(value):
                break
            avg = 0.9 * avg + 0.1 * value
            smoothed = avg / (1 - 0.9 ** (step + 1))
            best = min(best, smoothed)
            if step > 5 and smoothed > diverge * best:
                break
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
    finally:
        for p in model.parameters():
            p.grad = None
        model.load_state_dict(saved_state)
        model.train(was_training)
        set_rng_state(saved_rng)
    return result


def plot_range_test(test: RangeTest, suggestions: dict[str, Suggestion], chosen: str, path: Path) -> Path:
    """Loss against LR (log scale), raw and smoothed, with each rule's suggestion marked."""
    from tasks.pictures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lrs, losses = np.asarray(test.lrs), np.asarray(test.losses)
    finite = np.isfinite(losses)
    ax.plot(lrs[finite], losses[finite], color="0.8", lw=1, label="loss")
    if finite.any():
        ax.plot(lrs[finite], smooth_centered(losses[finite]), color="C0", lw=2, label="smoothed (zero-lag)")
        lo, hi = np.percentile(losses[finite], [0, 95])
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo) + 1e-8)
    for i, (rule, s) in enumerate(suggestions.items()):
        if s.lr is not None:
            ax.axvline(s.lr, color=f"C{i + 1}", ls="-" if rule == chosen else "--", label=f"{rule}: {s.lr:.2e}" + (" (chosen)" if rule == chosen else ""))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def find_lr(model, loader, out_dir: Path, rule: str = "valley", name: str = "lr_find", **kwargs) -> tuple[Suggestion, dict[str, Suggestion], Path]:
    """Range test + suggestions + ``<out_dir>/pictures/<name>.png`` + ``<out_dir>/<name>.json``.

    Returns:
        (the chosen rule's suggestion, every rule's suggestion, the plot's path)
    """
    test = range_test(model, loader, **kwargs)
    sugg = suggest_all(test.lrs, test.losses)
    if rule not in sugg:
        raise ValueError(f"unknown LR rule '{rule}'; choose one of {', '.join(sugg)}")
    plot = plot_range_test(test, sugg, rule, Path(out_dir) / "pictures" / f"{name}.png")
    record = {"rule": rule, "suggestion": sugg[rule].lr, "suggestions": {r: {"lr": s.lr, "reason": s.reason} for r, s in sugg.items()}, "lrs": test.lrs, "losses": test.losses}
    (Path(out_dir) / f"{name}.json").write_text(json.dumps(record, indent=1))
    return sugg[rule], sugg, plot
