"""Checkpoint writing: atomic, one serialisation per epoch state, optionally in the background."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import compose_cfg, resumed_and_uninterrupted, run_job


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


HEAD_ONLY = ["model=resnet18", "model.pretrained=false", "data.image_size=32", "data.train_fraction=0.3", "finetune=classifier_only",
             "finetune.head_fit=none", "logger=none", "callbacks.test_figures=null", "+trainer.limit_val_batches=2",
             "+trainer.limit_test_batches=2"]


def test_a_frozen_backbone_is_written_once_and_checked_when_loaded(tmp_path):
    from experiments.checkpoints import read_checkpoint
    from experiments.errors import CheckpointError
    from experiments.models.weights import read_state_dict
    from experiments.pipeline.tasks import evaluate_checkpoint

    records = {setting: run_job(compose_cfg(tmp_path / setting, *HEAD_ONLY, f"checkpoint.reference_frozen={setting}"))
               for setting in ("true", "false")}
    folder = tmp_path / "true" / "checkpoints"
    last, full = folder / "last.ckpt", tmp_path / "false" / "checkpoints" / "last.ckpt"
    frozen = list(folder.glob("frozen-*.safetensors"))
    assert len(frozen) == 1 and frozen[0].stat().st_size > 40e6  # the resnet18 backbone, once
    assert last.stat().st_size < 1e6 < 40e6 < full.stat().st_size  # the head and its optimizer state only
    raw = torch.load(last, map_location="cpu", weights_only=True)
    assert sorted(raw["state_dict"]) == ["model.head.bias", "model.head.weight"]
    restored, everything = read_checkpoint(last)["state_dict"], read_checkpoint(full)["state_dict"]
    assert restored.keys() == everything.keys() and all(torch.equal(restored[k], everything[k]) for k in everything)
    assert records["true"]["metrics"] == records["false"]["metrics"]
    as_weights = read_state_dict(last)  # what model.weights=<run>/checkpoints/last.ckpt loads
    assert as_weights.keys() == {k.removeprefix("model.") for k in restored}
    assert all(torch.equal(v, restored["model." + k]) for k, v in as_weights.items())

    best = records["true"]["best_checkpoint"]

    def test_mode() -> dict:
        return evaluate_checkpoint(compose_cfg(tmp_path / "test", *HEAD_ONLY, "mode=test", f"ckpt_path={best}")).record

    assert test_mode()["metrics"]["test/acc"] == records["true"]["metrics"]["test/acc"]
    data = bytearray(frozen[0].read_bytes())
    data[-1] ^= 1  # one bit of one weight
    frozen[0].write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content differs"):
        test_mode()
    with pytest.raises(CheckpointError, match="content differs"):
        read_state_dict(last)
    frozen[0].unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        read_checkpoint(last)


def test_a_resumed_run_with_frozen_blocks_ends_with_the_uninterrupted_runs_weights(tmp_path):
    common = [*HEAD_ONLY[:3], "finetune=partial", "finetune.n_blocks=1", "logger=none", "trainer.max_epochs=2",
              "trainer.deterministic=true", "+trainer.limit_train_batches=3"]
    a, b = resumed_and_uninterrupted(tmp_path, common, steps_per_epoch=3)
    assert a["global_step"] == b["global_step"] == 6
    part = tmp_path / "part"
    assert a["state_dict"].keys() == b["state_dict"].keys() and all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    raw = torch.load(part / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "model.backbone.layer1.0.conv1.weight" not in raw["state_dict"]  # frozen: in the frozen file
    assert "model.backbone.layer4.0.conv1.weight" in raw["state_dict"]  # trained


def test_only_tensors_equal_to_the_start_are_noted_unchanged():
    """BatchNorm statistics that update (its kernel does not move the version counter), a frozen
    weight written in place and a parameter that thawed are all left out of the note."""
    import lightning as L

    from experiments.checkpoints.frozen import UNCHANGED_KEY, UnchangedTensors

    module = L.LightningModule()
    module.frozen, module.thawing, module.norm = torch.nn.Linear(600, 600), torch.nn.Linear(600, 600), torch.nn.BatchNorm1d(600)
    for p in [*module.frozen.parameters(), *module.thawing.parameters()]:
        p.requires_grad_(False)
    callback = UnchangedTensors()
    callback.on_train_start(None, module)

    def note() -> set[str]:
        checkpoint = {"state_dict": module.state_dict()}
        callback.on_save_checkpoint(None, module, checkpoint)
        return set(checkpoint.get(UNCHANGED_KEY, []))

    trained = {"norm.weight", "norm.bias"}  # parameters with gradients are never noted
    assert note() == set(module.state_dict()) - trained  # nothing moved yet
    module.norm(torch.randn(8, 600))  # training mode: running statistics update
    module.thawing.weight.requires_grad_(True)
    assert note() == {"frozen.weight", "frozen.bias", "thawing.bias"}
    with torch.no_grad():
        module.frozen.bias.add_(1.0)
    module.thawing.weight.requires_grad_(False)  # frozen again: it may have trained, so it stays out
    assert note() == {"frozen.weight", "thawing.bias"}
