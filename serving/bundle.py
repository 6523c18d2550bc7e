"""Inference bundles: one folder holding everything a trained model needs to answer requests.

Layout (``python train.py export`` writes it, :func:`load_bundle` reads it)::

    bundle/
      bundle.json          task type, network name (from ``models.registry.NETWORKS``) + init
                           args, input size, normalisation, class names, Planet's thresholds,
                           IMDB's max_length, versions, and the SHA-256 of every other file
      weights.safetensors  the network's state dict (safetensors: tensors only, no pickle)
      backbone/            IMDB only: the tokenizer and the encoder's config.json (save_pretrained)

A bundle is data, never code: its network is one of the project's own builders named in the
allow-list (no import path is ever followed), its weights hold tensors only, and every file it
lists must match its SHA-256 (a changed or added file is refused before anything is built).
Loading needs no training config, data folder or network: the network is rebuilt with its
pretrained-weight options off (``weights: null``, ``pretrained: false``) and the state dict
loaded into it. Networks take uint8 images and normalise inside (``models/normalize.py``); the
statistics are in ``bundle.json`` too, since they are not part of the state dict.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.inference import image_input, palette

from .bundle_format import BACKBONE, FORMAT, META, TASKS, VERSION, WEIGHTS, BundleError, bundle_dir, check_net, finite, is_bundle, read_meta, sha256_of, verify_files

__all__ = ["BACKBONE", "FORMAT", "META", "TASKS", "VERSION", "WEIGHTS", "Bundle", "BundleError", "bundle_dir", "export_bundle", "is_bundle",
           "load_bundle", "load_weights", "read_meta", "read_state", "sha256_of", "task_type", "trained_input_size", "verify_files"]


def task_type(model: nn.Module) -> str:
    """The bundle task type of a task from ``tasks/``: its class-level ``kind``."""
    kind = getattr(model, "kind", None)
    if kind not in TASKS:
        raise BundleError(
            f"{type(model).__name__}: nothing to serve (kind {kind!r}; export works for tags, labels, masks, points and "
            "text classifiers; the masked LM of imdb_lm is stage 1 only)."
        )
    return kind


def _normalize_of(net: nn.Module) -> dict[str, list[float]] | None:
    from models.normalize import Normalize

    norm = getattr(net, "normalize", None)
    if not isinstance(norm, Normalize):
        return None
    return {"mean": norm.mean.flatten().tolist(), "std": norm.std.flatten().tolist()}


def _atomic_dir(out: Path) -> Path:
    """A temporary sibling folder of ``out`` to fill and then rename into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not is_bundle(out) and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out}: exists and is not a bundle; choose another --out.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # a normal folder once renamed (mkdtemp makes it private)
    return tmp


def trained_input_size(ckpt_path: str | os.PathLike) -> tuple[int, int] | int | None:
    """The input size a run ended training at, from the ``config.yaml`` of the run folder that
    holds ``ckpt_path`` (``<run>/checkpoints/X.ckpt``): the last stage's size, else the data's
    ``size`` (IMDB: ``max_length``); a bundle's own size. None where there is no such config."""
    import yaml

    if is_bundle(ckpt_path):
        inp = read_meta(ckpt_path)["input"]
        return inp.get("max_length") if inp.get("kind") == "text" else tuple(inp["size"])
    config = Path(ckpt_path).expanduser().resolve().parent.parent / "config.yaml"
    if not config.is_file():
        return None
    try:
        cfg = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError:
        return None
    callbacks = (cfg.get("trainer") or {}).get("callbacks") or []
    sizes = [
        st["size"] for cb in callbacks if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("Stages")
        for st in (cb.get("init_args") or {}).get("stages") or [] if isinstance(st, dict) and st.get("size") is not None
    ]
    data = (cfg.get("data") or {}).get("init_args") or {}
    size = sizes[-1] if sizes else data.get("size", data.get("max_length"))
    if isinstance(size, float) and data.get("size") is not None:  # a fraction of the data's size (Stages: size 1.0)
        base = data["size"]
        size = tuple(max(32, round(v * size)) for v in ((base, base) if isinstance(base, int) else base))
    return size if isinstance(size, int) else (tuple(size) if isinstance(size, (list, tuple)) and len(size) == 2 else None)


def bundle_meta(model: nn.Module, input_size: tuple[int, int] | int, name: str | None = None, source: str | None = None, tta: bool = False) -> dict[str, Any]:
    """``bundle.json`` of a task (without ``files``): its kind, network, input and decoding options, ``tta``."""
    from models.registry import UnsafeFileError, network_name

    kind = task_type(model)
    net = model.net
    try:
        net_name = network_name(net)
    except UnsafeFileError as e:
        raise BundleError(str(e)) from None
    spec = getattr(net, "init_args", None)
    if not isinstance(spec, dict):
        raise BundleError(f"{type(net).__name__}: the network records no init_args, so a bundle could not rebuild it (see models/classifier.py).")
    args = dict(spec)
    if "weights" in args:
        args["weights"] = None  # the state dict brings the weights: nothing to download
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "task": kind,
        "kind": model.kind,  # the task's kind (models/inference.py): how the output is read
        "name": name or kind,
        "net": {"name": net_name, "init_args": args},
        "weights": WEIGHTS,
        "classes": list(getattr(model, "class_names", []) or []),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source_checkpoint": source,
        "versions": {"torch": torch.__version__},
        "tta": bool(tta and hasattr(model, "tta")),  # answers averaged over flips (serving/predict.py)
    }
    if kind == "text":
        meta["input"] = {"kind": "text", "max_length": int(input_size if isinstance(input_size, int) else input_size[0]), "tokenizer": BACKBONE}
        args.update(backbone=BACKBONE, pretrained=False)
    else:
        meta["input"] = image_input(input_size, model.kind, _normalize_of(net))
    if kind == "segmentation":
        meta["void_index"] = model.void_index
    if kind == "multilabel":  # the task's decision (models/inference.decide_tags)
        meta["threshold"] = float(model.threshold)
        meta["thresholds"] = [round(float(t), 6) for t in model.thresholds.cpu()]
        meta.update(decision=str(getattr(model, "decision", "tuned")), beta=float(getattr(model, "beta", 2.0)), zero_division=float(getattr(model, "zero_division", 1.0)))
    return meta


def export_bundle(
    model: nn.Module,
    out: str | os.PathLike,
    input_size: tuple[int, int] | int,
    name: str | None = None,
    source: str | None = None,
    tta: bool = False,
) -> Path:
    """Write ``model`` (a task from ``tasks/``) as a bundle folder ``out`` (replaced atomically).

    Args:
        model: the trained LightningModule; its ``net`` must record ``init_args`` (the
            networks in ``models/`` do).
        out: the bundle folder.
        input_size: (height, width) images are resized to, or IMDB's ``max_length`` in tokens.
        name: a display name (e.g. the ``--task`` name).
        source: the checkpoint the weights came from, for the record.
        tta: serve answers averaged over flips (Planet 8 passes, others 2); default one pass.
    """
    kind = task_type(model)
    net = model.net
    meta = bundle_meta(model, input_size, name, source, tta)
    out = Path(out).expanduser().resolve()
    tmp = _atomic_dir(out)
    try:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}, str(tmp / WEIGHTS))
        if kind == "text":
            folder = tmp / BACKBONE
            net.tokenizer.save_pretrained(folder)
            net.encoder.config.save_pretrained(folder)
        meta["files"] = {f.relative_to(tmp).as_posix(): sha256_of(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        (tmp / META).write_text(json.dumps(meta, indent=2))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass
class Bundle:
    """A loaded bundle: the metadata, the network in eval mode and, for text, the tokenizer."""

    path: Path
    meta: dict[str, Any]
    net: nn.Module
    tokenizer: Any = None
    palette: list[list[int]] = field(default_factory=list)

    task = property(lambda self: self.meta["task"])
    classes = property(lambda self: self.meta["classes"])


def read_state(path: str | os.PathLike, meta: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The network state dict of a bundle (its files checked against their SHA-256 first)."""
    from safetensors.torch import load_file

    folder = bundle_dir(path)
    verify_files(folder, meta or read_meta(folder))
    file = folder / WEIGHTS
    try:
        state = load_file(str(file))
    except Exception as e:  # noqa: BLE001 - any unreadable file is one message
        raise BundleError(f"{file}: unreadable weights ({type(e).__name__}: {' '.join(str(e).split())[:160]}).") from None
    return finite(state, file)


def _build_net(folder: Path, meta: dict[str, Any]) -> nn.Module:
    from models.registry import network_class

    name = meta["net"]["name"]
    cls = network_class(name)  # read_meta admitted only registry names
    args = dict(meta["net"].get("init_args", {}))
    if "weights" in args:
        args["weights"] = None
    if meta["task"] == "text":
        args["backbone"] = str(folder / BACKBONE)  # the bundle's own tokenizer and config, nothing else
        args["pretrained"] = False
    try:
        return cls(**args)
    except Exception as e:  # noqa: BLE001 - wrong or unknown init_args: one message
        raise BundleError(f"{folder / META}: cannot build {name} from its init_args ({type(e).__name__}: {' '.join(str(e).split())[:200]}).") from None


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> Bundle:
    """Read a bundle: rebuild the network (no download), load its weights, eval mode."""
    folder = bundle_dir(path).resolve()
    meta = read_meta(folder)
    state = read_state(folder, meta)  # checks every file's SHA-256 before anything is built
    net = _build_net(folder, meta)
    check_net(folder, meta, net)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as e:
        raise BundleError(f"{folder / WEIGHTS}: does not fit {meta['net']['name']} ({str(e).splitlines()[0]}).") from None
    norm = meta["input"].get("normalize")
    if norm and getattr(net, "normalize", None) is not None:
        try:
            net.normalize.mean.copy_(torch.tensor(norm["mean"], dtype=torch.float32).view(1, -1, 1, 1))
            net.normalize.std.copy_(torch.tensor(norm["std"], dtype=torch.float32).view(1, -1, 1, 1))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise BundleError(f"{folder / META}: input.normalize must be {{'mean': [3 numbers], 'std': [3 numbers]}} ({e}).") from None
    net.to(device).eval()
    colours = palette(len(meta["classes"]), meta.get("void_index")).tolist() if meta["task"] == "segmentation" else []
    return Bundle(folder, meta, net, getattr(net, "tokenizer", None), colours)


def load_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Put the weights of a bundle or a Lightning checkpoint into ``model`` (weights only:
    no optimizer, schedule or epoch); returns what was loaded, for a message.

    A bundle must be of the model's task; Planet's thresholds come with it.
    """
    p = Path(path).expanduser()
    if is_bundle(p):
        folder = bundle_dir(p)
        meta = read_meta(folder)
        kind = task_type(model)
        if meta["task"] != kind:
            raise BundleError(f"{folder}: a '{meta['task']}' bundle cannot initialise a '{kind}' model ({type(model).__name__}).")
        try:
            model.net.load_state_dict(read_state(folder, meta))
        except (RuntimeError, TypeError, ValueError) as e:
            raise BundleError(f"{folder / WEIGHTS}: does not fit this model's network ({str(e).splitlines()[0]}); same backbone and classes?") from None
        if kind == "multilabel" and "thresholds" in meta:
            if list(meta["classes"]) != list(model.class_names):
                raise BundleError(f"{folder / META}: its tags differ from the model's ({len(meta['classes'])} vs {len(model.class_names)}).")
            model.thresholds.copy_(torch.tensor(meta["thresholds"], dtype=model.thresholds.dtype))
        return f"bundle {folder}"
    from models.registry import UnsafeFileError, load_tensors

    try:
        ckpt = load_tensors(p)
    except UnsafeFileError as e:
        raise BundleError(str(e)) from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise BundleError(f"{p}: not a Lightning checkpoint or bundle (no 'state_dict').")
    finite(state, p)  # (a BundleError is a ValueError: not inside the try below)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError) as e:
        raise BundleError(f"{p}: does not fit this model ({str(e).splitlines()[0]}); same task, backbone and classes?") from None
    return f"checkpoint {p}"
