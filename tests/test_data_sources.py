"""Data sources: a user's Dataset module (the example in docs/data.md), image folders, torchvision offline."""

from __future__ import annotations

import re
import struct

import pytest
import torch
from conftest import ROOT, run_job
from hydra.utils import instantiate
from sklearn.datasets import load_digits
from torchvision.io import encode_png

from experiments.errors import DataError


def readme_dataset_module() -> str:
    """The Python block the "Custom datasets" section of docs/data.md asks to save as my_pkg.py."""
    section = (ROOT / "docs" / "data.md").read_text().split("## Custom datasets", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_custom_dataset_on_the_path_trains_via_data_custom(make_cfg, tmp_path, monkeypatch):
    package_dir = tmp_path / "user_code"
    package_dir.mkdir()
    (package_dir / "my_pkg.py").write_text(readme_dataset_module())
    monkeypatch.syspath_prepend(str(package_dir))  # what PYTHONPATH=DIR does for `python run.py`
    cfg = make_cfg(
        "data=custom", "data.dataset._target_=my_pkg.MyDataset", "+data.dataset.size=400",
        "data.val_dataset={_target_: my_pkg.MyDataset, size: 100, seed: 0}", "finetune=scratch", "trainer.max_epochs=4", "logger=none",
    )
    record = run_job(cfg)
    assert record["status"] == "ok"
    assert record["data"] == {"name": "custom", "num_classes": 4, "input_shape": [1, 8, 8]}
    assert record["metrics"]["test/acc"] > 0.6  # 4 classes: chance is 0.25


def write_png(path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image).numpy().tobytes())


def digits_png_folder(root, classes=(0, 1, 7), per_class=20, layout=("",)):
    """Digits images (uint8 grey 8x8) as PNGs under root/<split>/<class>/."""
    bunch = load_digits()
    images = torch.tensor(bunch.images * 255 / 16, dtype=torch.uint8).unsqueeze(1)
    for split in layout:
        for digit in classes:
            picks = (torch.tensor(bunch.target) == digit).nonzero().flatten()
            offset = {"": 0, "train": 0, "val": per_class, "test": 2 * per_class}[split]
            for k, index in enumerate(picks[offset : offset + per_class].tolist()):
                write_png(root / split / f"digit{digit}" / f"{k:03d}.png", images[index])
    return images


def test_image_folder_trains_on_pngs(make_cfg, tmp_path):
    digits_png_folder(tmp_path / "images")
    cfg = make_cfg("data=image_folder", f"data.root={tmp_path / 'images'}", "data.channels=1", "logger=none", "trainer.max_epochs=3")
    dm = instantiate(cfg.data)
    assert dm.class_names() == ["digit0", "digit1", "digit7"] and dm.input_shape == (1, 8, 8)
    record = run_job(cfg)
    assert record["status"] == "ok" and record["data"]["num_classes"] == 3


def test_image_folder_uses_split_folders_and_carves_the_missing_one(make_cfg, tmp_path):
    digits_png_folder(tmp_path / "images", per_class=10, layout=("train", "val"))
    dm = instantiate(make_cfg("data=image_folder", f"data.root={tmp_path / 'images'}").data)
    dm.setup()
    assert len(dm.val_set) == 30  # the val/ folder as it is
    assert len(dm.train_set) + len(dm.test_set) == 30 and len(dm.test_set) == round(30 * 0.15)
    x, y = dm.train_set[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32  # RGB by default


def test_corrupt_image_names_the_file(make_cfg, tmp_path):
    digits_png_folder(tmp_path / "images", per_class=8)
    bad = tmp_path / "images" / "digit1" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dm = instantiate(make_cfg("data=image_folder", f"data.root={tmp_path / 'images'}").data)
    with pytest.raises(DataError, match=r"cannot read the image .*digit1/zz_broken\.png"):
        dm.setup()
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
            for _ in loader:
                pass


def test_images_of_different_sizes_need_image_size(make_cfg, tmp_path):
    digits_png_folder(tmp_path / "images", per_class=3, classes=(0, 1))
    write_png(tmp_path / "images" / "digit1" / "big.png", torch.zeros(1, 12, 10, dtype=torch.uint8))
    overrides = ("data=image_folder", f"data.root={tmp_path / 'images'}", "data.val_fraction=0.2", "data.test_fraction=0.2")
    with pytest.raises(DataError, match=r"different shapes: .* is \(3, 8, 8\) but .* is \(3, 12, 10\).*data\.image_size"):
        instantiate(make_cfg(*overrides).data).setup()
    dm = instantiate(make_cfg(*overrides, "data.image_size=8").data)
    dm.setup()
    assert {tuple(dm.train_set[i][0].shape) for i in range(len(dm.train_set))} == {(3, 8, 8)}


@pytest.mark.parametrize("option,folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_torchvision_sets_offline_say_where_the_files_are_expected(make_cfg, tmp_path, option, folder):
    dm = instantiate(make_cfg(f"data={option}", f"data.root={tmp_path}").data)
    assert dm.download is False  # never fetched unless asked
    with pytest.raises(DataError) as info:
        dm.setup()
    message = str(info.value)
    assert f"expected under {tmp_path.resolve() / folder}" in message and "data.download=true" in message


def write_idx(path, tensor: torch.Tensor) -> None:
    """The MNIST (IDX) file format: magic (uint8 type, ndim), big-endian sizes, then the bytes."""
    header = struct.pack(">HBB", 0, 0x08, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    path.write_bytes(header + tensor.contiguous().numpy().tobytes())


def test_mnist_files_in_place_load_as_uint8_tensors(make_cfg, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n, dtype=torch.uint8) % 10)
    dm = instantiate(make_cfg("data=mnist", f"data.root={tmp_path}").data)
    dm.setup()
    assert len(dm.test_set) == 20 and len(dm.train_set) + len(dm.val_set) == 60
    assert dm.train_set.dataset.dataset.images.dtype == torch.uint8  # held compactly, scaled per sample
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32
    assert dm.class_names()[0].startswith("0")
