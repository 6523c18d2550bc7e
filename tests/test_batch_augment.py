"""Batch augmentation on the device: masks and points stay in step with the images."""

import pytest
import torch

from datamodules.base import DataError
from datamodules.biwi import BiwiDataModule
from datamodules.camvid import CamVidDataModule
from datamodules.planet import PlanetDataModule
from datamodules.batch_augment import BatchAugment

COLOURS = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=torch.uint8)


def quadrants(b=16, h=64, w=96):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = ((yy >= h // 2).long() * 2 + (xx >= w // 2).long()).repeat(b, 1, 1)
    return COLOURS[mask].permute(0, 3, 1, 2).contiguous(), mask


@pytest.mark.parametrize("padding", ["reflection", "zeros"])
def test_mask_moves_with_image(padding):
    image, mask = quadrants()
    aug = BatchAugment(flip_v=True, max_rotate=30, zoom=(1.0, 1.3), p_affine=1.0, max_lighting=0, padding=padding, mask_key="mask")
    out = aug({"image": image, "mask": mask}, generator=torch.Generator().manual_seed(0))
    assert out["image"].dtype == torch.float32 and out["mask"].dtype == torch.long
    assert not torch.equal(out["mask"], mask)  # something moved
    # the colour of every pixel says its class: nearest colour == the moved mask
    dist = (out["image"].permute(0, 2, 3, 1)[..., None, :] - COLOURS.float() / 255).abs().sum(-1)
    inside = out["image"].sum(1) > 0  # zero padding is black: no colour to compare
    agree = (dist.argmin(-1) == out["mask"])[inside].float().mean()
    assert agree > 0.99


def test_point_moves_with_image():
    b, h, w = 12, 60, 80
    g = torch.Generator().manual_seed(3)
    points = torch.rand(b, 2, generator=g) * 1.2 - 0.6
    image = torch.zeros(b, 1, h, w)
    px = ((points[:, 0] + 1) * w / 2 - 0.5).round().long()
    py = ((points[:, 1] + 1) * h / 2 - 0.5).round().long()
    for i in range(b):
        image[i, 0, py[i] - 1 : py[i] + 2, px[i] - 1 : px[i] + 2] = 1  # a 3x3 dot on the point
    aug = BatchAugment(flip_v=True, max_rotate=30, zoom=(1.0, 1.3), p_affine=1.0, max_lighting=0, padding="zeros", point_key="target")
    out = aug({"image": image, "target": points}, generator=g)
    for i in range(b):
        ys, xs = torch.nonzero(out["image"][i, 0] > 0.3, as_tuple=True)
        centre = torch.stack([xs.float().mean(), ys.float().mean()])
        q = out["target"][i]
        moved = torch.stack([(q[0] + 1) * w / 2 - 0.5, (q[1] + 1) * h / 2 - 0.5])
        assert (centre - moved).norm() < 1.0, (i, centre, moved)


def test_dihedral_keeps_square_content_and_lighting_bounds():
    image = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    aug = BatchAugment(flip_v=True, transpose=True, p_affine=0.0, max_lighting=0.0)
    out = aug({"image": image, "target": torch.ones(32, 17)}, generator=torch.Generator().manual_seed(0))
    x = image.float() / 255
    syms = [x, x.flip(-1), x.flip(-2), x.flip(-1, -2)]
    syms += [s.transpose(-1, -2) for s in syms]
    for i in range(32):  # each output is exactly one of the 8 symmetries of its input
        assert min((out["image"][i] - s[i]).abs().max() for s in syms) < 1e-5
    assert torch.equal(out["target"], torch.ones(32, 17))  # tags do not move
    lit = BatchAugment(flip_h=False, p_affine=0, max_lighting=0.5, p_lighting=1.0)({"image": image})
    assert lit["image"].min() >= 0 and lit["image"].max() <= 1
    with pytest.raises(ValueError, match="square"):
        BatchAugment(transpose=True)({"image": torch.zeros(2, 3, 8, 16)})


@pytest.mark.parametrize("cls", [CamVidDataModule, PlanetDataModule, BiwiDataModule])
def test_datamodules_move_augmentation_to_the_device(cls):
    dm = cls(augment_on="gpu", num_workers=0, batch_size=4)
    dm.setup("fit")
    assert isinstance(dm.batch_augment, BatchAugment)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8  # the loaders only decode and resize
    out = dm.batch_augment(batch)
    assert out["image"].shape == batch["image"].shape and out["image"].dtype == torch.float32
    cpu = cls(augment_on="auto", num_workers=0, batch_size=4)  # no CUDA trainer: loaders augment
    cpu.setup("fit")
    assert cpu.batch_augment is None
    with pytest.raises(DataError, match="augment_on 'tpu'"):
        cls(augment_on="tpu", num_workers=0).setup("fit")


def test_training_batches_are_augmented_on_the_device(tmp_path):
    from train import cli_main

    seen = []

    class Spy(BatchAugment):
        def forward(self, batch, generator=None):
            seen.append((batch["image"].dtype, batch["image"].shape[0]))
            return super().forward(batch, generator)

    cli = cli_main(["--task", "camvid", "--data.init_args.augment_on", "gpu", "--data.init_args.num_workers", "0",
                    "--trainer.fast_dev_run", "2", "--trainer.logger", "false", "--pictures.show_batch", "false",
                    "--runs_dir", str(tmp_path)], run=False)
    dm = cli.datamodule
    setup = dm.setup

    def setup_with_spy(stage=None):
        setup(stage)
        assert dm.batch_augment is not None
        dm.batch_augment = Spy(mask_key="mask")

    dm.setup = setup_with_spy
    cli.trainer.fit(cli.model, dm)
    # the 2 training batches, straight from the loader (uint8); validation batches are not augmented
    assert seen == [(torch.uint8, 8), (torch.uint8, 8)]
