"""Bad input and faults: a clear error naming key, value and fix, a non-zero exit, a record."""

from __future__ import annotations

import logging

import pytest
from conftest import compose_cfg, run_job
from omegaconf import OmegaConf

from experiments.pipeline.job import own_error, report_error
from experiments.pipeline.launch import check_launch
from experiments.config.rules import validate
from experiments.config.sweep_names import bounded_name
from experiments.errors import ConfigError, DataError
from experiments.pipeline.results import read_results


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=true", r"data\.batch_size=True is invalid: expected an integer >= 1"),
        ("data.image_size=-5", r"data\.image_size=-5 is invalid"),
        ("data.image_size=abc", r"data\.image_size='abc' is invalid: expected null, model, an integer"),
        ("trainer.precision=fp16", r"trainer\.precision='fp16' is invalid: expected one of 32-true"),
        ("scheduler=step scheduler.step_size=0", r"scheduler\.step_size=0 is invalid"),
        ("data.val_fraction=0.5 data.test_fraction=0.5", r"leave no training data"),
        ("finetune=lp_ft finetune.probe_epochs=abc", r"finetune\.probe_epochs='abc' is invalid: expected null \(a quarter of the run\) or an integer"),
        ("finetune=gradual finetune.unfreeze_every=50 trainer.max_epochs=2", r"no block ever thaws"),
    ],
)
def test_bad_values_are_refused_before_anything_loads(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(tmp_path, *override.split()))


def test_text_labels_may_be_named_in_data_classes(tmp_path):
    validate(compose_cfg(tmp_path, "data=text", "data.path=reviews.csv", "data.classes=[neg,pos]"))
    with pytest.raises(ConfigError, match=r"data\.classes=\['neg', 'neg'\] is invalid"):
        validate(compose_cfg(tmp_path, "data=text", "data.path=reviews.csv", "data.classes=[neg,neg]"))


def test_ddp_spawn_is_refused_with_the_alternative(tmp_path):
    with pytest.raises(ConfigError, match=r"ddp_spawn is not supported.*trainer=ddp"):
        check_launch(compose_cfg(tmp_path, "trainer.strategy=ddp_spawn"), multirun=False)


def test_gpu_trainer_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match=r"trainer\.accelerator=gpu .* no CUDA GPU.*trainer=cpu"):
        check_launch(compose_cfg(tmp_path, "trainer=gpu", "trainer.accelerator=gpu"), multirun=False)
    check_launch(compose_cfg(tmp_path, "trainer=gpu", "trainer.accelerator=gpu", "mode=env"), multirun=False)


def test_diverging_loss_fails_the_run_with_the_fix(tmp_path):
    cfg = compose_cfg(tmp_path, "optimizer.lr=1e10", "trainer.max_epochs=2", "logger=none", "scheduler=none")
    with pytest.raises(SystemExit):  # as the command exits 1
        run_job(cfg)
    record = read_results(tmp_path)
    assert record["status"] == "failed" and record["error"].startswith("TrainingError")
    assert "train/loss became nan" in record["error"] and "lower optimizer.lr (now 1e+10)" in record["error"]
    # no checkpoint of non-finite weights was written (the first epoch diverged: none at all)
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))


def test_own_error_inside_hydra_instantiation_is_reported_as_itself(tmp_path, caplog):
    cfg = compose_cfg(tmp_path, "data=image_folder", f"data.root={tmp_path / 'nope'}", "logger=none")
    with pytest.raises(SystemExit):
        run_job(cfg)
    error = read_results(tmp_path)["error"]
    assert error.startswith("DataError") and "nope" in error and "InstantiationException" not in error
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = DataError("the real one")
    assert str(own_error(wrapped)) == "the real one"


@pytest.mark.parametrize(("value", "traceback"), [("0", False), ("", False), ("1", True)])
def test_hydra_full_error_means_only_1(monkeypatch, caplog, value, traceback):
    monkeypatch.setenv("HYDRA_FULL_ERROR", value)
    try:
        raise ConfigError("data.batch_size=0 is invalid")
    except ConfigError as err:
        with caplog.at_level(logging.ERROR, logger="experiments"):
            report_error(err)
    assert ("Traceback" in caplog.text) is traceback


def test_sweep_job_dir_names_stay_bounded():
    overrides = ",".join(f"optimizer.param_{i}={i * 1000.123}" for i in range(12))
    name = bounded_name(overrides)
    assert len(overrides) > 255 and len(name) == 100
    assert bounded_name(overrides) == name and bounded_name(overrides + "x") != name
    assert bounded_name("optimizer.lr=0.1") == "optimizer.lr=0.1"


def test_a_failed_resume_or_rerun_keeps_the_finished_runs_record(tmp_path):
    from experiments.pipeline.context import Job
    from experiments.pipeline.job import run as run_wrapped

    run = tmp_path / "run"
    finished = run_job(compose_cfg(run, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "logger=none"))
    (run / ".hydra").mkdir()
    OmegaConf.save(compose_cfg(run, "trainer.max_epochs=1", "logger=none"), run / ".hydra" / "config.yaml")
    before = (run / "results.json").read_bytes()
    # a resume from its checkpoint with a bad value: the resume continues in the finished run's dir
    resume_dir = tmp_path / "resume"
    cfg = compose_cfg(resume_dir, f"ckpt_path={finished['best_checkpoint']}", "optimizer.lr=-1")
    with pytest.raises(SystemExit):
        run_wrapped(cfg, Job(resume_dir, False, ("optimizer.lr=-1",)))
    # a rerun into the finished run's own dir with a bad value
    with pytest.raises(SystemExit):
        run_wrapped(compose_cfg(run, "data.batch_size=0"), Job(run, False, ("data.batch_size=0",)))
    assert (run / "results.json").read_bytes() == before
    assert not resume_dir.exists() and not (run / "failed").exists()  # refused before their tasks: no record anywhere


def test_adapt_with_a_classification_checkpoint_is_refused_with_model_weights_as_the_fix(tmp_path):
    from experiments.pipeline.from_checkpoint import config_for_checkpoint

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    OmegaConf.save(compose_cfg(run), run / ".hydra" / "config.yaml")  # a classification run's config
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"")
    overrides = ["adapt=dann", "data=da_pair", f"ckpt_path={ckpt}"]
    for mode in ("train", "test"):
        cfg = compose_cfg(tmp_path / "new", *overrides, f"mode={mode}")
        with pytest.raises(ConfigError, match=rf"adapt=dann with ckpt_path=.*classification run.*model\.weights={ckpt}"):
            config_for_checkpoint(cfg, [*overrides, f"mode={mode}"])


@pytest.mark.slow  # imports every family (timm, transformers): ~10 s
def test_every_shipped_option_takes_each_of_its_keys(tmp_path):
    """The added-key check (build.check_all_arguments) refuses no option the repository ships."""
    from experiments.pipeline.build import check_all_arguments
    from experiments.config.compose import CONF

    for group in ("data", "model", "finetune", "adapt", "augment", "optimizer", "scheduler"):
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
            check_all_arguments(compose_cfg(tmp_path, f"{group}={option}", *(["data=da_pair"] if group == "adapt" else [])))
