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


# -- no host read in the training step ------------------------------------------------------------
class _DeviceReads(torch.overrides.TorchFunctionMode):
    """Records each read of a tensor's value into Python (``.item()``, ``bool(t)``, ``.tolist()``, ...),
    which on a GPU waits for the device, with the first frame of the code that asked for it."""

    READS = {"item", "tolist", "__bool__", "__int__", "__float__", "numpy", "__index__"}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            import traceback

            frames = [f.filename for f in traceback.extract_stack()[:-1]]
            self.reads.append(next((f for f in reversed(frames) if "torch/optim" not in f), "?")
                              if not any("torch/optim" in f for f in frames[-4:]) else "torch/optim")
        return func(*args, **(kwargs or {}))


class _ProbeSteps(pytest.importorskip("lightning").Callback):
    def __init__(self) -> None:
        self.mode, self.reads, self.steps = None, [], 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.mode = _DeviceReads()
        self.mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.mode.__exit__(None, None, None)
        self.reads += [r for r in self.mode.reads if r != "torch/optim"]  # Adam's step counter: a CPU tensor
        self.steps += 1


@pytest.mark.parametrize("extra", [[], ["model=resnet18", "model.pretrained=false", "data.image_size=16",
                                        "finetune=classifier_only", "finetune.head_fit=none"]],
                         ids=["default", "cached-head"])
def test_a_training_step_reads_nothing_back_from_the_device(tmp_path, extra):
    """Forward, loss, metrics, backward and the optimizer step (the callbacks' per-step hooks too):
    no value read into Python, so a GPU step never waits for the device (the live progress bar's
    reads come every few steps, after the step)."""
    from experiments.pipeline.tasks import train

    probe = _ProbeSteps()
    train(compose_cfg(tmp_path, "trainer.max_epochs=1", "+trainer.limit_train_batches=4", "logger=tensorboard", *extra),
          callbacks=[probe])
    assert probe.steps == 4 and probe.reads == [], probe.reads[:5]
