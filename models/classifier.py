"""A timm backbone with a fresh head: classification (Planet) or regression (BIWI)."""

from __future__ import annotations

from torch import nn

from .normalize import Normalize
from .weights import create_timm, mean_std, no_weights


class TimmClassifier(nn.Module):
    """timm model taking raw images (uint8 or 0..1 floats), one output per class/target.

    Args:
        num_classes: outputs (linked from the datamodule where it has ``num_classes``).
        backbone: timm model name (``tf_efficientnet_lite0`` has offline weights; ``resnet50``...).
        weights: ``"imagenet"``, a state-dict path, or ``None`` (train from scratch).
        drop_rate: dropout before the head.
    """

    def __init__(self, num_classes: int = 1, backbone: str = "tf_efficientnet_lite0", weights: str | None = "imagenet", drop_rate: float = 0.2):
        super().__init__()
        weights = None if no_weights(weights) else weights
        # what rebuilds this network (serving bundles: serving/bundle.py)
        self.init_args = {"num_classes": num_classes, "backbone": backbone, "weights": weights, "drop_rate": drop_rate}
        self.backbone_name, self.weights = backbone, weights
        self.normalize = Normalize(*mean_std(backbone, weights))
        self.model = create_timm(backbone, weights, num_classes=num_classes, drop_rate=drop_rate)

    def forward(self, x):
        return self.model(self.normalize(x))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """The body's first half, its second half, then the head (timm's classifier)."""
        head = list(self.model.get_classifier().parameters())
        head_ids = {id(p) for p in head}
        body = [p for p in self.model.parameters() if id(p) not in head_ids]
        half = len(body) // 2
        return [body[:half], body[half:], head]
