"""The offline domain pair: digits' fixed source/target halves, digits_m over photo patches, class subsets."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F
from conftest import run_job
from hydra.utils import instantiate

from experiments.config.rules import validate
from experiments.datamodules import DigitsDataModule
from experiments.datamodules.digits import load_digit_tensors
from experiments.datamodules.digits_m import SIZE, STRIPE_WIDTH, build_digits_m, load_photos
from experiments.datamodules.selection import partition_indices
from experiments.errors import ConfigError
from experiments.pipeline.tasks import train


@pytest.fixture(scope="module")
def splits():
    return build_digits_m()


def built(make_cfg, *overrides):
    datamodule = instantiate(make_cfg(*overrides).data)
    datamodule.setup()
    return datamodule


def digest(*tensors: torch.Tensor) -> str:
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(tensor.contiguous().numpy().tobytes())
    return hasher.hexdigest()


def image_keys(*datasets) -> list[bytes]:
    """Every image of ``datasets`` as bytes, sorted: the multiset of samples, whatever the order."""
    return sorted(d.images[i].numpy().tobytes() for d in datasets for i in range(len(d)))


def test_partition_halves_are_disjoint_stratified_and_cover_every_digit():
    _, labels = load_digit_tensors()
    source, target = partition_indices(labels, "source"), partition_indices(labels, "target")
    assert len(labels) == 1797
    assert not set(source.tolist()) & set(target.tolist())
    assert sorted(source.tolist() + target.tolist()) == list(range(1797))
    assert ((labels[source].bincount() - labels[target].bincount()).abs() <= 1).all()
    assert partition_indices(labels, "all").tolist() == list(range(1797))


@pytest.mark.parametrize("partition", ["source", "target"])
def test_a_half_is_the_same_for_every_data_seed_and_split_within(make_cfg, partition):
    images, labels = load_digit_tensors()
    half = images[partition_indices(labels, partition)]
    expected = sorted(half[i].numpy().tobytes() for i in range(len(half)))
    per_seed = []
    for seed in (0, 1):
        dm = built(make_cfg, f"data.partition={partition}", f"data.seed={seed}")
        sets = [dm.train_set.dataset, dm.val_set.dataset, dm.test_set.dataset]
        assert image_keys(*sets) == expected  # the three splits are exactly the half
        per_seed.append(image_keys(dm.test_set.dataset))
    assert per_seed[0] != per_seed[1]  # the seed moves the split inside the half, not the half


def test_partition_all_keeps_the_unpartitioned_split(make_cfg):
    images, labels = load_digit_tensors()
    dm = built(make_cfg, "data.seed=3")
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(3))
    assert torch.equal(dm.test_set.dataset.images, images[order[:270]])
    assert torch.equal(dm.test_set.dataset.labels, labels[order[:270]])


def test_bad_partition_names_key_value_and_choices(make_cfg):
    with pytest.raises(ConfigError, match=r"data\.partition='middle' is invalid: expected one of all, source, target"):
        validate(make_cfg("data.partition=middle"))
    with pytest.raises(ConfigError, match=r"data\.partition='middle'.*all, source, target"):
        DigitsDataModule(partition="middle")


def test_digits_m_splits_use_disjoint_digits_from_the_target_half(splits):
    _, labels = load_digit_tensors()
    target = set(partition_indices(labels, "target").tolist())
    digits = {name: set(split.digit.tolist()) for name, split in splits.items()}
    assert not digits["train"] & digits["val"] and not digits["train"] & digits["test"] and not digits["val"] & digits["test"]
    assert digits["train"] | digits["val"] | digits["test"] == target
    for split in splits.values():
        assert torch.equal(split.labels, labels[split.digit])


def test_digits_m_test_patches_come_from_other_photo_regions_than_train(splits):
    photos = load_photos()
    columns = {}
    for name, split in splits.items():
        assert ((split.x // STRIPE_WIDTH) == split.stripe).all()
        assert (((split.x + SIZE - 1) // STRIPE_WIDTH) == split.stripe).all()  # inside one stripe
        assert (split.y >= 0).all() and (split.y + SIZE <= photos.shape[1]).all()
        covered = (split.x[:, None] + torch.arange(SIZE)).flatten()
        columns[name] = set(zip(split.photo.repeat_interleave(SIZE).tolist(), covered.tolist()))
    assert not columns["test"] & columns["train"] and not columns["test"] & columns["val"]
    assert set(splits["train"].photo.tolist()) == set(splits["test"].photo.tolist()) == {0, 1}


def test_digits_m_images_are_the_recorded_digit_blended_over_the_recorded_patch(splits):
    images, _ = load_digit_tensors()
    photos = load_photos()
    for split in splits.values():
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, SIZE, SIZE)
        for i in torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:5].tolist():
            mask = F.interpolate(images[split.digit[i]][None], size=(SIZE, SIZE), mode="bilinear").clamp(0, 1)[0]
            x, y = int(split.x[i]), int(split.y[i])
            patch = photos[split.photo[i], y : y + SIZE, x : x + SIZE].permute(2, 0, 1).float()
            expected = (patch - 255 * mask).abs().round().to(torch.uint8)
            assert (split.images[i].int() - expected.int()).abs().max() <= 1


def test_digits_m_is_the_same_on_every_build_and_for_every_data_seed(splits, make_cfg):
    def fingerprint(split) -> str:
        return digest(split.images, split.labels, split.digit, split.photo, split.x, split.y)

    for seed in (0, 1):  # each setup builds the data set anew
        dm = built(make_cfg, "data=digits_m", f"data.seed={seed}")
        for name, split in zip(("train", "val", "test"), (dm.train_set, dm.val_set, dm.test_set)):
            assert fingerprint(split.dataset) == fingerprint(splits[name]), (seed, name)


def test_digits_m_sizes_and_items(make_cfg):
    dm = built(make_cfg, "data=digits_m")
    train, val, test = dm.train_set.dataset, dm.val_set.dataset, dm.test_set.dataset
    assert len(train) == 32 * len(train.digit.unique()) and len(train) > 19_000
    assert len(val) == 5 * len(val.digit.unique()) and len(test) == 5 * len(test.digit.unique())
    assert dm.num_classes == 10 and dm.input_shape == (3, 32, 32)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    assert x.mean().abs() < 0.5 and 0.5 < x.std() < 2  # normalised with the data's own statistics


def test_digits_source_with_3_channels_at_32px_matches_digits_m(make_cfg):
    source = built(make_cfg, "data.partition=source", "data.channels=3", "data.image_size=32")
    target = built(make_cfg, "data=digits_m")
    xs, _ = next(iter(source.train_dataloader()))
    xt, _ = next(iter(target.train_dataloader()))
    assert xs.shape == xt.shape == (64, 3, 32, 32) and source.input_shape[0] == target.input_shape[0] == 3
    assert torch.equal(xs[:, 0], xs[:, 1]) and torch.equal(xs[:, 0], xs[:, 2])  # grey repeated


@pytest.mark.parametrize("option", ["digits", "digits_m"])
def test_class_subset_relabels_keeps_names_and_passes_the_contract(make_cfg, option):
    _, source_labels = load_digit_tensors()
    dm = built(make_cfg, f"data={option}", "data.classes=[7,3]")
    assert dm.num_classes == 2 and dm.class_names() == ["7", "3"]
    for split in (dm.train_set, dm.val_set, dm.test_set):
        labels = split.dataset.labels
        assert set(labels.tolist()) == {0, 1}
        if option == "digits_m":
            assert torch.equal(source_labels[split.dataset.digit], torch.tensor([7, 3])[labels])
    _, y = next(iter(dm.train_dataloader()))  # every batch is checked against the contract
    assert int(y.max()) == 1
    assert (dm.train_set.dataset.labels == 0).sum() > 0 and (dm.train_set.dataset.labels == 1).sum() > 0


@pytest.mark.parametrize("classes", ["[3,3]", "[]", "[1,x]"])
def test_malformed_class_subset_is_refused_before_anything_loads(make_cfg, classes):
    with pytest.raises(ConfigError, match=r"data\.classes=.*distinct class indices"):
        validate(make_cfg(f"data.classes={classes}"))


@pytest.mark.parametrize("option", ["digits", "digits_m"])
def test_class_outside_the_data_set_stops_the_run_naming_key_value_and_classes(make_cfg, tmp_path, option):
    cfg = make_cfg(f"data={option}", "data.classes=[3,12]", "logger=none")
    validate(cfg)  # the config alone cannot know how many classes the data set has
    with pytest.raises(ConfigError, match=r"data\.classes=\[3, 12\] is invalid: .*in \[0, 10\)"):
        train(cfg)  # a ConfigError of its own (reported in one line), not Hydra's wrapper


@pytest.mark.parametrize("option", ["digits", "digits_m"])
def test_samples_per_class_keeps_n_per_class_seeded(make_cfg, option):
    dm = built(make_cfg, f"data={option}", "data.samples_per_class=5", "data.classes=[1,2,3]", "data.seed=0")
    assert dm.train_set.dataset.labels.bincount().tolist() == [5, 5, 5]
    assert dm.val_set.dataset.labels.bincount().tolist() == [5, 5, 5]  # validation: as many labels as training
    assert dm.test_set.dataset.labels.bincount().min() > 5  # test stays whole
    other = built(make_cfg, f"data={option}", "data.samples_per_class=5", "data.classes=[1,2,3]", "data.seed=1")
    assert other.train_set.dataset.labels.bincount().tolist() == [5, 5, 5]
    assert not torch.equal(dm.train_set.dataset.images, other.train_set.dataset.images)  # the seed draws them
    if option == "digits_m":  # few-shot picks spread over digits, not patches of one digit
        assert len(dm.train_set.dataset.digit.unique()) > 10


def test_run_trains_one_epoch_on_digits_m(make_cfg, tmp_path):
    quick = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2"]
    record = run_job(make_cfg("data=digits_m", "logger=none", *quick))
    assert record["status"] == "ok" and record["epochs"] == 1
    assert record["data"] == {"name": "digits_m", "num_classes": 10, "input_shape": [3, 32, 32]}


def test_domain_samples_figure_lines_up_both_domains_and_logs_to_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from experiments.reporting.figures import domain_samples_figure

    grey, colour = torch.rand(6, 1, 8, 8), torch.rand(4, 3, 32, 32)
    figure = domain_samples_figure({"source": (grey, list("012345")), "target": (colour, list("6789"))})
    axes = figure.get_axes()
    assert [t.get_text() for t in axes[0].get_xticklabels()] == list("012345")
    assert [t.get_text() for t in axes[1].get_xticklabels()] == list("6789")
    assert axes[0].get_images()[0].get_array().shape == axes[1].get_images()[0].get_array().shape  # same cell size
    writer = SummaryWriter(str(tmp_path))
    writer.add_figure("data/domains", figure)
    writer.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))
