"""4-band Planet: TIFF reading (band order, scaling, bad files), the adapted first convolution,
the measured NIR statistics reaching the network, and one epoch from TIFFs through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from datamodules.bands import BandReader, PlanetTifDataModule, check_tif, measure, read_bands, write_planet_tif_sample
from datamodules.base import DataError, split_indices
from datamodules.planet_sample import draw_tags, make_tile
from models import TimmClassifier, UNet
from models.channels import adapt_first_conv, adapted_weight, input_stats
from recheck import assert_metrics_recomputed


def write_tifs(root: Path, n: int = 12, size: int = 32, seed: int = 0) -> Path:
    """Kaggle's TIFF layout: ``train_v2.csv`` + ``train-tif-v2/train_<i>.tif``, 16-bit, bands B, G, R, NIR
    (uncompressed, as the competition's files), NIR bright where the tile is green."""
    rng = np.random.default_rng(seed)
    (root / "train-tif-v2").mkdir(parents=True)
    rows = []
    for i in range(n):
        tags = draw_tags(rng)
        rgb = make_tile(rng, tags, size).astype(np.float32)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        nir = np.clip(1.5 * g - 0.5 * b, 0, 255)
        raw = np.stack([b, g, r, nir], axis=-1) * 30 + 2000 + rng.normal(0, 10, (size, size, 4))
        tifffile.imwrite(root / "train-tif-v2" / f"train_{i}.tif", np.clip(raw, 0, 65535).astype(np.uint16))
        rows.append((f"train_{i}", " ".join(tags)))
    with open(root / "train_v2.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image_name", "tags"), *rows])
    return root


def constant_tif(path: Path, values, planar: bool = False) -> Path:
    a = np.ones((8, 8, len(values)), np.uint16) * np.asarray(values, np.uint16)
    if planar:
        tifffile.imwrite(path, np.moveaxis(a, -1, 0), photometric="minisblack", planarconfig="separate")
    else:
        tifffile.imwrite(path, a)
    return path


# -- reading -------------------------------------------------------------------------------
@pytest.mark.parametrize("planar", [False, True])
def test_bands_are_read_as_r_g_b_nir(tmp_path, planar):
    path = constant_tif(tmp_path / "a.tif", [100, 200, 300, 400], planar)  # B G R NIR in the file
    assert read_bands(path)[0, 0].tolist() == [300, 200, 100, 400]
    check_tif(path)


def test_each_band_is_scaled_by_its_own_divisor(tmp_path):
    path = constant_tif(tmp_path / "a.tif", [100, 200, 300, 400])
    out = BandReader([300, 400, 100, 1600])(path)  # R G B NIR scales
    assert out.dtype == np.uint8 and out.shape == (8, 8, 4)
    assert out[0, 0].tolist() == [255, 128, 255, 64]  # 300/300, 200/400, 100/100 (clipped), 400/1600


@pytest.mark.parametrize("bands", [1, 3, 5])
def test_wrong_band_count_names_the_file_and_its_csv_line(tmp_path, bands):
    root = write_tifs(tmp_path / "p", n=6)
    bad = root / "train-tif-v2" / "train_3.tif"
    if bands > 1:  # one page of `bands` samples each
        tifffile.imwrite(bad, np.zeros((32, 32, bands), np.uint16), photometric="minisblack", planarconfig="contig")
    else:
        tifffile.imwrite(bad, np.zeros((32, 32), np.uint16))
    with pytest.raises(DataError, match=rf"{bad}: {bands} band\(s\).*expected 4 \(B, G, R, NIR\).*Listed in train_v2.csv, line 5") as e:
        PlanetTifDataModule(root=str(root), size=32, num_workers=0).setup("fit")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=f"{bad}: {bands} band"):
        read_bands(bad)


def test_truncated_and_float_tifs_name_the_file(tmp_path):
    path = constant_tif(tmp_path / "a.tif", [1, 2, 3, 4])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=f"{path}: unreadable TIFF"):
        check_tif(path)
    fl = tmp_path / "f.tif"
    tifffile.imwrite(fl, np.zeros((8, 8, 4), np.float32))
    with pytest.raises(DataError, match=f"{fl}: float32 samples"):
        read_bands(fl)


def test_not_a_tif_folder(tmp_path):
    (tmp_path / "train-jpg").mkdir()
    (tmp_path / "train_v2.csv").write_text("image_name,tags\n")
    with pytest.raises(DataError, match="train-tif-v2: missing folder"):
        PlanetTifDataModule(root=str(tmp_path), num_workers=0).setup("fit")


def test_scale_and_nir_stats_are_measured_on_training_images(tmp_path):
    root = write_tifs(tmp_path / "p", n=12)
    dm = PlanetTifDataModule(root=str(root), size=32, num_workers=0, stats_images=100)
    train, valid = split_indices(12, 0.2, 42)
    raw = np.concatenate([read_bands(root / "train-tif-v2" / f"train_{i}.tif")[::2, ::2].reshape(-1, 4) for i in train]).astype(np.float32)
    scale = np.percentile(raw, 99, axis=0)
    assert dm.band_scale == pytest.approx(scale.tolist())
    nir = np.clip(np.rint(raw[:, 3] * 255 / scale[3]), 0, 255) / 255
    assert dm.band_stats == [[pytest.approx(nir.mean())], [pytest.approx(nir.std())]]
    dm.setup("fit")
    item = dm.datasets["train"][0]
    assert item["image"].shape == (4, 32, 32) and item["image"].dtype == torch.uint8


def test_given_scale_and_stats_are_not_measured(tmp_path, monkeypatch):
    root = write_tifs(tmp_path / "p", n=6)
    monkeypatch.setattr("datamodules.bands.measure", lambda *a, **k: pytest.fail("measured"))
    dm = PlanetTifDataModule(root=str(root), size=32, num_workers=0, band_scale=[9000, 9000, 9000, 9000], band_stats=[[0.4], [0.2]])
    assert dm.band_stats == [[0.4], [0.2]] and dm.band_scale == [9000, 9000, 9000, 9000]
    with pytest.raises(DataError, match="band_scale \\[1, 2\\]: give 4 positive"):
        PlanetTifDataModule(root=str(root), band_scale=[1, 2])


def test_builtin_tif_sample_is_in_the_kaggle_layout(tmp_path):
    write_planet_tif_sample(tmp_path, n=10, size=32)
    first = read_bands(tmp_path / "train-tif-v2" / "train_0.tif")
    assert first.dtype == np.uint16 and first.shape == (32, 32, 4)
    paths = sorted((tmp_path / "train-tif-v2").glob("*.tif"))
    scale, stats = measure(paths)
    raw = np.concatenate([read_bands(p)[::2, ::2].reshape(-1, 4) for p in paths]).astype(np.float32)  # the compressed files read back
    assert scale == pytest.approx(np.percentile(raw, 99, axis=0).tolist())
    nir = np.clip(np.rint(raw[:, 3] * 255 / scale[3]), 0, 255) / 255
    assert stats == [[pytest.approx(nir.mean())], [pytest.approx(nir.std())]]


# -- the first convolution and the normalisation --------------------------------------------------
@pytest.mark.parametrize("in_chans", [4, 5])
def test_adapted_conv_gives_the_rgb_output_when_the_extra_channels_are_zero(in_chans):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    rgb = torch.randn(2, 3, 16, 16)
    before = net(rgb)
    w = net[0].weight.detach().clone()
    adapt_first_conv(net, in_chans)
    assert net[0].in_channels == in_chans and net[0].weight.shape == (8, in_chans, 3, 3)
    assert torch.equal(net[0].weight[:, :3], w)
    assert torch.allclose(net[0].weight[:, 3:], (w.mean(1, keepdim=True) * 3 / in_chans).expand(-1, in_chans - 3, -1, -1))
    x = torch.cat([rgb, torch.zeros(2, in_chans - 3, 16, 16)], 1)
    assert torch.allclose(net(x), before, atol=1e-6)
    assert not torch.allclose(net(torch.cat([rgb, torch.ones(2, in_chans - 3, 16, 16)], 1)), before)  # the band counts


def test_fewer_channels_follow_fastai():
    w = torch.randn(4, 3, 3, 3)
    assert torch.allclose(adapted_weight(w, 1), w.sum(1, keepdim=True))
    assert torch.allclose(adapted_weight(w, 2), w[:, :2] * 1.5)


def test_four_band_classifier_matches_the_pretrained_rgb_one_when_nir_sits_at_its_mean():
    torch.manual_seed(0)
    rgb_net = TimmClassifier(num_classes=5).eval()
    net = TimmClassifier(num_classes=5, in_chans=4, band_stats=[[0.3], [0.1]]).eval()
    net.load_state_dict({k: v for k, v in rgb_net.state_dict().items() if "conv_stem" not in k}, strict=False)
    assert net.model.conv_stem.in_channels == 4 and torch.equal(net.model.conv_stem.weight[:, :3], rgb_net.model.conv_stem.weight)
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    x4 = torch.cat([x.float() / 255, torch.full((2, 1, 64, 64), 0.3)], 1)  # NIR at its mean: 0 after normalising
    with torch.no_grad():
        assert torch.allclose(net(x4), rgb_net(x), atol=1e-5)
    assert net.normalize.mean.flatten().tolist() == pytest.approx([0.5, 0.5, 0.5, 0.3])
    assert net.init_args["in_chans"] == 4 and net.init_args["band_stats"] == [[0.3], [0.1]]  # rebuilt by bundles


def test_four_band_unet_keeps_the_rgb_encoder():
    unet = UNet(num_classes=3, in_chans=4).eval()
    with torch.no_grad():
        assert unet(torch.zeros(1, 4, 32, 32, dtype=torch.uint8)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="the input has 3 channels but the network takes 4"):
        unet(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_stats_for_another_band_count_say_which_in_chans():
    with pytest.raises(ValueError, match="in_chans 4"):
        TimmClassifier(num_classes=2, weights=None, band_stats=[[0.3], [0.1]])
    assert input_stats((0.2, 0.4, 0.6), (0.1, 0.2, 0.3), 4) == ((0.2, 0.4, 0.6, pytest.approx(0.4)), (0.1, 0.2, 0.3, pytest.approx(0.2)))


# -- one epoch from TIFFs ----------------------------------------------------------------------
def test_planet_tif_trains_one_epoch_from_tiffs(run_cli, tmp_path):
    root = write_tifs(tmp_path / "planet_tif", n=12)
    cli, run_dir = run_cli([
        "--task", "planet_tif", "--data.init_args.root", str(root), "--data.init_args.size", "32",
        "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0", "--trainer.max_epochs", "1",
    ])
    out = json.loads((run_dir / "metrics.json").read_text())
    assert out["epochs"] == 1 and out["last_checkpoint"]
    # F2 and the tag accuracy are those of the final 4-band weights on the validation TIFFs (sklearn's F2)
    assert_metrics_recomputed(cli, out["metrics"], ("val/f2", "val/acc_thresh", "val/loss"))
    net, dm = cli.model.net, cli.datamodule
    assert isinstance(dm, PlanetTifDataModule) and net.model.conv_stem.in_channels == 4
    assert net.normalize.mean.flatten()[3].item() == pytest.approx(dm.band_stats[0][0])  # measured, linked
    assert net.normalize.std.flatten()[3].item() == pytest.approx(dm.band_stats[1][0])
    assert (run_dir / "pictures" / "show_batch.png").is_file()
