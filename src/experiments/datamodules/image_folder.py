"""Images in class sub-folders (``data=image_folder data.root=DIR``).

Two layouts::

    DIR/<class>/<image>                        one pool, split by val_fraction/test_fraction (seeded)
    DIR/train/<class>/<image>, DIR/val/...     given splits; a missing val/ or test/ is carved from train/

With ``allow_unlabelled=true`` (a domain-adaptation target), images straight in ``DIR`` (or
``DIR/train``), with no class sub-folders, are an unlabelled data set: its items carry the label
``UNLABELLED`` (-1), so it can be trained on without labels but not evaluated.

Images are read by :func:`experiments.datamodules.image_files.read_image` (every common format,
scaled to [0, 1] by its real bit depth; prediction reads new files the same way). A file that
cannot be read raises a DataError naming it.

8-bit PNGs and JPEGs stay ``uint8`` from the decoder through the training transform's leading
crops, flips and resizes, and become float after them (``transforms.float_after_geometry``): a
training epoch of photo-sized JPEGs then takes 1.36x less CPU, and beats torchvision's and timm's
Pillow loaders (docs/benchmarks.md "Images from disk"). The resampled pixels are rounded to 8 bits
there, as Pillow-based loaders round them; evaluation converts first, so validation, test and
prediction see exactly the float reader's values.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.contract import UNLABELLED
from experiments.datamodules.image_files import EXTENSIONS, read_image
from experiments.datamodules.transforms import float_after_geometry
from experiments.errors import DataError

SPLITS = ("train", "val", "test")


class ImageFileDataset(Dataset):
    """``(path, label)`` samples decoded on access to ``(C, H, W)`` tensors: ``uint8`` for 8-bit
    PNG and JPEG files, float in [0, 1] for the rest (the transforms convert, see the module)."""

    def __init__(self, samples: list[tuple[str, int]], channels: int) -> None:
        self.samples = samples
        self.channels = channels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return read_image(path, self.channels, keep_8_bit=True), label


class DecodedImageFiles:
    """What a data module of image files decoded on access answers alike (``data=image_folder``,
    ``data=shards``): classes by name, the input shape, and transforms that take the decoder's
    ``uint8`` images. Mixed in before :class:`ClassificationDataModule`; the subclass sets
    ``classes``, ``channels`` and ``_shape = None``, and says what its first image is."""

    classes: list[str]
    channels: int
    _shape: tuple[int, ...] | None

    def first_image(self) -> torch.Tensor:
        """The first training image, decoded (its size is the input's without ``image_size``)."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_names(self) -> list[str]:
        return list(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(channels, H, W)``: ``image_size`` when set, else the first training image's size."""
        if self.image_size not in (None, "model"):
            size = self.image_size
            hw = [size, size] if isinstance(size, int) else list(size)
            return (self.channels, *hw)
        if self._shape is None:
            self._shape = (self.channels, *self.first_image().shape[1:])
        return self._shape

    def build_transform(self, train: bool) -> v2.Compose:
        """The base's transform, taking the decoder's ``uint8`` images: training crops and resizes
        them as they are, evaluation converts them to float first (exactly the float reader's)."""
        return float_after_geometry(super().build_transform(train), geometry_on_integers=train)


class ImageFolderDataModule(DecodedImageFiles, ClassificationDataModule):
    """Class sub-folders of images, with or without ``train/``, ``val/``, ``test/`` splits.

    Args:
        root: the folder (see the module docstring for the two layouts).
        channels: 3 decodes every image as RGB, 1 as grey scale.
        allow_unlabelled: accept a folder of images without class sub-folders as unlabelled data
            (``has_labels`` false) instead of refusing it.
        kwargs: the loader, split and transform options of :class:`ClassificationDataModule`;
            ``image_size`` is needed when the images differ in size.
    """

    def __init__(self, root: str, channels: int = 3, allow_unlabelled: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        if channels not in (1, 3):
            raise DataError(f"data.channels={channels} is invalid: expected 1 (grey) or 3 (RGB)")
        self.channels = channels
        if not self.root.is_dir():
            raise DataError(f"data.root={root}: no such folder ({self.root.resolve()})")
        self.split_dirs = {s: self.root / s for s in SPLITS if (self.root / s).is_dir()}
        if self.split_dirs and "train" not in self.split_dirs:
            raise DataError(
                f"data.root={root} has {', '.join(self.split_dirs)}/ but no train/ folder; add train/ "
                "or put the class folders directly under data.root"
            )
        self.classes = sorted(p.name for p in _visible_dirs(self._class_root()))
        self.has_labels = bool(self.classes)
        if not self.classes and not allow_unlabelled:
            raise DataError(f"data.root={root}: no class sub-folders in {self._class_root()}")
        self._shape: tuple[int, ...] | None = None

    def _class_root(self) -> Path:
        return self.split_dirs.get("train", self.root)

    def first_image(self) -> torch.Tensor:
        return read_image(self._samples(self._class_root())[0][0], self.channels)

    def load_splits(self) -> tuple[Dataset, Dataset | None, Dataset | None]:
        if not self.split_dirs:
            return ImageFileDataset(self._samples(self.root), self.channels), None, None
        datasets = {s: ImageFileDataset(self._samples(d), self.channels) for s, d in self.split_dirs.items()}
        return datasets["train"], datasets.get("val"), datasets.get("test")

    def _samples(self, folder: Path) -> list[tuple[str, int]]:
        """Sorted ``(path, class index)`` of the images under ``folder``'s class sub-folders."""
        if not self.has_labels:
            return self._unlabelled_samples(folder)
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = sorted(p.name for p in _visible_dirs(folder) if p.name not in index)
        if unknown:
            raise DataError(
                f"{folder} has class folders {unknown} that {self._class_root()} lacks; "
                "every split must use the training split's classes"
            )
        samples = [
            (str(path), index[class_dir.name])
            for class_dir in sorted(_visible_dirs(folder))
            for path in sorted(class_dir.rglob("*"))
            if path.suffix.lower() in EXTENSIONS and path.is_file() and not _hidden(path.relative_to(class_dir))
        ]
        if not samples:
            raise DataError(f"no images ({', '.join(EXTENSIONS)}) in the class folders of {folder}")
        counts = Counter(label for _, label in samples)
        empty = [name for name, i in index.items() if not counts[i] and (folder / name).is_dir()]
        if empty and folder == self._class_root():
            raise DataError(
                f"class folder(s) {empty} in {folder} hold no images ({', '.join(EXTENSIONS)}): a class with "
                "no training images cannot be learnt; add images or remove the folder(s)"
            )
        return samples

    def _unlabelled_samples(self, folder: Path) -> list[tuple[str, int]]:
        """Sorted ``(path, UNLABELLED)`` of the images directly in ``folder``."""
        samples = [(str(p), UNLABELLED) for p in sorted(folder.iterdir())
                   if p.suffix.lower() in EXTENSIONS and p.is_file() and not _hidden(Path(p.name))]
        if not samples:
            raise DataError(f"data.root={self.root}: no class sub-folders and no images ({', '.join(EXTENSIONS)}) in {folder}")
        return samples


def _hidden(relative: Path) -> bool:
    """A path with a part that starts with a dot (``.ipynb_checkpoints/``, ``.DS_Store``, ``._x.jpg``)."""
    return any(part.startswith(".") for part in relative.parts)


def _visible_dirs(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that can be classes: hidden ones (``.ipynb_checkpoints``,
    ``.git``) are tools' leftovers, never a class."""
    return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
