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


@pytest.fixture
def empty_caches(monkeypatch, tmp_path):
    """The hub offline and every weights cache timm, smp and torch read an empty folder under ``tmp_path``:
    whatever this machine has cached, no resnet34 weights can be found."""
    import huggingface_hub.constants as hub
    import torch.hub
    from timm.models._hub import get_cache_dir

    home, caches = tmp_path / "hf", tmp_path / "cache"
    for var, path in (("HF_HOME", home), ("HF_HUB_CACHE", home / "hub"), ("HUGGINGFACE_HUB_CACHE", home / "hub"),
                      ("TORCH_HOME", tmp_path / "torch"), ("XDG_CACHE_HOME", caches)):
        monkeypatch.setenv(var, str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub (timm's and smp's downloads) reads its environment once, at import
    for name, value in (("HF_HOME", str(home)), ("HF_HUB_CACHE", str(home / "hub")), ("HUGGINGFACE_HUB_CACHE", str(home / "hub")), ("HF_HUB_OFFLINE", True)):
        monkeypatch.setattr(hub, name, value)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a torch.hub.set_dir() elsewhere would win over TORCH_HOME
    assert torch.hub.get_dir().startswith(str(tmp_path)) and get_cache_dir().startswith(str(tmp_path)) and hub.is_offline_mode()
    return tmp_path


def test_unavailable_weights_fail_with_a_hint(empty_caches):
    with pytest.raises(WeightsUnavailableError, match="weights null"):
        TimmClassifier(num_classes=3, backbone="resnet34", weights="imagenet")


def test_unavailable_unet_weights_fail_with_a_hint(empty_caches):
    with pytest.raises(WeightsUnavailableError, match="weights null"):
        UNet(num_classes=3, encoder="resnet34", weights="imagenet")
