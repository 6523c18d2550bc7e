"""The packaged EfficientNet-Lite0 weights are real ImageNet weights; missing weights fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import TimmClassifier, UNet, WeightsUnavailableError
from models.weights import LITE0, lite0_state_dict


def test_packaged_weights_classify_grace_hopper_as_military_uniform():
    import matplotlib.cbook as cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BICUBIC))
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None]  # uint8: the net normalises (mean = std = 0.5)
    net = TimmClassifier(num_classes=1000, backbone=LITE0, weights="imagenet", drop_rate=0.0).eval()
    net.model.load_state_dict(lite0_state_dict())  # the packaged ImageNet head too
    with torch.no_grad():
        top = net(x).softmax(-1)[0].topk(3)
    assert top.indices[0].item() == 652, top  # ImageNet 652: military uniform


def test_unet_encoder_gets_the_packaged_weights():
    net = UNet(num_classes=5, encoder="tu-tf_efficientnet_lite0", weights="imagenet")
    ref = lite0_state_dict()
    enc = net.unet.encoder.model.state_dict()
    assert torch.equal(enc["conv_stem.weight"], ref["conv_stem.weight"])
    assert torch.equal(enc["blocks.6.0.conv_pw.weight"], ref["blocks.6.0.conv_pw.weight"])
    scratch = UNet(num_classes=5, encoder="tu-tf_efficientnet_lite0", weights=None)
    assert not torch.equal(scratch.unet.encoder.model.state_dict()["conv_stem.weight"], ref["conv_stem.weight"])


def test_unavailable_weights_fail_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="weights null"):
        TimmClassifier(num_classes=3, backbone="resnet34", weights="imagenet")


def test_unavailable_unet_weights_fail_with_a_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="weights null"):
        UNet(num_classes=3, encoder="resnet34", weights="imagenet")
