"""U-Net over a (pretrained) encoder, from segmentation-models-pytorch."""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from .normalize import Normalize
from .weights import LITE0, WeightsUnavailableError, _hint, load_lite0, mean_std, no_weights, timm_name


class UNet(nn.Module):
    """smp U-Net that takes raw images (uint8 or 0..1 floats) and returns class logits.

    Args:
        num_classes: output channels (linked from the datamodule's class list by the CLI).
        encoder: smp encoder name, e.g. ``tu-tf_efficientnet_lite0`` (offline weights) or ``resnet34``.
        weights: ``"imagenet"`` or ``None`` (train from scratch).
        decoder_channels: smp decoder widths, from deep to shallow.
    """

    def __init__(
        self,
        num_classes: int = 32,
        encoder: str = "tu-tf_efficientnet_lite0",
        weights: str | None = "imagenet",
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    ):
        super().__init__()
        weights = None if no_weights(weights) else weights
        # what rebuilds this network (serving bundles: serving/bundle.py)
        self.init_args = {"num_classes": num_classes, "encoder": encoder, "weights": weights, "decoder_channels": list(decoder_channels)}
        self.encoder_name, self.weights = encoder, weights
        self.normalize = Normalize(*mean_std(encoder, weights))
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

    def forward(self, x):
        return self.unet(self.normalize(x))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from input to output, for freezing and discriminative LRs:
        the encoder's first half, its second half, then decoder + head."""
        enc = list(self.unet.encoder.parameters())
        half = len(enc) // 2
        head = list(self.unet.decoder.parameters()) + list(self.unet.segmentation_head.parameters())
        return [enc[:half], enc[half:], head]
