"""Write the shards that ``data=shards`` streams: from class sub-folders of images or a torchvision data set.

    python -m experiments.datamodules.shards prepare --from image_folder --root DIR --out SHARDS
    python -m experiments.datamodules.shards prepare --from torchvision --dataset CIFAR10 --root DIR --out SHARDS

``SHARDS/train``, ``SHARDS/val`` and ``SHARDS/test`` are each a LitData data set (chunk files and an
``index.json``). A record is ``{"index", "label", "name", "image"}``: the image file's own bytes
(a torchvision data set's images encoded as lossless PNG), so the shards are as small as the
files and decode through the one image reader. The class names are kept in each split's
``index.json`` (key ``experiments``), so a run sizes its model from the shards alone.

Splits the source lacks are carved here, once, as ``data=image_folder`` and the torchvision options
carve them at run time (same fractions, same seed, same generator): shards prepared with the run's
seed hold the very same training, validation and test images.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torchvision.datasets

from experiments.datamodules.base import carve_indices
from experiments.datamodules.image_folder import ImageFolderDataModule
from experiments.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: the key of ``index.json`` that holds what the framework needs beside the engine's own fields
META_KEY = "experiments"

#: one record of a split: (name, label, a function that returns the image file's bytes)
Record = tuple[str, int, Callable[[], bytes]]


def carve(n: int, fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Indices ``[rest, *carved]`` of ``n`` items, split as a run splits them
    (:func:`~experiments.datamodules.base.carve_indices`)."""
    indices = carve_indices(n, fractions, seed)
    if indices is None:
        raise DataError(f"--val-fraction/--test-fraction {list(fractions)} leave an empty split of {n} samples; "
                        "use fractions that keep >= 1 sample each")
    return indices


def image_folder_records(root: str, val_fraction: float, test_fraction: float, seed: int) -> tuple[dict[str, list[Record]], list[str]]:
    """The splits of ``data=image_folder data.root=root`` as records, and its class names."""
    folder = ImageFolderDataModule(root=root, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    given = dict(zip(SPLITS, folder.load_splits()))
    samples = {split: [(path, label) for path, label in dataset.samples] for split, dataset in given.items() if dataset is not None}
    base = Path(root).expanduser()
    records = {split: [(str(Path(path).relative_to(base)), label, Path(path).read_bytes) for path, label in items]
               for split, items in samples.items()}
    return _carve_missing(records, {"val": val_fraction, "test": test_fraction}, seed), folder.class_names()


def torchvision_records(dataset: str, root: str, download: bool, val_fraction: float, seed: int) -> tuple[dict[str, list[Record]], list[str]]:
    """A torchvision data set with a ``train`` argument (``CIFAR10``, ``MNIST``, ...) as records: its
    test split, and validation carved from its training split as ``data=cifar10`` carves it."""
    factory = getattr(torchvision.datasets, dataset, None)
    if factory is None:
        raise DataError(f"--dataset {dataset}: torchvision.datasets has no such data set (e.g. CIFAR10, MNIST, FashionMNIST)")
    try:
        sources = {split: factory(root=root, train=split == "train", download=download) for split in ("train", "test")}
    except RuntimeError as err:
        raise DataError(f"--dataset {dataset} --root {root}: {err}; add --download to fetch it") from err
    records = {split: [(f"{split}/{i:07d}.png", int(source[i][1]), _png_of(source, i)) for i in range(len(source))]
               for split, source in sources.items()}
    classes = [str(c) for c in getattr(sources["train"], "classes", [])] or \
        [str(c) for c in sorted({label for _, label, _ in records["train"]})]
    return _carve_missing(records, {"val": val_fraction}, seed), classes


def _png_of(source, index: int) -> Callable[[], bytes]:
    def encode() -> bytes:
        buffer = io.BytesIO()
        source[index][0].save(buffer, format="PNG")  # lossless: the shards keep every pixel
        return buffer.getvalue()

    return encode


def _carve_missing(records: dict[str, list[Record]], fractions: dict[str, float], seed: int) -> dict[str, list[Record]]:
    missing = [split for split in fractions if split not in records]
    if missing:
        train = records["train"]
        rest, *carved = carve(len(train), [fractions[s] for s in missing], seed)
        records["train"] = [train[i] for i in rest]
        records.update({split: [train[i] for i in part] for split, part in zip(missing, carved)})
    return records


def write_shards(records: dict[str, list[Record]], classes: list[str], out: str | Path, chunk_bytes: str = "64MB") -> dict[str, int]:
    """Each split's records into ``out/<split>`` (LitData chunks of ``chunk_bytes``); the number of
    records per split. ``out`` must not hold shards yet (a half-written set is never read as whole)."""
    from litdata.streaming.writer import BinaryWriter  # the optional engine, needed here only

    out = Path(out).expanduser()
    taken = [s for s in SPLITS if (out / s / "index.json").exists()]
    if taken:
        raise DataError(f"--out {out} already holds shards ({', '.join(taken)}); remove them or choose another folder")
    counts = {}
    for split in SPLITS:
        writer = BinaryWriter(str(out / split), chunk_bytes=chunk_bytes)
        for i, (name, label, read) in enumerate(records[split]):
            writer.add_item(i, {"index": i, "label": label, "name": name, "image": read()})
        writer.done()
        writer.merge()
        _add_metadata(out / split / "index.json", {"classes": classes})
        counts[split] = len(records[split])
        log.info("shards %s: %d records in %s", split, counts[split], out / split)
    return counts


def _add_metadata(index: Path, meta: dict) -> None:
    content = json.loads(index.read_text())
    content[META_KEY] = meta
    partial = index.with_suffix(".json.partial")
    partial.write_text(json.dumps(content))
    os.replace(partial, index)  # the engine never reads an index without its metadata
