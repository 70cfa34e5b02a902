"""torchvision's classic data sets (MNIST, Fashion-MNIST, CIFAR-10/100, ...) held in memory.

The images are taken out of the torchvision data set once, as one ``uint8`` tensor, so batches
never go through a per-sample PIL conversion (torchvision's own ``__getitem__`` makes one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.transforms import TensorImageDataset
from experiments.errors import DataError

log = logging.getLogger(__name__)


class TorchvisionDataModule(ClassificationDataModule):
    """A torchvision data set with a ``train`` argument (``data=mnist|fashion_mnist|cifar10|cifar100``).

    The official test split is the test set; validation is carved from the training split
    (``val_fraction``, seeded).

    Args:
        dataset: the data set class (a Hydra ``_partial_``), called as
            ``dataset(root=..., train=..., download=...)``.
        root: the folder holding the files in torchvision's layout.
        download: fetch missing files into ``root``; when false and the files are missing, a
            DataError says where they are expected.
        num_classes: number of classes of the data set.
        input_shape: ``(C, H, W)`` of one image (checked against the files).
        mean, std: per-channel statistics, used when the model's weights prescribe none.
        kwargs: the loader, split and transform options of :class:`ClassificationDataModule`.
    """

    def __init__(
        self,
        dataset: Callable[..., Dataset],
        root: str,
        download: bool = False,
        num_classes: int = 10,
        input_shape: Sequence[int] = (1, 28, 28),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset_factory = dataset
        self.root = Path(root).expanduser()
        self.download = download
        self._num_classes = num_classes
        self._input_shape = tuple(input_shape)
        self.default_mean = tuple(mean) if mean is not None else None
        self.default_std = tuple(std) if std is not None else None
        self._classes: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    def class_names(self) -> list[str]:
        return self._classes or super().class_names()

    def prepare_data(self) -> None:
        """Download once (Lightning calls this on one process) when ``download`` is set."""
        if self.download:
            for train in (True, False):
                self._open(train)

    def load_splits(self) -> tuple[Dataset, None, Dataset]:
        train, test = self._to_tensors(self._open(True)), self._to_tensors(self._open(False))
        return train, None, test

    def _open(self, train: bool) -> Dataset:
        name = getattr(self.dataset_factory, "func", self.dataset_factory).__name__
        try:
            return self.dataset_factory(root=str(self.root), train=train, download=self.download)
        except RuntimeError as err:
            if self.download:
                raise DataError(f"downloading {name} into {self.root.resolve()} failed: {err}") from err
            raise DataError(
                f"{name} files not found: expected under {expected_location(self.dataset_factory, self.root)} "
                f"(data.root={self.root}); set data.download=true to fetch them, or copy them there"
            ) from err
        except OSError as err:  # no network, DNS failure, read-only folder, ...
            raise DataError(
                f"downloading {name} into {self.root.resolve()} failed ({type(err).__name__}: {err}); "
                f"without network, copy the files to {expected_location(self.dataset_factory, self.root)}"
            ) from err

    def _to_tensors(self, source: Dataset) -> Dataset:
        data, targets = getattr(source, "data", None), getattr(source, "targets", None)
        self._classes = [str(c) for c in getattr(source, "classes", [])] or self._classes
        if data is None or targets is None:  # no in-memory arrays: decode per sample instead
            from torchvision.transforms import v2

            source.transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
            return source
        images = torch.as_tensor(data)
        if images.dim() == 3:  # (N, H, W): grey
            images = images.unsqueeze(1)
        elif images.dim() == 4 and images.shape[-1] in (1, 3):  # (N, H, W, C): channels last
            images = images.permute(0, 3, 1, 2).contiguous()
        if tuple(images.shape[1:]) != self._input_shape:
            raise DataError(
                f"data.input_shape={list(self._input_shape)} but the files hold images of shape "
                f"{list(images.shape[1:])}; set data.input_shape={list(images.shape[1:])}"
            )
        return TensorImageDataset(images, torch.as_tensor(targets, dtype=torch.long))


def expected_location(factory: Callable[..., Dataset], root: Path) -> Path:
    """Where torchvision looks for a data set's files below ``root``.

    CIFAR-style classes name their folder in ``base_folder``; MNIST-style classes use
    ``root/<ClassName>/raw``.
    """
    cls = getattr(factory, "func", factory)
    root = root.resolve()
    if isinstance(getattr(cls, "base_folder", None), str):
        return root / cls.base_folder
    if hasattr(cls, "raw_folder"):
        return root / cls.__name__ / "raw"
    return root
