"""DataLoader options from config, seeded splits, transforms as config."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import RandomSampler, SequentialSampler

from experiments.datamodules.transforms import TensorImageDataset


def built(make_cfg, *overrides):
    datamodule = instantiate(make_cfg(*overrides).data)
    datamodule.setup()
    return datamodule


def test_every_loader_option_reaches_the_dataloaders(make_cfg):
    dm = built(
        make_cfg,
        "data.batch_size=16", "data.eval_batch_size=40", "data.num_workers=2", "data.pin_memory=true",
        "data.persistent_workers=true", "data.prefetch_factor=3", "data.drop_last=true",
    )
    train, val, test = dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()
    assert (train.batch_size, val.batch_size, test.batch_size) == (16, 40, 40)
    for loader in (train, val, test):
        assert loader.num_workers == 2
        assert loader.pin_memory is True
        assert loader.persistent_workers is True
        assert loader.prefetch_factor == 3
    assert train.drop_last is True and val.drop_last is False and test.drop_last is False


def test_worker_only_options_are_dropped_without_workers(make_cfg):
    dm = built(make_cfg, "data.num_workers=0", "data.persistent_workers=true", "data.prefetch_factor=4")
    loader = dm.train_dataloader()
    assert loader.num_workers == 0 and loader.persistent_workers is False and loader.prefetch_factor is None
    assert next(iter(loader))[0].shape == (64, 1, 8, 8)  # and the loader works


@pytest.mark.parametrize("drop_last", [False, True])
def test_drop_last_changes_the_training_batch_count(make_cfg, drop_last):
    dm = built(make_cfg, "data.batch_size=50", f"data.drop_last={str(drop_last).lower()}")
    n_train, n_val = len(dm.train_set), len(dm.val_set)
    assert n_train % 50  # a short last batch exists
    rounding = math.floor if drop_last else math.ceil
    batches = list(dm.train_dataloader())
    assert len(batches) == rounding(n_train / 50)
    assert sum(len(y) for _, y in batches) == (n_train // 50 * 50 if drop_last else n_train)
    assert len(dm.val_dataloader()) == math.ceil(n_val / 50)  # evaluation keeps every sample


def test_shuffle_only_in_training(make_cfg):
    dm = built(make_cfg)
    assert isinstance(dm.train_dataloader().sampler, RandomSampler)
    assert isinstance(dm.val_dataloader().sampler, SequentialSampler)
    assert isinstance(dm.test_dataloader().sampler, SequentialSampler)
    loader = dm.train_dataloader()

    def epoch_order(epoch):
        loader.sampler.set_epoch(epoch)  # Lightning does this before every epoch
        return torch.cat([y for _, y in loader])

    first, second = epoch_order(0), epoch_order(1)
    assert not torch.equal(first, second)  # reshuffled every epoch ...
    assert torch.equal(epoch_order(0), first)  # ... reproducibly
    val_a, val_b = ([y for _, y in dm.val_dataloader()] for _ in range(2))
    assert torch.equal(torch.cat(val_a), torch.cat(val_b))
    no_shuffle = built(make_cfg, "data.shuffle=false")
    assert isinstance(no_shuffle.train_dataloader().sampler, SequentialSampler)


def split_labels(dm):
    return [torch.tensor([dm.train_set[i][1] for i in range(len(dm.train_set))])] + [
        torch.stack([s[i][0] for i in range(len(s))]) for s in (dm.val_set, dm.test_set)
    ]


def test_same_seed_same_split_other_seed_other_split(make_cfg):
    a, b = split_labels(built(make_cfg, "data.seed=7")), split_labels(built(make_cfg, "data.seed=7"))
    c = split_labels(built(make_cfg, "data.seed=8"))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_val_fraction_sizes_the_split(make_cfg):
    dm = built(make_cfg, "data.val_fraction=0.3", "data.test_fraction=0.1")
    total = len(dm.train_set) + len(dm.val_set) + len(dm.test_set)
    assert total == 1797
    assert len(dm.val_set) == round(1797 * 0.3) and len(dm.test_set) == round(1797 * 0.1)


def test_train_and_eval_transforms_from_config(make_cfg):
    dm = built(
        make_cfg,
        "data.train_transforms=[{_target_: torchvision.transforms.v2.RandomHorizontalFlip, p: 1.0}]",
        "data.eval_transforms=[{_target_: torchvision.transforms.v2.RandomVerticalFlip, p: 1.0}]",
    )
    raw_train = dm.train_set.dataset
    image, _ = raw_train[0]
    flipped, _ = dm.train_set[0]
    normalise = dm.build_transform(train=False).transforms[-1]
    assert torch.allclose(flipped, normalise(image.flip(-1)))
    val_image, _ = dm.val_set.dataset[0]
    assert torch.allclose(dm.val_set[0][0], normalise(val_image.flip(-2)))
    assert dm.train_is_deterministic is False


def test_uint8_images_are_scaled_without_pil():
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    dataset = TensorImageDataset(images, torch.arange(5))
    image, label = dataset[2]
    assert image.dtype == torch.float32 and label == 2
    assert torch.allclose(image * 255, images[2].float())


@pytest.mark.parametrize("data", ["digits", pytest.param("digits_m", marks=pytest.mark.slow)])  # digits_m: ~8 s
def test_batched_fetching_gives_the_item_paths_batches_bit_for_bit(make_cfg, data):
    """`data.batched` (one indexing operation and one preprocessing call per batch) against the
    item-by-item path, with channel expansion, resize and normalisation in play."""
    from experiments.datamodules.transforms import CollatedBatch
    from experiments.models.core import Preprocessing

    loaders = {}
    for batched in ("true", "false"):
        dm = instantiate(make_cfg(f"data={data}", f"data.batched={batched}", "data.image_size=20").data)
        dm.set_preprocessing(Preprocessing(in_chans=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)))
        dm.setup()
        loaders[batched] = dm
    fetched = loaders["true"].train_set.__getitems__([3, 1, 4])
    assert isinstance(fetched, CollatedBatch)  # the batched path was taken
    for split in ("train_dataloader", "val_dataloader"):
        for (xa, ya), (xb, yb) in zip(getattr(loaders["true"], split)(), getattr(loaders["false"], split)()):
            assert xa.shape[1:] == (3, 20, 20) and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_random_per_item_transforms_keep_the_item_path(make_cfg):
    dm = built(make_cfg, "data.train_transforms=[{_target_: torchvision.transforms.v2.RandomHorizontalFlip}]")
    assert isinstance(dm.train_set.__getitems__([0, 1]), list)  # each item its own random draw
    assert not isinstance(dm.val_set.__getitems__([0, 1]), list)  # evaluation stays batched


def test_batched_fetching_works_in_loader_workers(make_cfg):
    main = built(make_cfg, "data.shuffle=false")
    workers = built(make_cfg, "data.shuffle=false", "data.num_workers=2")
    for (xa, ya), (xb, yb) in zip(main.train_dataloader(), workers.train_dataloader()):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_a_domain_pairs_unlabelled_target_is_fetched_a_batch_at_once_bit_for_bit(make_cfg):
    """The target's images-only view keeps the batched fetch (one indexing and one preprocessing
    call per batch) and serves what the item-by-item path serves, in the same seeded order."""
    from experiments.models.core import Preprocessing

    targets = {}
    for batched in ("true", "false"):
        pair = instantiate(make_cfg("experiment=da_digits_m", f"data.target.batched={batched}").data)
        pair.set_preprocessing(Preprocessing(in_chans=3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
        targets[batched] = pair.train_dataloader().iterables["target"]
    assert isinstance(targets["true"].dataset.__getitems__([5, 2, 7]), torch.Tensor)  # one batch tensor
    assert isinstance(targets["false"].dataset.__getitems__([5, 2, 7]), list)
    for _, (a, b) in zip(range(3), zip(targets["true"], targets["false"])):
        assert a.shape == (64, 3, 32, 32) and torch.equal(a, b)
