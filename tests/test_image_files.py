"""One image reader for training and prediction: every common format, scaled by its real bit depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.datamodules.image_files import read_image
from experiments.errors import DataError

GREY = (np.arange(16 * 16).reshape(16, 16) % 256).astype(np.uint8)  # every level once
COLOUR = np.stack([GREY, 255 - GREY, np.full_like(GREY, 128)], axis=-1)


def save_formats(folder: Path) -> dict[str, tuple[Path, float]]:
    """The same picture in every format the data options accept: name -> (file, tolerance)."""
    folder.mkdir(parents=True, exist_ok=True)
    wide = GREY.astype(np.uint16) * 257  # the 8-bit levels at 16 bits: 255 -> 65535
    files = {
        "png8": (Image.fromarray(GREY, "L"), "png", {}, 0.0),
        "png16": (Image.fromarray(wide), "png", {}, 0.0),
        "tiff16": (Image.fromarray(wide), "tif", {}, 0.0),
        "tiff8": (Image.fromarray(GREY, "L"), "tiff", {}, 0.0),
        "bmp": (Image.fromarray(GREY, "L"), "bmp", {}, 0.0),
        "gif": (Image.fromarray(GREY, "L"), "gif", {}, 0.0),
        "webp": (Image.fromarray(GREY, "L"), "webp", {"lossless": True}, 0.0),
        "png_alpha": (Image.fromarray(GREY, "L").convert("LA"), "png", {}, 0.0),
        "pgm": (Image.fromarray(GREY, "L"), "pgm", {}, 0.0),
        "jpeg_cmyk": (Image.fromarray(GREY, "L").convert("CMYK"), "jpg", {"quality": 100}, 0.03),
    }
    out = {}
    for name, (image, suffix, options, tolerance) in files.items():
        path = folder / f"{name}.{suffix}"
        image.save(path, **options)
        out[name] = (path, tolerance)
    return out


def test_every_format_reads_as_the_same_picture_in_0_1(tmp_path):
    reference = torch.from_numpy(GREY).float()[None] / 255
    for name, (path, tolerance) in save_formats(tmp_path).items():
        grey, rgb = read_image(path, 1), read_image(path, 3)
        assert grey.dtype == torch.float32 and grey.shape == (1, 16, 16) and rgb.shape == (3, 16, 16), name
        assert 0 <= float(grey.min()) and float(grey.max()) <= 1, name  # a 16-bit file is not divided by 255
        assert torch.allclose(grey, reference, atol=tolerance + 1e-4), f"{name}: {float((grey - reference).abs().max())}"
        assert torch.allclose(rgb, reference.expand(3, -1, -1), atol=tolerance + 2 / 255), name


def test_colour_becomes_grey_by_luma_and_alpha_is_dropped(tmp_path):
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([COLOUR, np.full_like(GREY, 7)]), "RGBA").save(path)
    rgb = read_image(path, 3)
    assert torch.equal(rgb, torch.from_numpy(COLOUR).permute(2, 0, 1).float() / 255)
    luma = (0.299 * COLOUR[..., 0] + 0.587 * COLOUR[..., 1] + 0.114 * COLOUR[..., 2]) / 255
    assert torch.allclose(read_image(path, 1)[0], torch.from_numpy(luma).float(), atol=1 / 255)  # 8-bit luma


def test_an_animation_gives_its_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.fromarray(np.full((8, 8), level, np.uint8), "L") for level in (40, 200)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert torch.allclose(read_image(path, 1), torch.full((1, 8, 8), 40 / 255), atol=1 / 255)


@pytest.mark.parametrize("suffix", [".png", ".gif", ".tif", ".bmp", ".webp"])
def test_a_broken_file_is_a_data_error_that_names_it(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=f"cannot read the image {path}: .*replace or remove the file"):
        read_image(path, 3)


def test_image_folder_trains_on_16_bit_files_in_0_1_and_skips_hidden_folders(tmp_path):
    from experiments.datamodules import ImageFolderDataModule

    for label, level in (("dark", 20), ("light", 230)):
        folder = tmp_path / "data" / label
        folder.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), level * 257 + i, np.uint16)).save(folder / f"{i}.png")
    hidden = tmp_path / "data" / ".ipynb_checkpoints"
    hidden.mkdir()
    Image.fromarray(GREY, "L").save(hidden / "scratch.png")  # a notebook's leftovers, not a class
    (tmp_path / "data" / "dark" / ".ipynb_checkpoints").mkdir()
    Image.fromarray(GREY, "L").save(tmp_path / "data" / "dark" / ".ipynb_checkpoints" / "x.png")
    datamodule = ImageFolderDataModule(root=str(tmp_path / "data"), channels=1, val_fraction=0.25, test_fraction=0.25)
    assert datamodule.class_names() == ["dark", "light"]
    datamodule.setup("fit")
    images = torch.stack([datamodule.train_set[i][0] for i in range(len(datamodule.train_set))])
    assert len(datamodule.train_set) + len(datamodule.val_set) + len(datamodule.test_set) == 8
    assert float(images.max()) <= 1 and float(images.min()) >= 20 / 255 - 1e-3
