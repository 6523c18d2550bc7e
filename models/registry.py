"""What may come out of a file someone hands us: data, never code.

* :data:`NETWORKS`, the allow-list of the project's own network builders by short name. A bundle
  names its network from this list (``"UNet"``), never by an import path; any other name is refused.
* :func:`load_tensors`, ``torch.load(..., weights_only=True)`` with one-line errors: tensors, plain
  containers and numbers only. A pickle that would import or call anything else is refused
  before it runs.
* :func:`net_spec` / :func:`build_net`: a network as data (its registry name and ``init_args``) and
  back, without pretrained downloads (a checkpoint or bundle brings the weights).
* :func:`non_finite_weights`: what is wrong with weights holding NaN or inf (a diverged run's), which
  nothing validates, exports or serves.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

# short name -> (module of this package, class); imported only when a bundle asks for it
NETWORKS: dict[str, tuple[str, str]] = {
    "UNet": ("models.unet", "UNet"),
    "TimmClassifier": ("models.classifier", "TimmClassifier"),
    "TransformerClassifier": ("models.text", "TransformerClassifier"),
}


class UnsafeFileError(ValueError):
    """A file that is not plain weights/data, or a network name not on the allow-list."""


def network_class(name: Any) -> type:
    """The builder class registered as ``name``; :class:`UnsafeFileError` for anything else."""
    if not isinstance(name, str) or name not in NETWORKS:
        raise UnsafeFileError(
            f"network {name!r} is not one of the project's networks ({', '.join(NETWORKS)}); "
            "a bundle names its network from this list, never an import path."
        )
    module, attr = NETWORKS[name]
    return getattr(importlib.import_module(module), attr)


def network_name(net: Any) -> str:
    """The registry name of a network instance (for writing a bundle)."""
    for name, (module, attr) in NETWORKS.items():
        if type(net).__module__ == module and type(net).__qualname__ == attr:
            return name
    raise UnsafeFileError(
        f"{type(net).__module__}.{type(net).__qualname__}: not one of the project's networks ({', '.join(NETWORKS)}), so a bundle could not name it."
    )


def net_spec(net: Any) -> dict:
    """``{"name": registry name, "init_args": ...}``: what rebuilds ``net`` (plain data)."""
    return {"name": network_name(net), "init_args": dict(getattr(net, "init_args", {}))}


def build_net(spec: dict) -> Any:
    """The network a :func:`net_spec` describes, untrained (no pretrained weights fetched: the caller
    loads trained ones); :class:`UnsafeFileError` for a name not on the allow-list."""
    cls = network_class(spec.get("name"))
    args = dict(spec.get("init_args") or {})
    if "weights" in args:
        args["weights"] = None
    if "pretrained" in args:
        args["pretrained"] = False
    return cls(**args)


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"it holds Python objects, not only weights (it would import {m.group(1)})"
    if isinstance(e, pickle.UnpicklingError):
        return f"it is not plain weights ({text[:160]})"
    if isinstance(e, (zipfile.BadZipFile, EOFError)) or "PytorchStreamReader" in text or "invalid load key" in text:
        return "not a torch file, or truncated"
    return f"{type(e).__name__}: {text[:160]}"


def load_tensors(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU.

    Raises:
        UnsafeFileError: one line naming the file and why it was refused (code in the pickle,
            not a torch file, truncated). Nothing in the file has run.
    """
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every unreadable file is one message
        raise UnsafeFileError(f"{path}: refused to load: {_reason(e)}; only weights are read from files (torch.load weights_only=True).") from None


def non_finite(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` that hold a NaN or an inf (one device sync)."""
    import torch

    names = [k for k, v in tensors.items() if torch.is_tensor(v) and (v.is_floating_point() or v.is_complex())]
    if not names:
        return []
    flags = [torch.isfinite(tensors[k]).all() for k in names]
    flags = torch.stack([f.to(flags[0].device) for f in flags]).tolist()
    return [k for k, ok in zip(names, flags) if not ok]


def non_finite_weights(tensors: dict[str, Any]) -> str | None:
    """``"N weight tensor(s) hold NaN/inf (a, b, c, ...)"``, or None where every tensor is finite."""
    bad = non_finite(tensors)
    return f"{len(bad)} weight tensor(s) hold NaN/inf ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})" if bad else None
