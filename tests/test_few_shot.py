"""Few-shot honesty: a run limited to N labels per class validates on N per class too."""

from __future__ import annotations

from collections import Counter

import pytest

from experiments.datamodules import DigitsDataModule
from experiments.errors import ConfigError


def val_counts(datamodule) -> Counter:
    datamodule.setup("fit")
    return Counter(int(datamodule.val_set[i][1]) for i in range(len(datamodule.val_set)))


def test_a_ten_label_run_validates_on_ten_labels_per_class():
    counts = val_counts(DigitsDataModule(samples_per_class=10))
    assert len(counts) == 10 and set(counts.values()) == {10}


def test_the_whole_validation_split_is_an_explicit_opt_in():
    whole = val_counts(DigitsDataModule(samples_per_class=10, val_samples_per_class="all"))
    assert sum(whole.values()) == sum(val_counts(DigitsDataModule()).values()) > 100
    assert set(val_counts(DigitsDataModule(samples_per_class=10, val_samples_per_class=3)).values()) == {3}
    assert DigitsDataModule(samples_per_class=10, val_samples_per_class="all").val_limit is None


def test_the_limited_digits_m_validation_holds_n_per_class():
    from experiments.datamodules import DigitsMDataModule

    counts = val_counts(DigitsMDataModule(patches_per_digit=1, samples_per_class=4))
    assert len(counts) == 10 and set(counts.values()) == {4}


def test_a_bad_validation_limit_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"data.val_samples_per_class=0 .*'all'"):
        DigitsDataModule(val_samples_per_class=0)
