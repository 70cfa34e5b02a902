"""After the experiment: predict new files (mode=predict predict.inputs=PATH) from a checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, run_job

from experiments.errors import ConfigError

QUICK = ["trainer.max_epochs=1", "+trainer.limit_train_batches=4", "logger=none"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A small_cnn trained one short epoch on digits: its best checkpoint (the run dir beside it)."""
    run = tmp_path_factory.mktemp("trained")
    cfg = compose_cfg(run, *QUICK)
    from omegaconf import OmegaConf

    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # as run.py leaves it beside the checkpoints
    record = run_job(cfg)
    return Path(record["best_checkpoint"])


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def digits_pngs(folder: Path, count: int) -> torch.Tensor:
    """The first ``count`` scikit-learn digits saved as 8x8 grey PNGs; returns them as [0, 1] tensors."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images[:count] / 16.0
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(folder / f"digit{i}.png")
    return torch.tensor(images, dtype=torch.float32)[:, None]


def model_probabilities(ckpt: Path, images: torch.Tensor) -> torch.Tensor:
    """What the checkpoint's model gives ``images`` prepared by its data's evaluation transform."""
    from experiments.build import build_components
    from experiments.from_checkpoint import config_for_checkpoint

    cfg, _ = config_for_checkpoint(compose_cfg(ckpt.parent.parent / "ref", "mode=predict", f"ckpt_path={ckpt}"), [])
    parts = build_components(cfg)
    parts.module.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    transform = parts.datamodule.build_transform(train=False)
    with torch.no_grad():
        return torch.softmax(parts.model.eval()(transform(images)), dim=1)


def test_predict_a_folder_of_new_images_with_a_broken_file(tmp_path, trained, caplog):
    images = digits_pngs(tmp_path / "new", 5)
    (tmp_path / "new" / "broken.png").write_bytes(b"not an image at all")
    cfg = compose_cfg(tmp_path / "predict", "mode=predict", f"ckpt_path={trained}", f"predict.inputs={tmp_path / 'new'}",
                      "predict.top_k=3")
    record = run_job(cfg)
    assert record["status"] == "ok" and record["num_predictions"] == 6 and record["num_undecodable"] == 1
    rows = {Path(r["input"]).name: r for r in read_rows(tmp_path / "predict" / "predictions.csv")}
    assert "cannot decode" in rows["broken.png"]["error"] and rows["broken.png"]["predicted"] == ""
    assert "1 of 6 inputs could not be decoded" in caplog.text
    expected = model_probabilities(trained, images)
    for i in range(5):
        row = rows[f"digit{i}.png"]
        assert row["predicted"] == row["top1"] == str(int(expected[i].argmax())) and row["error"] == ""
        tops = [float(row[f"top{k}_probability"]) for k in (1, 2, 3)]
        assert tops == sorted(tops, reverse=True) and "top4" not in row
        assert float(row["probability"]) == pytest.approx(float(expected[i].max()), abs=0.01)  # 8-bit PNG rounding
    assert (tmp_path / "predict" / "predictions.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "nowhere", r"predict.inputs=.*: no such file or folder"),
    (lambda root: root.joinpath("empty").mkdir() or root / "empty", r"holds no input files"),
    (lambda root: root.joinpath("texts.txt").write_text("a text\n") and root / "texts.txt", r"is a text file, but this run's model takes images"),
], ids=["missing", "empty-folder", "text-for-an-image-model"])
def test_bad_inputs_are_refused_before_the_model_is_built(tmp_path, trained, make, message):
    from experiments.tasks import predict

    cfg = compose_cfg(tmp_path / "predict", "mode=predict", f"ckpt_path={trained}", f"predict.inputs={make(tmp_path)}")
    with pytest.raises(ConfigError, match=message):
        predict(cfg)
    assert not (tmp_path / "predict" / "predictions.csv").exists()
