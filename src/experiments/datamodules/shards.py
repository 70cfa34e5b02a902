"""Images streamed from shards (``data=shards data.root=DIR_OR_URL``): data that outgrows a disk.

The engine is LitData's ``StreamingDataset`` / ``StreamingDataLoader``, chosen over WebDataset
because what a training run needs from it is built in: the loader's ``state_dict`` resumes an
epoch where it stopped (Lightning saves it in the checkpoint), every DDP rank and loader worker
gets its own samples from one seeded plan (equal counts per rank, none twice), the order is
shuffled across shards (the chunks' order) and within them (a window), ``len()`` is known (the
progress bar, schedulers), and an object-store URL (``s3://``, ``gs://``, ``azure://``) streams
through a bounded local cache. WebDataset's tar shards leave resume and the per-rank split to the
caller and know no length.

Write the shards once with ``python -m experiments.datamodules.shards prepare`` (see
:mod:`experiments.datamodules.shard_writer`); each record is an image file's own bytes, decoded
by the one image reader (:func:`~experiments.datamodules.image_files.read_image`) as
``data=image_folder`` decodes its files, through the same transforms.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from experiments.datamodules.base import ClassificationDataModule
from experiments.datamodules.contract import check_split
from experiments.datamodules.image_files import read_image
from experiments.datamodules.image_folder import DecodedImageFiles
from experiments.datamodules.shard_writer import META_KEY, SPLITS, image_folder_records, torchvision_records, write_shards
from experiments.errors import ConfigError, DataError

try:
    from litdata import StreamingDataLoader, StreamingDataset
except ImportError:  # the optional engine: ShardsDataModule says how to install it
    StreamingDataLoader = StreamingDataset = None

log = logging.getLogger(__name__)

_URL_SCHEMES = ("s3://", "gs://", "r2://", "azure://")


class ShardDataset(StreamingDataset or Dataset):  # Dataset without LitData: never built then
    """One split's shards as a ``StreamingDataset`` of ``(image, label)`` items: a record's bytes
    decoded to ``(channels, H, W)`` (``uint8`` for 8-bit PNG/JPEG), then ``image_transform``.

    Args:
        url: the split's folder or URL.
        channels: 1 or 3.
        image_transform: the sample transform (None: the decoded image).
        options: ``StreamingDataset``'s (``shuffle``, ``seed``, ``drop_last``, ``cache_dir``, ...).
    """

    def __init__(self, url: str, channels: int, image_transform: v2.Compose | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self.channels = channels
        self.image_transform = image_transform  # not ``transform``: LitData applies that one itself

    def __getitem__(self, index):
        record = super().__getitem__(index)
        image = read_image(record["name"], self.channels, keep_8_bit=True, data=bytes(record["image"]))
        return (self.image_transform(image) if self.image_transform is not None else image), record["label"]


class ShardsDataModule(DecodedImageFiles, ClassificationDataModule):
    """Image shards written by ``prepare``: ``root/train``, ``root/val``, ``root/test``.

    Args:
        root: the shards' folder or an object-store URL (``s3://bucket/shards``), passed to LitData.
        channels: 3 decodes every image as RGB, 1 as grey scale (checked before torch with every
            data option's ``data.channels``, in :mod:`experiments.config.rules`).
        cache_dir: where a URL's chunks are cached while streamed (null: LitData's default).
        max_cache_size: that cache's bound (e.g. ``"50GB"``; null: LitData's default).
        kwargs: the loader and transform options of :class:`ClassificationDataModule`; the split
            was made by ``prepare`` (its fractions and seed), and ``image_size`` is needed when the
            images differ in size.

    Training streams shuffled (``shuffle``, ``seed``: a new order every epoch); under DDP every
    rank reads its own share of each epoch (LitData drops the last few samples so that every
    rank has as many, validation included). A checkpoint taken mid-epoch resumes it where it
    stopped: Lightning saves the loader's ``state_dict``.
    """

    def __init__(self, root: str, channels: int = 3, cache_dir: str | None = None,
                 max_cache_size: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if StreamingDataset is None:
            raise ConfigError("data=shards streams with LitData, which is not installed: "
                              "pip install 'experiments[streaming]' (or pip install litdata)")
        if self.val_samples_per_class not in (None, "all"):
            raise ConfigError(f"data.val_samples_per_class={self.val_samples_per_class}: data=shards streams its "
                              "validation split as prepared; leave it null, or prepare shards of fewer images")
        self.root = str(root).rstrip("/")
        self.channels = channels
        self.options = {k: v for k, v in (("cache_dir", cache_dir), ("max_cache_size", max_cache_size)) if v is not None}
        if not self.is_url and not all((Path(self.root).expanduser() / s / "index.json").is_file() for s in SPLITS):
            raise DataError(
                f"data.root={root}: no shards in {Path(self.root).expanduser().resolve()} (expected train/, val/ and "
                "test/ with an index.json each); write them with: python -m experiments.datamodules.shards prepare "
                f"--from image_folder --root IMAGES --out {root}"
            )
        probe = self._open("train", shuffle=False)  # reads the index (a URL's: downloaded into the cache)
        self.classes = list(_metadata(probe, self.url("train"))["classes"])
        self._probe = probe
        self._shape: tuple[int, ...] | None = None

    @property
    def is_url(self) -> bool:
        return self.root.startswith(_URL_SCHEMES)

    def url(self, split: str) -> str:
        return f"{self.root}/{split}" if self.is_url else str(Path(self.root).expanduser() / split)

    def _open(self, split: str, shuffle: bool, transform: v2.Compose | None = None) -> Dataset:
        return ShardDataset(self.url(split), self.channels, transform, shuffle=shuffle, seed=self.seed,
                            drop_last=True if self.drop_last and split == "train" else None, **self.options)

    def first_image(self) -> torch.Tensor:
        return self._probe[0][0]

    def setup(self, stage: str | None = None) -> None:
        """The three splits, opened here (after DDP started: each dataset reads its rank then)."""
        if self.train_set is not None:
            return
        self.train_set = self._open("train", self.shuffle, self.build_transform(train=True))
        self.val_set = self._open("val", False, self.build_transform(train=False))
        self.test_set = self._open("test", False, self.val_set.image_transform)
        collate = self.checked_collate()
        for split, dataset in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set)):
            check_split(dataset, split, self.num_classes, collate, seed=self.seed)
        log.info("data %s: train %d, val %d, test %d samples streamed from %s, %d classes, input %s", self.name,
                 len(self.train_set), len(self.val_set), len(self.test_set), self.root, self.num_classes, self.input_shape)

    def make_loader(self, dataset: Dataset, train: bool, collate_fn=None) -> DataLoader:
        """A ``StreamingDataLoader`` over a split (resumable: ``state_dict``/``load_state_dict``);
        other datasets (the feature cache's features) get the base's loader."""
        if not isinstance(dataset, ShardDataset):
            return super().make_loader(dataset, train, collate_fn)
        options = self.loader_options()
        if collate_fn is not None:
            options["collate_fn"] = collate_fn
        return StreamingDataLoader(dataset, batch_size=self.batch_size if train else self.eval_batch_size, **options)


def _metadata(dataset: Dataset, url: str) -> dict:
    """What ``prepare`` wrote beside the engine's fields in ``index.json`` (the class names)."""
    index = Path(dataset.input_dir.path) / "index.json"
    meta = json.loads(index.read_text()).get(META_KEY)
    if not meta or not meta.get("classes"):
        raise DataError(f"data.root: the shards at {url} carry no class names (index.json has no '{META_KEY}' key): "
                        "they were not written by this framework's prepare; write them with "
                        "python -m experiments.datamodules.shards prepare")
    return meta


def main(argv: list[str] | None = None) -> int:
    """``prepare``: write shards from an image folder or a torchvision data set."""
    parser = argparse.ArgumentParser(prog="python -m experiments.datamodules.shards", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="write train/, val/ and test/ shards into --out")
    prepare.add_argument("--from", dest="source", choices=["image_folder", "torchvision"], required=True)
    prepare.add_argument("--root", required=True, help="the image folder, or torchvision's data folder")
    prepare.add_argument("--out", required=True, help="the shards' folder (then data=shards data.root=OUT)")
    prepare.add_argument("--dataset", help="the torchvision data set class (--from torchvision), e.g. CIFAR10")
    prepare.add_argument("--download", action="store_true", help="fetch the torchvision data set into --root")
    prepare.add_argument("--val-fraction", type=float, default=0.15, help="carved when the source has no val split")
    prepare.add_argument("--test-fraction", type=float, default=0.15, help="carved when the source has no test split")
    prepare.add_argument("--seed", type=int, default=42, help="the carve's seed (a run's default seed: 42)")
    prepare.add_argument("--chunk-bytes", default="64MB", help="the size of one shard file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.source == "image_folder":
            records, classes = image_folder_records(args.root, args.val_fraction, args.test_fraction, args.seed)
        else:
            if not args.dataset:
                parser.error("--from torchvision needs --dataset (e.g. CIFAR10)")
            records, classes = torchvision_records(args.dataset, args.root, args.download, args.val_fraction, args.seed)
        counts = write_shards(records, classes, args.out, args.chunk_bytes)
    except (DataError, ConfigError) as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(f'{split} {n}' for split, n in counts.items())} records, {len(classes)} classes, "
          f"into {args.out}; train with: python run.py data=shards data.root={args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
