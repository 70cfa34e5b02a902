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
    with pytest.raises(ConfigError, match=r"data.val_samples_per_class=0 is invalid: expected null or an integer >= 1 or all"):
        DigitsDataModule(val_samples_per_class=0)


# -- step budgets: a 100-image run trains as many steps as it is given, not 2 per epoch ----------------
def test_train_steps_sets_the_epochs_from_the_data_and_the_schedules_follow(tmp_path):
    from conftest import compose_cfg, run_job

    common = ["data.samples_per_class=10", "logger=none", "callbacks.test_figures=null", "train_steps=7"]
    record = run_job(compose_cfg(tmp_path / "lp_ft", *common, "finetune=lp_ft", "finetune.probe_epochs=null"))
    # 100 training images, batch 64: 2 steps an epoch, so 7 steps need 4 epochs (8 steps)
    assert (record["epochs"], record["global_step"]) == (4, 8)
    # probe_epochs=null: a quarter of the 4 epochs probes, then every block thaws
    assert [change["epoch"] for change in record["finetune_detail"]["schedule"]] == [0, 1]
    record = run_job(compose_cfg(tmp_path / "cut", *common, "+trainer.limit_train_batches=1"))
    assert (record["epochs"], record["global_step"]) == (7, 7)  # one batch an epoch counted


@pytest.mark.slow
def test_scratch_trains_its_own_budget_and_rate(tmp_path):
    from conftest import compose_cfg, run_job

    from experiments.checkpoints import read_checkpoint
    from experiments.config.rules import validate

    common = ["data.samples_per_class=10", "logger=none", "callbacks.test_figures=null", "train_steps=7",
              "finetune=scratch", "scheduler=none", "optimizer.lr=0.002"]
    record = run_job(compose_cfg(tmp_path / "own", *common, "finetune.steps_mult=2", "finetune.lr_mult=0.5"))
    # 7 steps x 2 at 2 steps an epoch: 7 epochs (14 steps); every group at 0.002 x 0.5
    assert (record["epochs"], record["global_step"]) == (7, 14)
    state = read_checkpoint(tmp_path / "own" / "checkpoints" / "last.ckpt")
    assert {g["lr"] for g in state["optimizer_states"][0]["param_groups"]} == {0.001}
    with pytest.raises(ConfigError, match=r"finetune.steps_mult=0.5 is invalid: expected a number >= 1"):
        validate(compose_cfg(tmp_path / "bad", *common, "finetune.steps_mult=0.5"))


def test_a_bad_step_budget_is_refused_before_torch(tmp_path):
    from conftest import compose_cfg

    from experiments.config.rules import validate

    with pytest.raises(ConfigError, match=r"train_steps=0 is invalid: expected null or an integer >= 1"):
        validate(compose_cfg(tmp_path, "train_steps=0"))


def test_early_stopping_stops_a_run_that_no_longer_improves_and_still_tests_its_best(tmp_path):
    from conftest import compose_cfg, run_job

    record = run_job(compose_cfg(tmp_path, "callbacks=early_stopping", "callbacks.early_stopping.patience=1",
                                 "trainer.max_epochs=20", "optimizer.lr=1e-12", "scheduler=none",
                                 "logger=none", "callbacks.test_figures=null"))
    assert record["epochs"] < 20 and "test/acc" in record["metrics"]  # at lr 1e-12 it soon stops improving
    assert record["best_checkpoint"] is not None
