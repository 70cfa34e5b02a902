"""Checkpoint writing: atomic, one serialisation per epoch state, optionally in the background."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import compose_cfg, run_job


@pytest.mark.parametrize("background", ["true", "false"])
def test_best_and_last_of_one_epoch_are_one_file_and_reload(tmp_path, background):
    record = run_job(compose_cfg(tmp_path, "trainer.max_epochs=1", "logger=none", f"checkpoint.background={background}"))
    best, last = record["best_checkpoint"], tmp_path / "checkpoints" / "last.ckpt"
    assert best.endswith("epoch000.ckpt")  # one epoch: the best is the last
    assert os.stat(best).st_ino == os.stat(last).st_ino  # linked, not serialised twice
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 0 and state["global_step"] > 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]


def test_background_and_foreground_writes_hold_the_same_weights(tmp_path):
    states = {}
    for background in ("true", "false"):
        run_job(compose_cfg(tmp_path / background, "trainer.max_epochs=2", "logger=none", f"checkpoint.background={background}"))
        states[background] = torch.load(tmp_path / background / "checkpoints" / "last.ckpt", map_location="cpu",
                                        weights_only=True)["state_dict"]
    assert all(torch.equal(states["true"][k], v) for k, v in states["false"].items())


def test_a_checkpoint_every_other_epoch(tmp_path):
    run_job(compose_cfg(tmp_path, "trainer.max_epochs=3", "logger=none", "callbacks.last_checkpoint.every_n_epochs=2"))
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1  # written after epochs 2 only (index 1), not after epoch 3
