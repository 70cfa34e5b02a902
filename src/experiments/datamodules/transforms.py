"""Tensor transforms (torchvision transforms v2) built from the model's preprocessing.

In-memory image tensors go straight through v2's tensor kernels: no PIL round trip per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from experiments.models.core import Preprocessing


class ExpandChannels(nn.Module):
    """Repeat a 1-channel image to ``channels`` (grey-scale data into an RGB model).

    Hand-written because v2.Grayscale converts RGB to grey, not grey to n channels on tensors,
    and a module (unlike a lambda) pickles into DataLoader workers.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-3] == 1 and self.channels > 1:
            return image.expand(*image.shape[:-3], self.channels, *image.shape[-2:])
        return image


_INTERPOLATION = {mode.value: mode for mode in v2.InterpolationMode}


class RandomChannelTint(nn.Module):
    """Multiply each channel of a float image by its own factor drawn from U(low, high), clamped
    to [0, 1]: a colour cast. torchvision's ColorJitter changes hue and saturation jointly, not one
    channel's gain, hence this transform (it pickles into DataLoader workers)."""

    def __init__(self, low: float = 0.7, high: float = 1.3) -> None:
        super().__init__()
        if not 0 <= low <= high:
            raise ValueError(f"RandomChannelTint needs 0 <= low <= high, got low={low}, high={high}")
        self.low, self.high = low, high

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        factors = torch.empty(image.shape[-3], 1, 1).uniform_(self.low, self.high)
        return (image * factors).clamp_(0, 1)


def _hw(size: int | Sequence[int]) -> list[int]:
    return [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size][-2:]


def build_transform(
    preprocessing: Preprocessing,
    data_channels: int,
    image_size: int | Sequence[int] | str | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    augment: Sequence[nn.Module] = (),
    data_hw: Sequence[int] | None = None,
) -> v2.Compose | None:
    """Float image tensor ``(C, H, W)`` in [0, 1] -> what the model takes (None: nothing to do).

    Order: augmentations (train only), channel expansion, resize, normalisation. The model's
    ``mean``/``std`` win over the data's own when its weights prescribe them. Data smaller than the
    architecture's ``min_size`` (``data_hw`` tells) is resized up to it.
    """
    steps: list[nn.Module] = list(augment)
    want_channels = preprocessing.in_chans or data_channels
    if want_channels != data_channels:
        steps.append(ExpandChannels(want_channels))
    if image_size == "model":
        image_size = preprocessing.input_size[1:] if preprocessing.input_size else None
    if not image_size and preprocessing.min_size and data_hw and any(
        d < m for d, m in zip(data_hw, preprocessing.min_size)
    ):
        image_size = preprocessing.min_size  # the architecture cannot take smaller inputs
    if image_size:  # resized the way the weights were trained (timm's bicubic, torchvision's bilinear)
        interpolation = _INTERPOLATION.get(preprocessing.interpolation, v2.InterpolationMode.BILINEAR)
        steps.append(v2.Resize(_hw(image_size), interpolation=interpolation, antialias=True))
    mean = preprocessing.mean or mean
    std = preprocessing.std or std
    if mean is not None and std is not None:
        if len(mean) != want_channels:
            mean, std = [sum(mean) / len(mean)] * want_channels, [sum(std) / len(std)] * want_channels
        steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps) if steps else None  # v2.Compose refuses an empty list


class ToFloatImage(nn.Module):
    """An integer image (``uint8``: 0..255 for [0, 1]) as float in [0, 1]; a float one unchanged.

    The same operations as :func:`~experiments.datamodules.image_files.read_image`'s own
    conversion, so an image converted here is bit-identical to one read as float.
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.is_floating_point():
            return image
        # in (C, H, W) order whatever the decoder's layout: the copy is the conversion's own
        return image.to(torch.float32, memory_format=torch.contiguous_format).div_(float(torch.iinfo(image.dtype).max))


#: steps that move or resample pixels and work on any dtype: run on ``uint8`` they touch 4x less
#: memory, and torchvision's uint8 resize kernel is 2-3x faster than its float one on CPUs
_GEOMETRIC = (v2.Resize, v2.RandomResizedCrop, v2.CenterCrop, v2.RandomCrop, v2.RandomHorizontalFlip,
              v2.RandomVerticalFlip, ExpandChannels)


def float_after_geometry(transform: v2.Compose | None, geometry_on_integers: bool) -> v2.Compose:
    """``transform`` for images that may arrive as ``uint8``: with ``geometry_on_integers`` they are
    converted to float after its leading geometric steps (crops, flips, resizes), else first.

    Converting first gives exactly the float path's values; converting after the geometry rounds
    the resampled pixels to 8 bits (as Pillow-based loaders do), at under half the cost.
    """
    steps = list(getattr(transform, "transforms", [transform] if transform is not None else []))
    at = 0
    while geometry_on_integers and at < len(steps) and type(steps[at]) in _GEOMETRIC:
        at += 1
    return v2.Compose([*steps[:at], ToFloatImage(), *steps[at:]])


def is_deterministic(transform: nn.Module | None) -> bool:
    """True when ``transform`` has no random step (v2's random transforms, RandomApply, ...)."""
    if transform is None:
        return True
    random_types = (v2.RandomApply, v2.RandomChoice, v2.RandomOrder)
    for module in steps_of(transform):
        name = type(module).__name__
        if isinstance(module, random_types) or name.startswith("Random") or name in {
            "ColorJitter", "AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix", "MixUp", "CutMix",
            "GaussianBlur", "GaussianNoise", "ElasticTransform",
        }:
            return False
    return True


def steps_of(transform: nn.Module):
    """``transform`` and every step inside it: v2.Compose keeps its steps in a plain list, which
    ``nn.Module.modules()`` does not see."""
    yield transform
    for child in [*transform.children(), *(getattr(transform, "transforms", None) or [])]:
        if isinstance(child, nn.Module):
            yield from steps_of(child)


class CollatedBatch(tuple):
    """``(inputs, labels)`` that a dataset fetched as one batch (``Dataset.__getitems__``): the
    collate function passes it through instead of stacking items one by one."""


class TransformedDataset(Dataset):
    """Applies ``transform`` to the image of each ``(image, label)`` item of ``dataset``.

    With ``batched`` (``data.batched``, the default) a batch is fetched at once when the source
    can (:class:`TensorImageDataset`, also through ``random_split``'s ``Subset``) and ``transform``
    is deterministic: channel expansion, resize and normalisation then run once on the batch
    tensor. Random augmentations keep the per-item path (each sample its own random draw).
    """

    def __init__(self, dataset: Dataset, transform: nn.Module | None, batched: bool = True) -> None:
        self.dataset = dataset
        self.transform = transform
        self.batched = batched and is_deterministic(transform)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def __getitems__(self, indices: list[int]) -> CollatedBatch | list:
        fetch = getattr(self.dataset, "__getitems__", None) if self.batched else None
        batch = fetch(indices) if fetch is not None else None
        if not isinstance(batch, CollatedBatch):
            return [self[i] for i in indices]
        images, labels = batch
        return CollatedBatch((self.transform(images) if self.transform is not None else images, labels))


class TensorImageDataset(Dataset):
    """Images (or any inputs) held as one tensor ``(N, ...)`` with integer ``labels``.

    Float images are returned as they are (values in [0, 1]); ``uint8`` images (4x smaller, how
    MNIST and CIFAR ship) are scaled to float [0, 1] when fetched. ``__getitems__`` fetches a whole
    batch with one indexing operation (the DataLoader uses it when present): the same tensors as
    stacking the items, without a Python call per sample.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)``, as ``TensorDataset.tensors``."""
        return self.images, self.labels

    def __getitem__(self, index: int):
        image = self.images[index]
        if image.dtype == torch.uint8:
            image = image.float().div_(255)
        return image, int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> CollatedBatch:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        return CollatedBatch((images, self.labels[index].long()))
