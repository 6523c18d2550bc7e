"""Input channels other than a pretrained network's 3 (e.g. Planet's RGB + near infrared).

The network is built and its pretrained (3-channel) weights loaded as usual, then its first
convolution is widened in place (:func:`adapt_first_conv`), so every weight source (the packaged
EfficientNet-Lite0, timm/smp downloads, a state-dict file) composes with ``in_chans`` the same way,
and a network rebuilt without weights (serving bundles) has the same layers.

The first convolution's new weight follows fastai's ``n_in`` (``_load_pretrained_weights`` in
``fastai/vision/learner.py``) for 1 and 2 channels (the sum of the RGB filters; the first two
filters times 1.5). For more than 3 channels fastai keeps the RGB filters and zeroes the rest; here
the RGB filters are kept exactly too, and each extra channel starts from the mean of the RGB filters
scaled by ``3 / in_chans`` (timm's ``adapt_input_conv`` factor), so the extra bands contribute from
the first step while a band-uniform input changes the first layer's response by ``k / in_chans``
for ``k`` extra channels. Keeping the RGB filters means an input whose extra channels are zero
after normalisation gives exactly the pretrained network's output.
"""

from __future__ import annotations

import torch
from torch import nn


def first_conv(module: nn.Module) -> nn.Conv2d:
    """The network's input convolution: its first ``nn.Conv2d`` (3 input channels, not grouped)."""
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        found = "none" if conv is None else f"{conv.in_channels} input channels, groups {conv.groups}"
        raise ValueError(f"{type(module).__name__}: no 3-channel input convolution to adapt to other channel counts (found {found}).")
    return conv


def adapted_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A ``(out, 3, kh, kw)`` first-convolution weight for ``in_chans`` input channels (rules above)."""
    if in_chans < 1:
        raise ValueError(f"in_chans {in_chans}: must be at least 1.")
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    if in_chans == 2:
        return weight[:, :2] * 1.5
    if in_chans == 3:
        return weight.clone()
    extra = weight.mean(dim=1, keepdim=True) * (3 / in_chans)
    return torch.cat([weight, extra.expand(-1, in_chans - 3, -1, -1)], dim=1).contiguous()


def adapt_first_conv(module: nn.Module, in_chans: int) -> nn.Module:
    """Widen (or narrow) the first convolution of ``module`` to ``in_chans`` inputs, in place."""
    if in_chans == 3:
        return module
    conv = first_conv(module)
    with torch.no_grad():
        conv.weight = nn.Parameter(adapted_weight(conv.weight.detach(), in_chans))
    conv.in_channels = in_chans
    return module


def input_stats(mean, std, in_chans: int, band_stats=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel normalisation for ``in_chans`` channels from the pretrained RGB ``mean``/``std``.

    Args:
        band_stats: ``[means, stds]`` of the channels after the first three, on the 0..1 scale
            (e.g. measured from the training images by the datamodule); default: the mean of the
            RGB statistics for each extra channel.

    Raises:
        ValueError: ``band_stats`` for another number of extra channels than ``in_chans - 3``.
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    extra = max(0, in_chans - 3)
    if band_stats is not None:
        if len(band_stats) != 2 or len(band_stats[0]) != len(band_stats[1]):
            raise ValueError(f"band_stats {band_stats}: expected [means, stds] of the channels after RGB.")
        if len(band_stats[0]) != extra:
            raise ValueError(
                f"the data has {3 + len(band_stats[0])} channels (band_stats for {len(band_stats[0])} after RGB) "
                f"but the network takes {in_chans}: set --model.init_args.net.init_args.in_chans {3 + len(band_stats[0])}."
            )
        if any(float(s) <= 0 for s in band_stats[1]):
            raise ValueError(f"band_stats {band_stats}: standard deviations must be positive.")
        return mean + tuple(float(m) for m in band_stats[0]), std + tuple(float(s) for s in band_stats[1])
    if in_chans == 1:
        return (sum(mean) / 3,), (sum(std) / 3,)
    if in_chans == 2:
        return mean[:2], std[:2]
    return mean + (sum(mean) / 3,) * extra, std + (sum(std) / 3,) * extra
