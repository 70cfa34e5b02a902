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


def test_a_gpu_training_step_never_waits_for_the_device(tmp_path):
    """torch's own check: with the sync debug mode at "error" around each training step (forward,
    loss, metrics, backward, optimizer step, the per-step hooks), any host synchronisation raises."""
    import lightning as L
    import torch

    from experiments.pipeline.tasks import train

    class NoSync(L.Callback):
        steps = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            torch.cuda.synchronize()  # the batch's copy to the device is the loader's, before the step
            torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("default")
            NoSync.steps += 1

    try:
        train(compose_cfg(tmp_path, "trainer=gpu", "trainer.accelerator=gpu", "trainer.max_epochs=1",
                          "+trainer.limit_train_batches=8", "callbacks.progress_bar=null"), callbacks=[NoSync()])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert NoSync.steps == 8
