"""Run folders say what they hold: training runs in runs/ by the options typed, a checkpoint's
test/predict/export under its run, nothing at all for env, models and a refused command."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from experiments.config.run_names import option_label, run_dir, safe_name

NOW = "2026-12-02_10-00-00"


def test_training_runs_are_named_by_the_options_typed(tmp_path):
    assert run_dir("out", "train", None, "efficientnet_lite0", "full", [], NOW) == f"out/runs/{NOW}_efficientnet_lite0_full"
    typed = ["model=timm", "model.name=convnext_nano", "finetune=lora"]
    assert run_dir("out", "train", None, "timm", "lora", typed, NOW) == f"out/runs/{NOW}_timm-convnext_nano_lora"
    assert run_dir("out", "advise", None, "small_cnn", "auto", [], NOW) == f"out/advise/{NOW}_small_cnn_auto"
    assert option_label("timm", "model", ["model.name=*lite0*"]) == "timm--lite0"  # no glob characters in a folder name
    assert safe_name("hf-hub:org/repo") == "hf-hub-org-repo"


def test_a_checkpoints_commands_go_under_its_run_or_say_their_source(tmp_path):
    run = tmp_path / "runs" / "2026-12-01_small_cnn_full"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("mode: train\n")
    ckpt = run / "checkpoints" / "last.ckpt"
    assert run_dir("out", "predict", str(ckpt), "small_cnn", "full", [], NOW) == str(run.resolve() / "predict" / NOW)
    assert run_dir("out", "export", str(ckpt), "small_cnn", "full", [], NOW) == str(run.resolve() / "export" / NOW)
    loose = tmp_path / "downloaded.ckpt"
    assert run_dir("out", "test", str(loose), "small_cnn", "full", [], NOW) == f"out/test/{NOW}_downloaded"
    run.chmod(0o500)  # a run this user cannot write (a shared, published one)
    try:
        readable_only = run_dir("out", "predict", str(ckpt), "small_cnn", "full", [], NOW)
    finally:
        run.chmod(0o700)
    import os

    if os.geteuid() != 0:  # root writes anywhere
        assert readable_only == f"out/predict/{NOW}_2026-12-01_small_cnn_full"


@pytest.mark.slow  # four commands as subprocesses (~30 s)
def test_what_a_user_finds_under_outputs_after_train_predict_a_refusal_and_models(tmp_path):
    out = tmp_path / "outputs"
    env = {"EXPERIMENTS_OUTPUT": str(out)}
    quick = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "trainer.enable_progress_bar=false"]
    trained = run_cli(*quick, env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (run,) = (out / "runs").iterdir()
    assert run.name.endswith("_small_cnn_full")
    predicted = run_cli("mode=predict", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", env=env)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    (folder,) = (run / "predict").iterdir()
    assert (folder / "predictions.csv").is_file() and not (folder / "tensorboard").exists()
    refused = run_cli("data.batch_size=0", env=env)
    assert refused.returncode == 1 and "data.batch_size=0 is invalid" in refused.stderr
    listed = run_cli("mode=models", "model=timm", "model.name=*lite0*", env=env)
    assert listed.returncode == 0 and "tf_efficientnet_lite0" in listed.stdout
    assert sorted(p.name for p in out.iterdir()) == ["runs"] and list((out / "runs").iterdir()) == [run]
    event_dirs = {p.parent for p in out.rglob("events.out.tfevents.*")}
    assert event_dirs == {run / "tensorboard"}  # TensorBoard sees the training run alone
