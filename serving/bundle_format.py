"""The bundle format (``bundle.json``) and its checks: the network from the allow-list, every
file's SHA-256. Nothing here imports torch or builds anything: a bundle is refused before it is used."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from models.inference import TASKS, task_name
from models.registry import NETWORKS
from models.weights import sha256_of

FORMAT = "lesson3-bundle"
VERSION = 2  # 2: networks by registry name, safetensors weights, SHA-256 of every file
META, WEIGHTS, BACKBONE = "bundle.json", "weights.safetensors", "backbone"


class BundleError(ValueError):
    """A bundle that cannot be written or read: the message names the file and what is wrong."""


def is_bundle(path: str | os.PathLike) -> bool:
    """True for a bundle folder (or its ``bundle.json``)."""
    p = Path(path).expanduser()
    return (p / META).is_file() or (p.name == META and p.is_file())


def bundle_dir(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    return p.parent if p.name == META else p


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """``bundle.json`` of a bundle folder, checked."""
    folder = bundle_dir(path)
    file = folder / META
    if not folder.exists():
        raise BundleError(f"{folder}: no such bundle folder.")
    if not file.is_file():
        raise BundleError(f"{folder}: not a bundle (no {META}); write one with 'python train.py export --ckpt_path ...'.")
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError(f"{file}: not valid JSON ({type(e).__name__}: {e}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{file}: not a {FORMAT} file (format {meta.get('format') if isinstance(meta, dict) else None!r}).")
    if meta.get("version") != VERSION:
        raise BundleError(f"{file}: bundle version {meta.get('version')}; this code reads version {VERSION} (export it again: python train.py export --ckpt_path CHECKPOINT).")
    meta["task"] = task_name(meta.get("task"))
    if meta.get("task") not in TASKS:
        raise BundleError(f"{file}: unknown task {meta.get('task')!r} (expected one of {', '.join(TASKS)}).")
    for key in ("net", "input", "classes", "files"):
        if key not in meta:
            raise BundleError(f"{file}: missing '{key}'.")
    net, files = meta["net"], meta["files"]
    if not isinstance(net, dict) or "class_path" in net or not isinstance(net.get("name"), str) or net["name"] not in NETWORKS or not isinstance(net.get("init_args", {}), dict):
        named = net.get("name", net.get("class_path")) if isinstance(net, dict) else net
        raise BundleError(f"{file}: refused: network {named!r} is not one of the project's networks ({', '.join(NETWORKS)}); a bundle names one of these, never an import path.")
    if not isinstance(files, dict) or WEIGHTS not in files or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BundleError(f"{file}: 'files' must map each file of the bundle (at least {WEIGHTS}) to its SHA-256.")
    if not isinstance(meta["input"], dict) or not isinstance(meta["classes"], list) or not all(isinstance(c, str) for c in meta["classes"]):
        raise BundleError(f"{file}: 'input' must be an object and 'classes' a list of names.")
    inp = meta["input"]
    if meta["task"] == "text":
        if not (isinstance(inp.get("max_length"), int) and 1 <= inp["max_length"] <= 100_000):
            raise BundleError(f"{file}: input.max_length must be a token count (1..100000), not {inp.get('max_length')!r}.")
    elif not (isinstance(inp.get("size"), list) and len(inp["size"]) == 2 and all(isinstance(v, int) and 1 <= v <= 8192 for v in inp["size"])):
        raise BundleError(f"{file}: input.size must be [height, width] in pixels (1..8192), not {inp.get('size')!r}.")
    return meta


def verify_files(folder: Path, meta: dict[str, Any]) -> None:
    """Every file ``bundle.json`` lists exists inside the bundle with its recorded SHA-256, and
    the backbone folder (read by transformers) holds no unlisted file."""
    root = folder.resolve()
    for rel, digest in meta["files"].items():
        path = (root / rel).resolve()
        if path == root / META or root not in path.parents:
            raise BundleError(f"{folder / META}: lists '{rel}', which is not a file inside the bundle.")
        if not path.is_file():
            raise BundleError(f"{path}: missing (listed in {META}).")
        if sha256_of(path) != digest.lower():
            raise BundleError(f"{path}: refused: its SHA-256 differs from the one in {META} (the file was changed or replaced).")
    if meta["task"] == "text":
        extra = [f for f in sorted((root / BACKBONE).rglob("*")) if f.is_file() and f.relative_to(root).as_posix() not in meta["files"]]
        if extra:
            raise BundleError(f"{extra[0]}: refused: not listed in {META} (a bundle's files are all named with their SHA-256).")


def finite(state: dict, file: Path) -> dict:
    """``state``, or one :class:`BundleError` line where weights hold NaN/inf (a diverged model answers nothing)."""
    from models.registry import non_finite_weights

    if what := non_finite_weights(state):
        raise BundleError(f"{file}: refused: {what}; the model had diverged (export an earlier, finite checkpoint).")
    return state


def check_net(folder: Path, meta: dict, net) -> None:
    """``bundle.json`` against the network it built: one output per class (two, x and y, for a point),
    and a text bundle's ``max_length`` within its encoder's positions; else one :class:`BundleError` line."""
    outputs = (getattr(net, "init_args", None) or {}).get("num_classes")
    want = 2 if meta["task"] == "points" else len(meta["classes"])
    if outputs is not None and outputs != want:
        what = "x and y" if meta["task"] == "points" else f"{want} class name(s)"
        raise BundleError(f"{folder / META}: lists {what} but its network has {outputs} output(s); export the bundle again.")
    config = getattr(getattr(net, "encoder", None), "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if meta["task"] == "text" and isinstance(limit, int) and meta["input"]["max_length"] > limit:
        raise BundleError(f"{folder / META}: input.max_length {meta['input']['max_length']} is over its encoder's {limit} positions.")
