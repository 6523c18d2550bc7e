"""A timm backbone with a fresh head: classification (Planet) or regression (BIWI)."""

from __future__ import annotations

from torch import nn

from .channels import adapt_first_conv, input_stats
from .normalize import Normalize
from .weights import create_timm, mean_std, no_weights


class TimmClassifier(nn.Module):
    """timm model taking raw images (uint8 or 0..1 floats), one output per class/target.

    Args:
        num_classes: outputs (linked from the datamodule where it has ``num_classes``).
        backbone: timm model name (``tf_efficientnet_lite0`` has offline weights; ``resnet50``...).
        weights: ``"imagenet"``, a state-dict path, or ``None`` (train from scratch).
        drop_rate: dropout before the head.
        in_chans: input channels (e.g. 4 for Planet's RGB + near-infrared TIFFs): the pretrained first
            convolution is adapted (``models/channels.py``: RGB filters kept, extra channels from their mean).
        band_stats: ``[means, stds]`` (0..1 scale) of the channels after RGB, for the normalisation;
            linked from the datamodule where it measures them (``--data.init_args.band_stats``).
    """

    def __init__(
        self,
        num_classes: int = 1,
        backbone: str = "tf_efficientnet_lite0",
        weights: str | None = "imagenet",
        drop_rate: float = 0.2,
        in_chans: int = 3,
        band_stats: list[list[float]] | None = None,
    ):
        super().__init__()
        weights = None if no_weights(weights) else weights
        # what rebuilds this network (serving bundles: serving/bundle.py)
        self.init_args = {"num_classes": num_classes, "backbone": backbone, "weights": weights, "drop_rate": drop_rate, "in_chans": in_chans, "band_stats": band_stats}
        self.backbone_name, self.weights = backbone, weights
        self.normalize = Normalize(*input_stats(*mean_std(backbone, weights), in_chans, band_stats))
        self.model = adapt_first_conv(create_timm(backbone, weights, num_classes=num_classes, drop_rate=drop_rate), in_chans)

    def forward(self, x):
        return self.model(self.normalize(x))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The body's first half, its second half, then the head (timm's classifier)."""
        head = list(self.model.get_classifier().parameters())
        head_ids = {id(p) for p in head}
        body = [p for p in self.model.parameters() if id(p) not in head_ids]
        half = len(body) // 2
        return [body[:half], body[half:], head]
