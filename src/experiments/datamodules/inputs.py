"""``mode=predict predict.inputs=PATH``: files the model has never seen, as batches it takes.

:func:`find_inputs` resolves the path (an image file, a folder of images with or without
sub-folders, a glob; for a text model a ``.txt`` file or a table) and refuses what cannot work (no
such path, no images, a text file for an image model) before any model is built. The datasets
read lazily, one item at a time, so a large folder streams in batches; an image that cannot be
decoded becomes an item that carries its error (the batch's third element) instead of stopping
the others.
"""

from __future__ import annotations

import glob
from pathlib import Path

import torch
from torch.utils.data import Dataset

from experiments.datamodules.image_files import EXTENSIONS, read_image
from experiments.errors import ConfigError, DataError

IMAGE_SUFFIXES = EXTENSIONS  # what training reads, prediction reads
TEXT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")


def find_inputs(spec: str, kind: str) -> list[Path]:
    """The files ``spec`` names, sorted: itself (a file), the images under it (a folder, searched
    recursively), or the glob's matches. ``kind`` is what the model takes: ``image`` or ``text``.

    Raises ConfigError for a path that does not exist, a folder or glob without inputs, a text
    file for an image model (or the reverse), or a model that takes neither.
    """
    key = f"predict.inputs={spec!r}"
    if kind not in ("image", "text"):
        raise ConfigError(f"{key}: this run's model takes {kind}, not image or text files; "
                          "predict its data option's test split instead (leave predict.inputs unset)")
    path = Path(spec).expanduser()
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    elif path.is_dir():
        suffixes = IMAGE_SUFFIXES if kind == "image" else (".txt",)
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"{key}: no such file or folder")
    if not files:
        wanted = ", ".join(IMAGE_SUFFIXES if kind == "image" else TEXT_SUFFIXES)
        raise ConfigError(f"{key} holds no input files ({wanted}): check the path or the pattern")
    if kind == "image":
        texts = [f for f in files if f.suffix.lower() in TEXT_SUFFIXES]
        if texts:
            raise ConfigError(f"{key}: {texts[0]} is a text file, but this run's model takes images; give "
                              "image files (a file, a folder or a glob such as 'photos/*.jpg')")
    elif len(files) > 1 or files[0].suffix.lower() not in TEXT_SUFFIXES:
        raise ConfigError(f"{key}: a text model predicts one .txt file (one text a line) or a table "
                          f"({', '.join(TEXT_SUFFIXES[1:])}) with data.text_column; got {files[0]}"
                          + (f" and {len(files) - 1} more" if len(files) > 1 else ""))
    return files


class ImageFiles(Dataset):
    """Image files as ``(image, index, error)``: a float ``(C, H, W)`` tensor with the data's
    channels and size in [0, 1] put through ``transform`` (the run's evaluation transform), or,
    for a file that cannot be decoded, zeros and the decoder's message. :func:`image_contract`
    writes these steps down for a client without this package."""

    def __init__(self, files: list[Path], shape: tuple[int, int, int], transform: torch.nn.Module | None) -> None:
        self.files, self.shape, self.transform = files, shape, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        from torchvision.transforms.v2 import functional as F

        channels, height, width = self.shape
        try:
            image = read_image(self.files[index], channels)
        except DataError as err:
            blank = torch.zeros(self.shape)
            return (self.transform(blank) if self.transform is not None else blank), index, f"cannot decode: {err}"
        image = F.resize(image, [height, width], antialias=True)
        return (self.transform(image) if self.transform is not None else image), index, ""


class TokenRows(Dataset):
    """Token id rows ``(N, L)`` as ``(ids, index, "")`` (texts always decode)."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        return self.ids[index], index, ""


class InputCollate:
    """``(inputs, indices, errors)`` batches; with ``pad_token_id`` token rows are cut to the
    batch's longest text, as training batches are."""

    def __init__(self, pad_token_id: int | None = None) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[tuple[torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        inputs = torch.stack([x for x, _, _ in items])
        if self.pad_token_id is not None:
            used = (inputs != self.pad_token_id).any(dim=0).nonzero()
            inputs = inputs[:, : int(used.max()) + 1 if len(used) else 1]
        return inputs, torch.tensor([i for _, i, _ in items]), [e for _, _, e in items]


#: how a file's grey value is computed from RGB (ITU-R 601 luma), as :func:`read_image` does
GREY_FROM_RGB = (0.299, 0.587, 0.114)


def image_contract(datamodule) -> list[dict]:
    """The steps :class:`ImageFiles` puts an image file through, as data a client without this
    package follows (``mode=export`` writes them into the exported file): decode, the resize to the
    data's own size, then each step of the evaluation transform (channel repeat, resize with its
    interpolation, normalisation). A step this list cannot describe is named, so a client can refuse."""
    from torchvision.transforms import v2

    from experiments.datamodules.transforms import ExpandChannels, ToFloatImage, steps_of

    channels, height, width = tuple(datamodule.input_shape)
    steps: list[dict] = [
        {"op": "decode", "channels": channels, "range": [0.0, 1.0], "scale": "the file's full scale (255, or 65535 for 16-bit)",
         "alpha": "dropped", "grey_to_rgb": "repeated", "rgb_to_grey": list(GREY_FROM_RGB), "frames": "the first"},
        {"op": "resize", "size": [height, width], "interpolation": "bilinear", "antialias": True},
    ]
    transform = datamodule.build_transform(train=False)
    for step in (list(steps_of(transform))[1:] if transform is not None else []):
        if isinstance(step, (v2.Compose, ToFloatImage)):  # the decode step's floats in [0, 1] already
            continue
        if isinstance(step, ExpandChannels):
            steps.append({"op": "repeat_channels", "channels": step.channels})
        elif isinstance(step, v2.Resize):
            steps.append({"op": "resize", "size": list(step.size), "interpolation": step.interpolation.value,
                          "antialias": bool(step.antialias)})
        elif isinstance(step, v2.Normalize):
            steps.append({"op": "normalize", "mean": list(step.mean), "std": list(step.std)})
        else:
            steps.append({"op": "unsupported", "name": type(step).__name__})
    return steps


def input_dataset(datamodule, files: list[Path]) -> tuple[Dataset, list[str], InputCollate]:
    """The dataset of ``files`` prepared as ``datamodule`` prepares its test split (channels, size,
    normalisation; tokenizer and max length), the name of each item, and its collate function."""
    if datamodule.input_kind == "text":
        from experiments.datamodules.text_sources import read_texts

        texts, names = read_texts(files[0], datamodule.text_column)
        if not texts:
            raise ConfigError(f"predict.inputs={str(files[0])!r} holds no text")
        return TokenRows(datamodule.encode(texts)), [f"{files[0]}:{name}" for name in names], InputCollate(datamodule.pad_token_id)
    shape = tuple(datamodule.input_shape)
    return ImageFiles(files, shape, datamodule.build_transform(train=False)), [str(f) for f in files], InputCollate()
