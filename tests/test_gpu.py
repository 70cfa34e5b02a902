"""The README's GPU rows, where a CUDA GPU exists (skipped elsewhere): end to end on the GPU."""

from __future__ import annotations

import pytest
from conftest import compose_cfg, run_job

pytestmark = pytest.mark.requires_gpu


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_default_run_on_the_gpu(tmp_path, precision):
    record = run_job(compose_cfg(tmp_path, "trainer=gpu", f"trainer.precision={precision}", "trainer.accelerator=gpu"))
    assert record["status"] == "ok" and record["metrics"]["test/acc"] > 0.8


def test_cached_lp_ft_on_the_gpu_in_bf16(tmp_path):
    record = run_job(compose_cfg(
        tmp_path, "trainer=gpu", "trainer.accelerator=gpu", "trainer.precision=bf16-mixed", "model=resnet18", "model.pretrained=false",
        "finetune=lp_ft", "data.image_size=32", "trainer.max_epochs=3",
    ))
    assert record["finetune_detail"]["feature_cache"]["used"]
    assert record["metrics"]["test/acc"] > 0.5
