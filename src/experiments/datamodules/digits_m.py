"""``digits_m``: the digits' target half blended over photo patches (the MNIST-M construction), offline.

Each digit is upsampled to 32x32 (bilinear, values in [0, 1]: a stroke mask) and blended into a
32x32 colour patch cut from scikit-learn's bundled photos (china.jpg, flower.jpg):
``image = |patch - 255 * mask|`` per channel, so strokes come out dark on light texture and light
on dark texture. The splits are honest: train, val and test use disjoint digits, and test patches
come from other regions of the photos than train and val patches (each photo is cut into vertical
stripes; even stripes feed train and val, odd stripes feed test; a patch lies inside one stripe).

Everything is drawn from constant seeds: the data set is the same in every run, whatever
``data.seed`` (which only orders batches and draws ``samples_per_class``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.digits import DIGIT_NAMES, load_digit_tensors
from experiments.datamodules.selection import ClassSubsetMixin, limit_per_class, partition_indices, stratified_split
from experiments.datamodules.transforms import TensorImageDataset
from experiments.errors import ConfigError

SIZE = 32  #: side of an image, and of a photo patch
STRIPE_WIDTH = 80  #: width of the vertical photo stripes (>= SIZE); 640-px photos give 8 each
BUILD_SEED = 5_318_008  #: seed of the digit split and of every patch position
SPLITS = ("train", "val", "test")


class DigitsMDataset(TensorImageDataset):
    """``uint8`` images ``(N, 3, 32, 32)`` (float [0, 1] per item) and where each one came from.

    ``digit``: index of its digit in ``sklearn.datasets.load_digits()``; ``photo``: 0 (china.jpg)
    or 1 (flower.jpg); ``stripe``: the stripe of that photo its patch was cut from; ``x``, ``y``:
    the patch's top-left corner in the photo.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, origin: dict[str, torch.Tensor]) -> None:
        super().__init__(images, labels)
        self.origin = origin
        for key, value in origin.items():
            setattr(self, key, value)

    def subset(self, index: torch.Tensor, labels: torch.Tensor | None = None) -> DigitsMDataset:
        """The items at ``index`` (with new ``labels`` if given, e.g. after a class subset)."""
        new_labels = self.labels[index] if labels is None else labels
        return DigitsMDataset(self.images[index], new_labels, {k: v[index] for k, v in self.origin.items()})


def load_photos() -> torch.Tensor:
    """scikit-learn's two sample photos as one ``uint8`` tensor ``(2, H, W, 3)``."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    h = min(p.shape[0] for p in photos)
    w = min(p.shape[1] for p in photos)
    return torch.stack([torch.tensor(p[:h, :w]) for p in photos])


def blend(
    masks: torch.Tensor, which: torch.Tensor, photos: torch.Tensor, photo: torch.Tensor, x: torch.Tensor,
    y: torch.Tensor, chunk: int = 4096,
) -> torch.Tensor:
    """``|patch - 255 * mask|`` as ``uint8`` ``(N, 3, SIZE, SIZE)``, N = ``len(which)``.

    The i-th image blends ``masks[which[i]]`` (masks: ``(M, 1, SIZE, SIZE)`` in [0, 1]) with the patch
    ``photos[photo[i], y[i]:y[i]+SIZE, x[i]:x[i]+SIZE]`` (photos: ``uint8`` ``(P, H, W, 3)``). Pixels
    are gathered by flat index (faster than three broadcast index tensors) and blended in int16
    against the mask rounded to 0..255 (the same as rounding after the blend: patch values are
    integers), in chunks to bound the memory.
    """
    _, height, width, _ = photos.shape
    strokes = (255 * masks).round_().to(torch.int16)
    pixels = photos.reshape(-1, 3)
    offsets = torch.arange(SIZE)
    out = torch.empty(len(which), 3, SIZE, SIZE, dtype=torch.uint8)
    for start in range(0, len(which), chunk):
        part = slice(start, start + chunk)
        rows = (photo[part, None] * height + y[part, None] + offsets)[:, :, None]  # (n, SIZE, 1)
        cols = (x[part, None] + offsets)[:, None, :]  # (n, 1, SIZE)
        flat = (rows * width + cols).flatten()
        patches = pixels.index_select(0, flat).view(-1, SIZE, SIZE, 3).permute(0, 3, 1, 2).to(torch.int16)
        out[part] = (patches - strokes[which[part]]).abs_().to(torch.uint8)
    return out


def build_split(
    masks: torch.Tensor, labels: torch.Tensor, digits: torch.Tensor, photos: torch.Tensor,
    stripes: list[int], copies: int, generator: torch.Generator,
) -> DigitsMDataset:
    """``copies`` images of each digit, over patches drawn from the given photo ``stripes``.

    ``masks``/``labels`` are indexed by position in ``digits`` (the digits' load_digits indices).
    """
    n_photos, height, width, _ = photos.shape
    which = torch.arange(len(digits)).repeat_interleave(copies)
    n = len(which)
    photo = torch.randint(n_photos, (n,), generator=generator)
    stripe = torch.tensor(stripes)[torch.randint(len(stripes), (n,), generator=generator)]
    x = stripe * STRIPE_WIDTH + torch.randint(STRIPE_WIDTH - SIZE + 1, (n,), generator=generator)
    y = torch.randint(height - SIZE + 1, (n,), generator=generator)
    images = blend(masks, which, photos, photo, x, y)
    origin = {"digit": digits[which], "photo": photo, "stripe": stripe, "x": x, "y": y}
    return DigitsMDataset(images, labels[which], origin)


@functools.lru_cache(maxsize=1)  # deterministic: a race's trials and a sweep's in-process jobs build it once
def build_digits_m(
    patches_per_digit: int = 32, eval_patches_per_digit: int = 5, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> dict[str, DigitsMDataset]:
    """The three splits, ``{"train", "val", "test"}``, the same on every call with the same arguments.

    The target half of the digits is split (stratified, a constant seed) into disjoint train,
    val and test digits; each train digit is blended over ``patches_per_digit`` patches, each val
    and test digit over ``eval_patches_per_digit``. Each split draws from its own constant seed, so
    changing ``patches_per_digit`` leaves val and test as they are.
    """
    images, labels = load_digit_tensors()
    target = partition_indices(labels, "target")
    fractions = (1 - val_fraction - test_fraction, val_fraction, test_fraction)
    parts = stratified_split(labels[target], fractions, torch.Generator().manual_seed(BUILD_SEED))
    photos = load_photos()
    n_stripes = photos.shape[2] // STRIPE_WIDTH
    stripes = {"train": list(range(0, n_stripes, 2)), "test": list(range(1, n_stripes, 2))}
    stripes["val"] = stripes["train"]
    copies = {"train": patches_per_digit, "val": eval_patches_per_digit, "test": eval_patches_per_digit}
    splits = {}
    for number, (name, part) in enumerate(zip(SPLITS, parts)):
        digits = target[part]
        masks = F.interpolate(images[digits], size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp_(0, 1)
        generator = torch.Generator().manual_seed(BUILD_SEED + 1 + number)
        splits[name] = build_split(masks, labels[digits], digits, photos, stripes[name], copies[name], generator)
    return splits


class DigitsMDataModule(ClassSubsetMixin, ClassificationDataModule):
    """The shifted target domain (``data=digits_m``): 3x32x32 colour digits over photo texture.

    Its source domain is ``data=digits data.partition=source data.channels=3 data.image_size=32``
    (the other half of the digits, grey, same shape).

    Args:
        patches_per_digit: images made of each training digit (default 32: about 20k images).
        eval_patches_per_digit: images made of each validation and test digit.
        samples_per_class: keep at most this many training images of each class (seeded by
            ``seed``), for few-shot target experiments; ``None`` keeps all.
        classes: keep only these digits, relabelled 0..K-1 in the order given.
        kwargs: the loader options of :class:`ClassificationDataModule`; ``val_fraction`` and
            ``test_fraction`` are the shares of the target digits held out for val and test.
    """

    source_class_names = DIGIT_NAMES
    #: the training split's channel statistics (rounded), so inputs are about zero-mean, unit-variance
    default_mean = (0.40, 0.38, 0.37)
    default_std = (0.31, 0.26, 0.28)

    def __init__(
        self,
        patches_per_digit: int = 32,
        eval_patches_per_digit: int = 5,
        samples_per_class: int | None = None,
        classes: list[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for key, value in (("patches_per_digit", patches_per_digit), ("eval_patches_per_digit", eval_patches_per_digit)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{key}={value!r} is invalid: expected an integer >= 1")
        if samples_per_class is not None and samples_per_class < 1:
            raise ConfigError(f"data.samples_per_class={samples_per_class} must be >= 1 (or null for all)")
        self.patches_per_digit = patches_per_digit
        self.eval_patches_per_digit = eval_patches_per_digit
        self.samples_per_class = samples_per_class
        self.classes = classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, SIZE, SIZE)

    def load_splits(self) -> tuple[DigitsMDataset, DigitsMDataset, DigitsMDataset]:
        built = build_digits_m(self.patches_per_digit, self.eval_patches_per_digit, self.val_fraction, self.test_fraction)
        splits = []
        for name in SPLITS:
            dataset = built[name]
            limit = self.samples_per_class if name == "train" else None
            if self.selection.keeps_all and limit is None:
                splits.append(dataset)  # as built: no copy of the images
                continue
            index, labels = self.selection.select(dataset.labels)
            if limit is not None:
                generator = torch.Generator().manual_seed(self.seed)
                order = torch.randperm(len(index), generator=generator)
                picked = limit_per_class(order, labels, limit, generator)
                index, labels = index[picked], labels[picked]
            splits.append(dataset.subset(index, labels))
        return tuple(splits)
