"""U-Net over a (pretrained) encoder, from segmentation-models-pytorch."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch.nn.functional as F
from torch import nn

from .channels import adapt_first_conv, input_stats
from .normalize import Normalize
from .weights import LITE0, WeightsUnavailableError, _hint, load_lite0, mean_std, no_weights, timm_name


class UNet(nn.Module):
    """smp U-Net that takes raw images (uint8 or 0..1 floats) and returns class logits.

    Args:
        num_classes: output channels (linked from the datamodule's class list by the CLI).
        encoder: smp encoder name, e.g. ``tu-tf_efficientnet_lite0`` (offline weights) or ``resnet34``.
        weights: ``"imagenet"`` or ``None`` (train from scratch).
        decoder_channels: smp decoder widths, from deep to shallow.
        in_chans: input channels; the pretrained first convolution is adapted (``models/channels.py``).
        band_stats: ``[means, stds]`` (0..1 scale) of the channels after RGB, for the normalisation.
    """

    def __init__(
        self,
        num_classes: int = 32,
        encoder: str = "tu-tf_efficientnet_lite0",
        weights: str | None = "imagenet",
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        in_chans: int = 3,
        band_stats: list[list[float]] | None = None,
    ):
        super().__init__()
        weights = None if no_weights(weights) else weights
        # what rebuilds this network (serving bundles: serving/bundle.py)
        self.init_args = {"num_classes": num_classes, "encoder": encoder, "weights": weights, "decoder_channels": list(decoder_channels),
                          "in_chans": in_chans, "band_stats": band_stats}
        self.encoder_name, self.weights = encoder, weights
        self.normalize = Normalize(*input_stats(*mean_std(encoder, weights), in_chans, band_stats))
        offline_lite0 = weights == "imagenet" and timm_name(encoder) == LITE0
        smp_weights = None if (weights is None or offline_lite0) else weights
        try:
            self.unet = smp.Unet(
                encoder_name=encoder,
                encoder_weights=smp_weights,
                classes=num_classes,
                decoder_channels=tuple(decoder_channels),
            )
        except (KeyError, ValueError) as e:
            raise ValueError(f"--model.net.init_args.encoder '{encoder}': {e}") from e
        except Exception as e:  # download failed / offline hub
            raise WeightsUnavailableError(_hint(encoder) + f" ({type(e).__name__}: {e})") from e
        if offline_lite0:
            load_lite0(self.unet.encoder.model)
        adapt_first_conv(self.unet.encoder, in_chans)

    def forward(self, x):
        """Any input size: padded (with the mean colour) up to the encoder's stride of 32, and the
        logits cropped back, so e.g. CamVid's 360x480 trains as it is (as fastai's U-Net does)."""
        x = self.normalize(x)
        h, w = x.shape[-2:]
        ph, pw = -h % 32, -w % 32
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        out = self.unet(x)
        return out[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w] if (ph or pw) else out

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from input to output, for freezing and discriminative LRs:
        the encoder's first half, its second half, then decoder + head."""
        enc = list(self.unet.encoder.parameters())
        half = len(enc) // 2
        head = list(self.unet.decoder.parameters()) + list(self.unet.segmentation_head.parameters())
        return [enc[:half], enc[half:], head]
