"""The DataModule base every data option reuses.

It owns the DataLoader options (one place, every option from config), the seeded train/val/test
split and the transforms; a subclass only says how to load its datasets. ``num_classes`` and
``input_shape`` come from the data so the model's head is sized from it, never typed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset, random_split
from torchvision.transforms import v2

from experiments.datamodules.contract import CheckedCollate, check_length, check_split
from experiments.errors import ConfigError
from experiments.datamodules.device_augment import AugmentsOnDevice, DeviceAugment
from experiments.datamodules.selection import EpochSeededRandomSampler, limit_labelled_split
from experiments.datamodules.transforms import TransformedDataset, build_transform, is_deterministic
from experiments.models.core import Preprocessing
from experiments.config.declared import Flag, Integer, Number, checked_init

log = logging.getLogger(__name__)


def carve_indices(n: int, fractions: Sequence[float], seed: int) -> list[list[int]] | None:
    """Indices ``[rest, *carved]`` of ``n`` items: a share ``fractions[i]`` of them carved off for
    each missing split, by ``random_split`` with ``torch.Generator().manual_seed(seed)`` (the one
    split rule of every data option and of the shards ``prepare`` writes); None when a part would be
    empty."""
    sizes = [round(n * f) for f in fractions]
    if min(sizes, default=1) < 1 or n - sum(sizes) < 1:
        return None
    parts = random_split(range(n), [n - sum(sizes), *sizes], generator=torch.Generator().manual_seed(seed))
    return [list(part.indices) for part in parts]


class ClassificationDataModule(AugmentsOnDevice, L.LightningDataModule):
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
        train_transforms: torchvision.transforms.v2 modules applied to training samples first
            (augmentations), before the model's preprocessing.
        eval_transforms: the same for validation, test and predict samples (e.g. a center crop).
        name: the data set's name, for logs and results.
        batched: fetch a batch at once from data held in memory as one tensor, and apply the
            deterministic preprocessing to the whole batch (False: one item at a time, as before).
        device_augment: random augmentations of each training batch after it reached the
            device, per sample (:class:`~experiments.datamodules.device_augment.DeviceAugment`;
            ``augment=`` options set it); reproducible from ``seed`` and the epoch.

    Image data (``input_shape`` ``(C, H, W)``) then gets the model's preprocessing: channel
    expansion, resizing, normalisation. Other data (feature vectors, sparse rows) gets only the
    configured transforms. Before the first epoch every split is checked against the Dataset
    contract (:mod:`experiments.datamodules.contract`), and every batch's labels on the fly.
    """

    #: channel statistics used when the model's weights prescribe none (set by subclasses)
    default_mean: tuple[float, ...] | None = None
    default_std: tuple[float, ...] | None = None
    #: False for data without labels (items carry ``contract.UNLABELLED``): a domain-adaptation target
    has_labels: bool = True
    #: what new inputs of this data are (``mode=predict predict.inputs=``): image files, or
    #: ``text`` (TextDataModule), ``vectors`` (feature rows that no file names)
    input_kind: str = "image"
    #: the rules of the constructor's keys (``data.<key>``), declared once: checked before torch is
    #: imported (read from this source by :mod:`experiments.config.declared`) and at construction;
    #: a subclass declares its own keys and inherits these
    KEYS = {
        "batch_size": Integer(low=1), "eval_batch_size": Integer(low=1, null=True), "num_workers": Integer(low=0),
        "prefetch_factor": Integer(low=1, null=True), "val_fraction": Number(low=0, high=1, low_open=True, high_open=True),
        "test_fraction": Number(low=0, high=1, low_open=True, high_open=True), "batched": Flag(), "shuffle": Flag(),
        "drop_last": Flag(), "pin_memory": Flag(), "persistent_workers": Flag(),
        "val_samples_per_class": Integer(low=1, null=True, words=("all",)),
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = checked_init(cls.__dict__["__init__"], cls, "data", ConfigError)

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
        eval_transforms: list | None = None,
        name: str | None = None,
        batched: bool = True,
        device_augment: DeviceAugment | None = None,
        val_samples_per_class: int | str | None = None,
    ) -> None:
        super().__init__()
        self.val_samples_per_class = val_samples_per_class
        self.batched = batched
        if device_augment is not None and self.input_kind != "image":
            items = {"text": "texts (token ids or TF-IDF rows)", "vectors": "sparse feature vectors"}
            raise ConfigError(
                f"augment= (data.device_augment) transforms image batches, but data={name or type(self).__name__} "
                f"gives {items.get(self.input_kind, self.input_kind)}: drop augment= (or data.device_augment=null)"
            )
        self.device_augment = device_augment
        self._augment_generators: dict[tuple[int, int], torch.Generator] = {}
        self._train_normalisation: tuple[list[float] | None, list[float] | None] | None = None
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
        self.eval_transforms = list(eval_transforms or [])
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
    @property
    def val_limit(self) -> int | None:
        """Labelled validation images kept per class: ``val_samples_per_class``, or when that is
        null the training limit ``samples_per_class`` (a 10-label run validates on 10 per class
        too, so its checkpoint and auto's probe read no more labels than it trains on); None: all."""
        if self.val_samples_per_class == "all":
            return None
        if self.val_samples_per_class is not None:
            return int(self.val_samples_per_class)
        return getattr(self, "samples_per_class", None)

    def set_preprocessing(self, preprocessing: Preprocessing) -> None:
        """Adopt what the model expects (channels, size, normalisation) before ``setup``."""
        self.preprocessing = preprocessing

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val, test = self.load_splits()
        check_length(train, "train")
        missing = [f for f, split in ((self.val_fraction, val), (self.test_fraction, test)) if split is None]
        if missing:
            n = len(train)
            indices = carve_indices(n, missing, self.seed)
            if indices is None:
                raise ConfigError(
                    f"data.val_fraction={self.val_fraction} / data.test_fraction={self.test_fraction} "
                    f"leave an empty split of {n} samples; use fractions that keep >= 1 sample each"
                )
            train, *carved = (Subset(train, part) for part in indices)
            val = val if val is not None else carved.pop(0)
            test = test if test is not None else carved.pop(0)
        limit = self.val_limit
        if limit is not None:
            val = limit_labelled_split(val, limit, torch.Generator().manual_seed(self.seed + 1))
        self.train_set = TransformedDataset(train, self.build_transform(train=True), self.batched)
        eval_transform = self.build_transform(train=False)
        self.val_set = TransformedDataset(val, eval_transform, self.batched)
        self.test_set = TransformedDataset(test, eval_transform, self.batched)
        collate = self.checked_collate()
        for split, dataset in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set)):
            check_split(dataset, split, self.num_classes, collate, seed=self.seed, labelled=self.has_labels)
        log.info(
            "data %s: train %d, val %d, test %d samples, %d classes, input %s",
            self.name, len(train), len(val), len(test), self.num_classes, self.input_shape,
        )

    def build_transform(self, train: bool):
        """The sample transform of the training or the evaluation splits (None: identity)."""
        configured = self.train_transforms if train else self.eval_transforms
        if len(self.input_shape) != 3:  # not an image: no image preprocessing to apply
            return v2.Compose(configured) if configured else None
        return build_transform(
            self.preprocessing,
            data_channels=self.input_shape[0],
            image_size=self.image_size,
            mean=self.default_mean,
            std=self.default_std,
            augment=configured,
            data_hw=self.input_shape[1:],
        )

    @property
    def train_is_deterministic(self) -> bool:
        """True when training samples are the same every epoch (no random augmentation)."""
        return self.device_augment is None and is_deterministic(self.build_transform(train=True))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches get ``device_augment`` on their device, each sample its own draw."""
        trainer = self.trainer
        if self.device_augment is None or trainer is None or not trainer.training:
            return batch
        x, y = batch
        return [self.augment_on_device(self.device_augment, x, trainer.current_epoch, trainer.global_rank), y]

    def loader_options(self) -> dict[str, Any]:
        """The DataLoader options shared by every split."""
        options: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }
        if self.prefetch_factor is not None:
            options["prefetch_factor"] = self.prefetch_factor
        options["collate_fn"] = self.checked_collate()
        return options

    def collate_fn(self) -> Callable[[list], Any] | None:
        """A custom collate function, or None for PyTorch's default."""
        return None

    def checked_collate(self) -> CheckedCollate:
        """:meth:`collate_fn` (or the default) with every batch checked against the contract."""
        return CheckedCollate(self.num_classes, self.collate_fn(), labelled=self.has_labels)

    def make_loader(self, dataset: Dataset, train: bool, collate_fn: Callable[[list], Any] | None = None) -> DataLoader:
        """A loader with this module's options: training (shuffled, drop_last) or evaluation.

        ``collate_fn`` replaces the contract-checked collate for items that are not
        ``(input, label)`` pairs (the images-only view of a domain-adaptation target).
        """
        shuffle = self.shuffle and train
        options = self.loader_options()
        if collate_fn is not None:
            options["collate_fn"] = collate_fn
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochSeededRandomSampler(dataset, self.seed) if shuffle else None,
            drop_last=self.drop_last if train else False,
            **options,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self.make_loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self.make_loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self.make_loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        self.setup()
        return self.make_loader(self.test_set, train=False)


ClassificationDataModule.__init__ = checked_init(ClassificationDataModule.__init__, ClassificationDataModule, "data", ConfigError)
