"""data=shards: prepare shards from an image folder, train on them, split them across DDP ranks, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_cfg, run_job

pytest.importorskip("litdata")

from litdata.utilities.env import _DistributedEnv  # noqa: E402  (the engine's own rank detection)

from experiments.datamodules.shards import ShardsDataModule, main  # noqa: E402
from experiments.errors import DataError  # noqa: E402

N_IMAGES, CLASSES = 60, ("cat", "dog", "fox")
#: the fixture writes 2 kB shards of ~100-byte records, so that one epoch crosses several shards
pytestmark = pytest.mark.filterwarnings("ignore:An item was larger than the target chunk size")


def image_folder(root):
    """60 tiny PNGs in 3 class folders; image ``i`` is solid grey ``4 * i``, so a batch says its ids."""
    for i in range(N_IMAGES):
        folder = root / CLASSES[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 4 * i, np.uint8)).save(folder / f"{i:02d}.png")
    return root


def ids_of(images: torch.Tensor) -> list[int]:
    return [round(float(v) * 255 / 4) for v in images[:, 0, 0, 0]]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streaming")
    out = tmp / "shards"
    assert main(["prepare", "--from", "image_folder", "--root", str(image_folder(tmp / "images")), "--out", str(out),
                 "--chunk-bytes", "2kB"]) == 0
    return out


def epoch_ids(loader) -> list[int]:
    return [i for x, _ in loader for i in ids_of(x)]


def test_prepare_writes_the_image_folders_own_split_with_class_names(shards, tmp_path):
    from hydra.utils import instantiate

    folder = instantiate(compose_cfg(tmp_path, "data=image_folder", f"data.root={shards.parent / 'images'}").data)
    folder.setup()
    streamed = ShardsDataModule(root=str(shards), seed=42)
    streamed.setup()
    assert streamed.class_names() == list(CLASSES) and streamed.input_shape == (3, 8, 8)
    assert len(list((shards / "train").glob("*.bin"))) > 1  # several shards, so shuffling crosses them
    assert json.loads((shards / "train" / "index.json").read_text())["experiments"]["classes"] == list(CLASSES)
    for split in ("train", "val", "test"):  # data=image_folder's seeded carve, image for image
        expected = sorted(ids_of(torch.stack([x.float() for x, _ in getattr(folder, f"{split}_set")])))
        assert sorted(epoch_ids(streamed.make_loader(getattr(streamed, f"{split}_set"), train=False))) == expected


def test_a_run_trains_one_epoch_on_shards(shards, tmp_path):
    cfg = compose_cfg(tmp_path, "data=shards", f"data.root={shards}", "data.batch_size=8", "trainer.max_epochs=1",
                      "logger=none")
    record = run_job(cfg)
    assert record["status"] == "ok" and record["data"]["num_classes"] == 3


@pytest.mark.parametrize("batch_size,workers", [(3, 0), (4, 2)])
def test_each_rank_reads_its_own_samples_and_together_all(shards, monkeypatch, batch_size, workers):
    n_train = len(ShardsDataModule(root=str(shards))._open("train", shuffle=False))
    per_rank = []
    for rank in (0, 1):  # as two DDP processes see it: the engine reads the rank when a split is opened
        monkeypatch.setattr(_DistributedEnv, "detect", classmethod(lambda cls, r=rank: cls(2, r, 1)))
        datamodule = ShardsDataModule(root=str(shards), batch_size=batch_size, num_workers=workers)
        datamodule.setup()
        per_rank.append(epoch_ids(datamodule.train_dataloader()))
    both = per_rank[0] + per_rank[1]
    assert len(per_rank[0]) == len(per_rank[1])  # equal steps per rank: DDP stays in step
    assert len(set(both)) == len(both)  # no sample twice in an epoch
    # every sample, less what fills no batch on every rank and worker (none when those divide it)
    grid = 2 * max(workers, 1) * batch_size
    assert n_train - len(both) < grid and (n_train % grid != 0 or len(both) == n_train)


def test_a_loader_resumed_mid_epoch_yields_the_rest_of_the_epoch(shards):
    def loader():
        datamodule = ShardsDataModule(root=str(shards), batch_size=4, num_workers=2, seed=3)
        datamodule.setup()
        return datamodule.train_dataloader()

    first = loader()
    full = epoch_ids(first)
    assert sorted(full) == sorted(set(full)) and full != sorted(full)  # every sample once, shuffled
    seen, interrupted = [], loader()
    for step, (x, _) in enumerate(interrupted):
        seen += ids_of(x)
        if step == 3:
            state = interrupted.state_dict()
            break
    resumed = loader()
    resumed.load_state_dict(state)
    rest = epoch_ids(resumed)
    assert len(seen) == 16 and not set(seen) & set(rest) and sorted(seen + rest) == sorted(full)


def test_missing_shards_say_how_to_write_them(tmp_path):
    with pytest.raises(DataError, match=r"no shards in .*python -m experiments\.datamodules\.shards prepare"):
        ShardsDataModule(root=str(tmp_path))


class TinyTorchvisionSet:
    """A stand-in for a torchvision data set with a ``train`` argument (CIFAR10's interface)."""

    classes = ["zero", "one"]

    def __init__(self, root, train, download):
        self.n = 20 if train else 6

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return Image.fromarray(np.full((4, 4, 3), i, np.uint8)), i % 2


def test_prepare_from_a_torchvision_set_keeps_its_test_split_and_carves_val(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "TinySet", TinyTorchvisionSet, raising=False)
    out = tmp_path / "shards"
    assert main(["prepare", "--from", "torchvision", "--dataset", "TinySet", "--root", str(tmp_path), "--out", str(out)]) == 0
    datamodule = ShardsDataModule(root=str(out))
    datamodule.setup()
    assert datamodule.class_names() == ["zero", "one"] and datamodule.input_shape == (3, 4, 4)
    assert (len(datamodule.train_set), len(datamodule.val_set), len(datamodule.test_set)) == (17, 3, 6)
    x, _ = datamodule.test_set[5]
    assert torch.equal(x, torch.full((3, 4, 4), 5 / 255))  # lossless: the pixels as the set gave them
