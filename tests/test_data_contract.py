"""The Dataset contract: bad datasets fail before training with one message naming problem and index."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from experiments.datamodules import CustomDataModule
from experiments.datamodules.contract import CheckedCollate
from experiments.errors import DataError


class Blobs(Dataset):
    """40 items of shape (4,), labels 0..2; ``bad`` spoils one item in a chosen way."""

    def __init__(self, n: int = 40, bad: str | None = None, bad_index: int = 0) -> None:
        self.n, self.bad, self.bad_index = n, bad, bad_index

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        x, y = torch.full((4,), float(index)), index % 3
        if index == self.bad_index:
            if self.bad == "numpy":
                x = np.zeros(4, dtype=np.float32)
            elif self.bad == "ragged":
                x = torch.zeros(5)
            elif self.bad == "label":
                y = 7
            elif self.bad == "float_label":
                y = 1.5
            elif self.bad == "single":
                return x
        return x, y


def setup_custom(dataset, **kwargs) -> CustomDataModule:
    dm = CustomDataModule(dataset, num_classes=3, val_fraction=0.25, test_fraction=0.25, seed=0, batch_size=8, **kwargs)
    dm.setup()
    return dm


def test_a_good_dataset_passes_and_trains_through_the_loader():
    dm = setup_custom(Blobs())
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 4) and y.dtype == torch.long


def test_non_tensor_input_is_named_with_its_index():
    with pytest.raises(DataError, match=r"train item 0 .*numpy\.ndarray.*must return a torch\.Tensor"):
        setup_custom(Blobs(bad="numpy"), val_dataset=Blobs(), test_dataset=Blobs())


def test_item_that_is_not_a_pair():
    with pytest.raises(DataError, match=r"train item 0 is a torch\.Tensor: __getitem__ must return an \(input tensor, label\) pair"):
        setup_custom(Blobs(bad="single"), val_dataset=Blobs(), test_dataset=Blobs())


def test_ragged_shapes_name_both_indices_and_shapes():
    n = 40
    with pytest.raises(DataError) as info:
        setup_custom(Blobs(n, bad="ragged", bad_index=n - 1), val_dataset=Blobs(), test_dataset=Blobs())
    message = str(info.value)
    assert "different shapes" in message
    assert "train item 0 is (4,)" in message and f"item {n - 1} is (5,)" in message


def test_ragged_item_in_a_carved_split_names_its_source_index():
    dataset = Blobs(n=12, bad="ragged", bad_index=11)  # splits of 6/3/3 items: every item is checked
    with pytest.raises(DataError, match=r"(train|val|test) item \d \(item 11 of Blobs\) is \(5,\)"):
        setup_custom(dataset)


def test_empty_dataset():
    with pytest.raises(DataError, match=r"train dataset Blobs has __len__ 0"):
        setup_custom(Blobs(n=0))
    with pytest.raises(DataError, match=r"val dataset Blobs has __len__ 0"):
        setup_custom(Blobs(), val_dataset=Blobs(n=0))


def test_label_outside_the_classes():
    with pytest.raises(DataError, match=r"train item 0 has the label 7, outside \[0, 3\)"):
        setup_custom(Blobs(bad="label"), val_dataset=Blobs(), test_dataset=Blobs())
    with pytest.raises(DataError, match=r"train item 0 has the label 1\.5 of type float: expected an integer"):
        setup_custom(Blobs(bad="float_label"), val_dataset=Blobs(), test_dataset=Blobs())


def test_problems_the_sample_misses_are_caught_per_batch_with_the_same_message():
    dm = setup_custom(Blobs(n=40), val_dataset=Blobs(), test_dataset=Blobs())
    # spoil an item the up-front sample did not read: the loader's collate names it
    dm.train_set.dataset.bad, dm.train_set.dataset.bad_index = "ragged", 13
    loader = DataLoader(dm.train_set, batch_size=40, collate_fn=dm.checked_collate())
    with pytest.raises(DataError, match=r"collate_fn default_collate failed on a batch: items have different shapes: batch item 0 is \(4,\) but batch item 13 is \(5,\)"):
        next(iter(loader))
    dm.train_set.dataset.bad = "label"
    with pytest.raises(DataError, match=r"batch item 13 has the label 7, outside \[0, 3\)"):
        next(iter(loader))


def pad_collate(items):
    """A user collate that pads ragged inputs; labels as given."""
    xs = torch.nn.utils.rnn.pad_sequence([x for x, _ in items], batch_first=True)
    return xs, torch.tensor([y for _, y in items])


def test_a_user_collate_path_is_checked_too():
    # the user's collate handles ragged inputs, so the check lets them through ...
    collate = CheckedCollate(num_classes=3, collate=pad_collate)
    x, _ = collate([(torch.ones(4), 0), (torch.ones(5), 1)])
    assert x.shape == (2, 5)
    # ... but its batches still obey the contract
    with pytest.raises(DataError, match=r"batch item 1 has the label 7, outside \[0, 3\)"):
        collate([(torch.ones(4), 0), (torch.ones(4), 7)])
    bad = CheckedCollate(num_classes=3, collate=lambda items: torch.stack([x for x, _ in items]))
    with pytest.raises(DataError, match=r"returned a torch\.Tensor: expected an \(inputs, labels\) pair"):
        bad([(torch.ones(4), 0)])
    failing = CheckedCollate(num_classes=3, collate=pad_collate)
    with pytest.raises(DataError, match=r"collate_fn pad_collate failed on a batch: batch item 1 has an input of type list"):
        failing([(torch.ones(4), 0), ([1.0, 2.0], 1)])


def test_user_collate_from_config_reaches_the_loader():
    dm = setup_custom(Blobs(), collate_fn=pad_collate)
    loader = dm.train_dataloader()
    assert loader.collate_fn.collate is pad_collate
    assert next(iter(loader))[0].shape == (8, 4)
