"""Opt-in speed settings of the module: NHWC layout and torch.compile keep results and checkpoints."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_cfg, run_job

from experiments.pipeline.build import build_components


def test_channels_last_puts_weights_and_batches_in_nhwc(tmp_path):
    parts = build_components(compose_cfg(tmp_path, "model=small_resnet", "module.channels_last=true"))
    parts.module.configure_model()
    conv = next(m for m in parts.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert parts.module.to_layout(torch.rand(4, 1, 8, 8)).is_contiguous(memory_format=torch.channels_last)
    assert parts.module(torch.rand(4, 1, 8, 8)).shape == (4, 10)


@pytest.mark.slow  # two full digits trainings
def test_channels_last_trains_to_the_same_accuracy(tmp_path):
    common = ("model=small_resnet", "trainer.max_epochs=2", "logger=none")
    nchw = run_job(compose_cfg(tmp_path / "a", *common))
    nhwc = run_job(compose_cfg(tmp_path / "b", *common, "module.channels_last=true"))
    assert abs(nchw["metrics"]["test/acc"] - nhwc["metrics"]["test/acc"]) < 0.03


@pytest.mark.slow  # inductor compiles C++ on the CPU: about a minute
def test_compiled_model_trains_and_its_checkpoint_loads_into_an_eager_one(tmp_path):
    common = ("trainer.max_epochs=2", "logger=none")
    eager = run_job(compose_cfg(tmp_path / "eager", *common))
    compiled = run_job(compose_cfg(tmp_path / "compiled", *common, "module.compile=true"))
    assert abs(eager["metrics"]["test/acc"] - compiled["metrics"]["test/acc"]) < 0.03
    a = torch.load(tmp_path / "eager" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "compiled" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    tested = run_job(compose_cfg(tmp_path / "test", "mode=test", f"ckpt_path={tmp_path / 'compiled' / 'checkpoints' / 'last.ckpt'}",
                                 "logger=none"))
    assert tested["status"] == "ok"
