"""Per-sample augmentation on the device: each sample its own draw, reproducible from the seed, and
the same distribution as torchvision v2's per-item transforms."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_cfg, run_job
from torchvision.transforms import v2

from experiments.datamodules import DeviceAugment
from experiments.datamodules.transforms import RandomChannelTint
from experiments.errors import ConfigError

N = 3000


def _image() -> torch.Tensor:
    """A smooth, asymmetric 3 x 16 x 16 image in [0.1, 0.9] (every flip and shift shows)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    return torch.stack([0.1 + 0.8 * xs, 0.1 + 0.8 * ys * xs, 0.9 - 0.8 * ys]).clamp(0, 1)


PAIRS = {
    "hflip": ({"hflip": 0.5}, v2.RandomHorizontalFlip(0.5)),
    "vflip": ({"vflip": 0.3}, v2.RandomVerticalFlip(0.3)),
    "affine": ({"degrees": 20, "translate": [0.1, 0.1], "scale": [0.8, 1.2], "shear": 10},
               v2.RandomAffine(degrees=20, translate=(0.1, 0.1), scale=(0.8, 1.2), shear=10)),
    "brightness": ({"brightness": 0.4}, v2.ColorJitter(brightness=0.4)),
    "contrast": ({"contrast": 0.4}, v2.ColorJitter(contrast=0.4)),
    "saturation": ({"saturation": 0.6}, v2.ColorJitter(saturation=0.6)),
    "tint": ({"tint": [0.7, 1.3]}, RandomChannelTint(0.7, 1.3)),
    "grayscale": ({"grayscale": 0.3}, v2.RandomGrayscale(0.3)),
    "invert": ({"invert": 0.3}, v2.RandomInvert(0.3)),
    "noise": ({"noise": 0.1}, v2.GaussianNoise(sigma=0.1)),
    "erasing": ({"erasing": 0.5}, v2.RandomErasing(p=0.5)),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_each_augmentation_has_the_distribution_of_its_v2_counterpart(name):
    options, per_item = PAIRS[name]
    image = _image()
    torch.manual_seed(0)
    reference = torch.stack([per_item(image.clone()) for _ in range(N)])
    ours = DeviceAugment(**options)(image.expand(N, -1, -1, -1).clone(), torch.Generator().manual_seed(1))
    assert ours.shape == reference.shape
    # per-pixel mean and spread over the draws: standard errors ~0.005, so 0.035 is ~6 of them
    assert (ours.mean(0) - reference.mean(0)).abs().max() < 0.035
    assert (ours.std(0) - reference.std(0)).abs().max() < 0.035
    assert ours.std(0).max() > 0.01  # it did change something


def test_samples_get_their_own_draws_and_a_seed_repeats_them():
    batch = _image().expand(64, -1, -1, -1).clone()
    augment = DeviceAugment(hflip=0.5, degrees=15, brightness=0.3)
    a = augment(batch, torch.Generator().manual_seed(3))
    b = augment(batch, torch.Generator().manual_seed(3))
    c = augment(batch, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    distinct = {tuple(row.flatten()[:40].tolist()) for row in a}
    assert len(distinct) > 32  # not one draw shared by the batch


def test_bad_options_name_the_key():
    with pytest.raises(ConfigError, match=r"data\.device_augment\.hflip=1\.5 is invalid"):
        DeviceAugment(hflip=1.5)
    with pytest.raises(ConfigError, match=r"data\.device_augment\.scale=\[1\.2, 0\.8\] is invalid"):
        DeviceAugment(scale=[1.2, 0.8])


def test_training_batches_are_augmented_on_the_device_and_runs_repeat(tmp_path):
    common = ("augment=digits", "trainer.max_epochs=2", "logger=none", "+trainer.limit_train_batches=4")
    first = run_job(compose_cfg(tmp_path / "a", *common))
    again = run_job(compose_cfg(tmp_path / "b", *common))
    plain = run_job(compose_cfg(tmp_path / "c", *common[1:]))
    assert first["metrics"] == again["metrics"]  # reproducible from the seed
    assert first["metrics"] != plain["metrics"]  # and it did augment
    assert first["finetune_detail"]["feature_cache"]["used"] is False
