"""The image-folder loader's uint8 path: evaluation exactly as the float reader, training within 8 bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from experiments.datamodules import ImageFolderDataModule
from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.image_files import read_image
from experiments.models.core import Preprocessing

IMAGENET = Preprocessing(3, (3, 24, 24), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(5):
            pixels = rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.{'jpg' if i % 2 else 'png'}")
    return tmp_path


def test_8_bit_files_decode_as_uint8_and_the_same_from_their_bytes(folder):
    for path in sorted(folder.glob("*/*.*")):
        image = read_image(path, 3, keep_8_bit=True)
        assert image.dtype == torch.uint8
        assert torch.equal(image.float().div(255), read_image(path, 3))
        assert torch.equal(read_image(path.name, 3, keep_8_bit=True, data=path.read_bytes()), image)
    assert read_image(path, 1, keep_8_bit=True).dtype == torch.float32  # luma is computed in float


def _datamodule(folder, *transforms) -> ImageFolderDataModule:
    datamodule = ImageFolderDataModule(root=str(folder), image_size=24, train_transforms=list(transforms),
                                       eval_transforms=[], val_fraction=0.2, test_fraction=0.2)
    datamodule.set_preprocessing(IMAGENET)
    datamodule.setup()
    return datamodule


def test_evaluation_sees_exactly_the_float_readers_values(folder):
    datamodule = _datamodule(folder)
    float_path = ClassificationDataModule.build_transform(datamodule, train=False)
    for dataset in (datamodule.val_set, datamodule.test_set):
        for i in range(len(dataset)):
            path = dataset.dataset.dataset.samples[dataset.dataset.indices[i]][0]
            assert torch.equal(dataset[i][0], float_path(read_image(path, 3)))


def test_training_crops_on_uint8_within_one_8_bit_step_of_the_float_path(folder):
    datamodule = _datamodule(folder, v2.RandomResizedCrop(24, antialias=True), v2.RandomHorizontalFlip())
    steps = [type(step).__name__ for step in datamodule.train_set.transform.transforms]
    assert steps == ["RandomResizedCrop", "RandomHorizontalFlip", "Resize", "ToFloatImage", "Normalize"]
    float_path = ClassificationDataModule.build_transform(datamodule, train=True)
    train = datamodule.train_set
    for i in range(len(train)):
        torch.manual_seed(i)
        fast = train[i][0]
        torch.manual_seed(i)  # the same crop and flip
        reference = float_path(read_image(train.dataset.dataset.samples[train.dataset.indices[i]][0], 3))
        assert fast.shape == (3, 24, 24) and fast.is_contiguous()
        assert float((fast - reference).abs().max()) <= 1.01 / 255 / 0.224  # rounding to 8 bits (one step at most), normalised


def test_a_colour_step_first_converts_before_it(folder):
    datamodule = _datamodule(folder, v2.ColorJitter(brightness=0.2), v2.RandomHorizontalFlip())
    assert type(datamodule.train_set.transform.transforms[0]).__name__ == "ToFloatImage"
