"""The DataModule base every data option reuses.

It owns the DataLoader options (one place, every option from config), the seeded train/val/test
split and the transforms; a subclass only says how to load its datasets. ``num_classes`` and
``input_shape`` come from the data so the model's head is sized from it, never typed twice.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, random_split

from experiments.errors import ConfigError
from experiments.datamodules.transforms import TransformedDataset, build_transform, is_deterministic
from experiments.models.core import Preprocessing

log = logging.getLogger(__name__)


class ClassificationDataModule(L.LightningDataModule):
    """Base class: loaders, split and preprocessing for a classification dataset.

    Args:
        batch_size: samples per training batch (>= 1).
        eval_batch_size: samples per val/test/predict batch (default: ``batch_size``).
        shuffle: reshuffle the training set every epoch (val/test are never shuffled).
        num_workers: loader sub-processes (0 loads in the main process).
        drop_last: drop a short last training batch.
        pin_memory: page-locked host memory for faster host-to-GPU copies.
        persistent_workers: keep workers alive between epochs (needs num_workers > 0).
        prefetch_factor: batches each worker loads ahead (only with num_workers > 0).
        val_fraction: share of the data held out for validation when the source has no val split.
        test_fraction: share held out for testing when the source has no test split.
        seed: seed of the split, so the same seed gives the same split.
        image_size: resize images to this size (int or [H, W]); ``"model"`` uses the size the
            model's pretrained weights expect; ``None`` keeps the data's own size.
    """

    #: channel statistics used when the model's weights prescribe none (set by subclasses)
    default_mean: tuple[float, ...] | None = None
    default_std: tuple[float, ...] | None = None

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        shuffle: bool = True,
        num_workers: int = 0,
        drop_last: bool = False,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        image_size: int | list[int] | str | None = None,
        train_transforms: list | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.shuffle = shuffle
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.image_size = image_size
        self.train_transforms = list(train_transforms or [])
        self.name = name or type(self).__name__
        self.preprocessing = Preprocessing(in_chans=0)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- what a subclass provides -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample as the source gives it, e.g. ``(1, 8, 8)``."""
        raise NotImplementedError

    def load_splits(self) -> tuple[Dataset, Dataset | None, Dataset | None]:
        """``(train, val or None, test or None)``; missing splits are carved out of train."""
        raise NotImplementedError

    def class_names(self) -> list[str]:
        return [str(i) for i in range(self.num_classes)]

    # -- shared machinery -----------------------------------------------------------------------
    def set_preprocessing(self, preprocessing: Preprocessing) -> None:
        """Adopt what the model expects (channels, size, normalisation) before ``setup``."""
        self.preprocessing = preprocessing

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val, test = self.load_splits()
        generator = torch.Generator().manual_seed(self.seed)
        missing = [f for f, split in ((self.val_fraction, val), (self.test_fraction, test)) if split is None]
        if missing:
            n = len(train)
            sizes = [round(n * f) for f in missing]
            if min(sizes) < 1 or n - sum(sizes) < 1:
                raise ConfigError(
                    f"data.val_fraction={self.val_fraction} / data.test_fraction={self.test_fraction} "
                    f"leave an empty split of {n} samples; use fractions that keep >= 1 sample each"
                )
            parts = random_split(train, [n - sum(sizes), *sizes], generator=generator)
            train, carved = parts[0], list(parts[1:])
            val = val if val is not None else carved.pop(0)
            test = test if test is not None else carved.pop(0)
        self.train_set = TransformedDataset(train, self.build_transform(train=True))
        eval_transform = self.build_transform(train=False)
        self.val_set = TransformedDataset(val, eval_transform)
        self.test_set = TransformedDataset(test, eval_transform)
        log.info(
            "data %s: train %d, val %d, test %d samples, %d classes, input %s",
            self.name, len(train), len(val), len(test), self.num_classes, self.input_shape,
        )

    def build_transform(self, train: bool):
        """The sample transform of the training (with augmentations) or evaluation splits."""
        return build_transform(
            self.preprocessing,
            data_channels=self.input_shape[0],
            image_size=self.image_size,
            mean=self.default_mean,
            std=self.default_std,
            augment=self.train_transforms if train else (),
            data_hw=self.input_shape[1:],
        )

    @property
    def train_is_deterministic(self) -> bool:
        """True when training samples are the same every epoch (no random augmentation)."""
        return is_deterministic(build_transform(self.preprocessing, self.input_shape[0], None, None, None, self.train_transforms))

    def loader_options(self) -> dict[str, Any]:
        """The DataLoader options shared by every split."""
        options: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }
        if self.prefetch_factor is not None:
            options["prefetch_factor"] = self.prefetch_factor
        collate = self.collate_fn()
        if collate is not None:
            options["collate_fn"] = collate
        return options

    def collate_fn(self):
        """A custom collate function, or None for PyTorch's default."""
        return None

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=self.shuffle if train else False,
            drop_last=self.drop_last if train else False,
            **self.loader_options(),
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.test_set, train=False)

