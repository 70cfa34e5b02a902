"""Experiment management: sweep summary, Optuna, launchers, TensorBoard contents, test/predict from
a checkpoint, resume, DDP and the environment check."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONF, compose_cfg, run_cli, run_job
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from experiments.errors import ConfigError
from experiments.pipeline.results import read_results

QUIET = ["callbacks.progress_bar=null", "callbacks.model_summary=null", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > 100 and width > 100


# -- sweeps ----------------------------------------------------------------------------------------
@pytest.mark.slow  # a sweep: several processes
def test_multirun_summary_lists_every_job_marks_best_and_failures(tmp_path):
    result = run_cli("-m", "trainer.max_epochs=1", "trainer.limit_train_batches=5", "optimizer.lr=1e-3,-1",
                     f"hydra.sweep.dir={tmp_path}", *QUIET)
    # the summary is written, then the sweep exits 1 because a job failed
    assert result.returncode == 1, result.stderr[-3000:]
    rows = read_csv(tmp_path / "summary.csv")
    assert [(r["job"], r["optimizer.lr"], r["status"]) for r in rows] == [("0", "0.001", "ok"), ("1", "-1", "failed")]
    ok, failed = rows
    assert ok["best"] == "yes" and failed["best"] == ""
    assert float(ok["val/acc"]) == pytest.approx(read_results(ok["run_dir"])["metrics"]["val/acc"], abs=1e-4)
    assert ok["epochs"] == "1" and float(ok["wall_time_s"]) > 0
    assert "optimizer.lr=-1" in failed["error"] and failed["val/acc"] == ""
    markdown = (tmp_path / "summary.md").read_text()
    assert "**0 (best)**" in markdown and "## Failed jobs" in markdown and "optimizer.lr=-1 is invalid" in markdown
    assert "`trainer.max_epochs=1`" in markdown  # shared overrides shown once
    assert_png(tmp_path / "summary.png")
    assert "1 of 2 jobs failed" in result.stdout + result.stderr


@pytest.mark.slow  # a sweep: several processes
def test_optuna_study_survives_a_failed_trial_and_reports_the_best(tmp_path):
    result = run_cli(
        "hparams_search=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=1",
        "optimizer.lr=choice(-1, 0.003)", "data.batch_size=choice(64)",
        "trainer.max_epochs=1", "trainer.limit_train_batches=5", f"hydra.sweep.dir={tmp_path}", *QUIET,
    )
    rows = read_csv(tmp_path / "summary.csv")
    assert len(rows) == 3, result.stderr[-3000:]
    statuses = {r["optimizer.lr"]: r["status"] for r in rows}
    assert statuses == {"-1": "failed", "0.003": "ok"}, rows  # the seed draws both values
    assert result.returncode == 1  # a failed trial fails the sweep, after the study has finished
    study = json.loads((tmp_path / "optuna_study.json").read_text())
    best = max((r for r in rows if r["status"] == "ok"), key=lambda r: float(r["val/acc"]))
    assert study["best_trial"]["params"]["optimizer.lr"] == 0.003
    assert study["best_trial"]["value"] == pytest.approx(float(best["val/acc"]), abs=1e-4)
    assert best["best"] == "yes"
    assert "best trial" in result.stdout + result.stderr


@pytest.mark.slow  # a sweep: several processes
def test_lightnings_own_ddp_in_a_local_sweep_is_refused_before_training(tmp_path):
    result = run_cli("-m", "trainer=ddp", "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                     "seed=1,2", f"hydra.sweep.dir={tmp_path}", *QUIET, timeout=120)
    assert result.returncode == 1
    rows = read_csv(tmp_path / "summary.csv")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("re-running the command line" in r["error"] and "use trainer=ddp" in r["error"] for r in rows)


@pytest.mark.slow  # a sweep of two DDP jobs, two processes each
def test_ddp_in_a_local_sweep_runs_each_jobs_processes_alone(tmp_path):
    result = run_cli("-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "seed=1,2",
                     "trainer.max_epochs=1", "trainer.limit_train_batches=4", "logger=none",
                     f"hydra.sweep.dir={tmp_path}", *QUIET, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["status"] for r in read_csv(tmp_path / "summary.csv")] == ["ok", "ok"]
    # one record per job, no sweep started again by an extra process
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("results.json")) == [
        "0_seed=1/results.json", "1_seed=2/results.json"]
    for job, seed in (("0_seed=1", 1), ("1_seed=2", 2)):  # rank 1 of each job ran that job, in its dir
        rank1 = (tmp_path / job / "train_ddp_process_1.log").read_text()
        assert f"[rank: 1] Seed set to {seed}" in rank1 and "done:" not in rank1


@pytest.mark.slow  # a sweep of subprocesses (~14 s)
def test_sweep_jobs_are_named_by_the_swept_values(tmp_path):
    """`-m seed=0,1 trainer.max_epochs=2`: the job dirs say the seed; the constant override stays in
    .hydra/ and the summary's header (mode=models: jobs that only print, so the sweep is quick)."""
    result = run_cli("-m", "mode=models", "seed=0,1", "trainer.max_epochs=2", f"hydra.sweep.dir={tmp_path}", timeout=120)
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert jobs == ["0_seed=0", "1_seed=1"], result.stderr[-2000:]
    assert "trainer.max_epochs=2" in yaml.safe_load((tmp_path / "0_seed=0" / ".hydra" / "overrides.yaml").read_text())
    assert "`trainer.max_epochs=2`" in (tmp_path / "summary.md").read_text()


def test_swept_names_keep_the_swept_keys_and_fall_back(monkeypatch):
    from experiments.config.sweep_names import SWEPT_KEYS_ENV, swept_keys, swept_name

    keys = swept_keys(["seed=0,1", "trainer.max_epochs=2", "model=small_cnn,resnet18", "+x=range(2)"], ["optimizer.lr"])
    assert keys == ["seed", "model", "x", "optimizer.lr"]
    monkeypatch.setenv(SWEPT_KEYS_ENV, ",".join(keys))
    assert swept_name(["model=resnet18", "trainer.max_epochs=2", "seed=1"], "fallback") == "model=resnet18,seed=1"
    assert len(swept_name([f"seed={'9' * 300}"], "fallback")) == 100  # bounded as before
    monkeypatch.setenv(SWEPT_KEYS_ENV, "")
    assert swept_name(["trainer.max_epochs=2"], "small_cnn_full") == "small_cnn_full"


def _hydra_cfg(*overrides: str):
    from experiments.config.resolvers import register_resolvers

    register_resolvers()  # the sweeper's direction is ${objective_mode:...}, resolved on access
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("run", overrides=list(overrides), return_hydra_config=True)


def test_launchers_and_search_compose():
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    slurm = _hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu").hydra.launcher
    assert type(instantiate(slurm)).__name__ == SlurmLauncher.__name__  # the plugin loads under two module names
    assert slurm.partition == "gpu" and slurm.gpus_per_node == 1 and slurm.timeout_min == 120
    joblib = _hydra_cfg("hydra/launcher=joblib", "hydra.launcher.n_jobs=2").hydra.launcher
    assert type(instantiate(joblib)).__name__ == JoblibLauncher.__name__ and joblib.n_jobs == 2
    assert _hydra_cfg("hparams_search=optuna").hydra.sweeper.direction == "maximize"
    assert _hydra_cfg("hparams_search=optuna", "objective=val/loss").hydra.sweeper.direction == "minimize"
    from experiments.pipeline.launch import SWEEP_SAFE_DDP

    ddp = _hydra_cfg("trainer=ddp").trainer  # the strategy a sweep's DDP jobs run (the slow DDP sweep test)
    assert ddp.strategy._target_ == SWEEP_SAFE_DDP and ddp.max_epochs == 10
    assert _hydra_cfg().hydra.callbacks.sweep_summary.fail_on_failed_jobs is True


# -- TensorBoard ----------------------------------------------------------------------------------
def test_tensorboard_has_final_hparams_figures_lr_groups_and_config(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    overrides = ["trainer.max_epochs=1", "trainer.limit_train_batches=5", "optimizer.lr=0.002", "module.label_smoothing=0.1"]
    record = run_job(compose_cfg(tmp_path, *overrides), overrides)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"test/confusion_matrix", "test/samples"} <= set(tags["images"])
    assert any(t.startswith("lr-") and t.endswith("/head") for t in tags["scalars"]), tags["scalars"]
    assert "config/text_summary" in tags["tensors"]

    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"val/best/acc", "test/acc", "test/loss"} <= metric_tags
    assert "epoch" not in tags["scalars"] and not [t for t in tags["scalars"] if t.startswith("final/")]  # no card of noise
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["optimizer.lr"].number_value == pytest.approx(0.002)
    assert session.hparams["model.name"].string_value == "small_cnn"
    # what a person compares, plus the keys this command set; not every dotted config key
    assert session.hparams["module.label_smoothing"].number_value == pytest.approx(0.1)
    assert "data._target_" not in session.hparams and "ckpt_path" not in session.hparams
    assert len(session.hparams) <= 12
    for key, tag in (("val/acc", "val/best/acc"), ("test/acc", "test/acc"), ("test/loss", "test/loss")):  # the real final values
        assert events.Scalars(tag)[-1].value == pytest.approx(record["metrics"][key])
    assert session.hparams["trainer.max_epochs"].string_value == "1"  # an integer shown as one, not 1.000


# -- checkpoints: test, predict, resume ---------------------------------------------------------------
@pytest.mark.slow  # a training run and a test as subprocesses (~25 s)
def test_test_and_predict_from_a_checkpoint_use_its_run_config(tmp_path):
    train_dir = tmp_path / "train"
    # a non-default width: only the run's saved config rebuilds a model these weights fit
    result = run_cli("trainer.max_epochs=1", "model.net.width=8", f"hydra.run.dir={train_dir}", *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = read_results(train_dir)

    test_dir = tmp_path / "test"
    result = run_cli("mode=test", f"ckpt_path={trained['best_checkpoint']}", f"hydra.run.dir={test_dir}", *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    tested = read_results(test_dir)
    assert tested["mode"] == "test" and tested["status"] == "ok"
    assert tested["metrics"]["test/acc"] == pytest.approx(trained["metrics"]["test/acc"], abs=1e-6)
    assert tested["metrics"]["val/acc"] == pytest.approx(trained["metrics"]["val/acc"], abs=1e-6)
    assert yaml.safe_load((test_dir / ".hydra" / "config.yaml").read_text())["model"]["net"]["width"] == 8

    predict_dir = tmp_path / "predict"
    cfg = compose_cfg(predict_dir, "mode=predict", f"ckpt_path={trained['best_checkpoint']}", "model.net.width=8",
                      "predict.top_k=10")
    record = run_job(cfg)
    rows = read_csv(predict_dir / "predictions.csv")
    assert record["num_predictions"] == len(rows) == 270  # digits: 15% of 1797 in the test split
    assert [r["input"] for r in rows] == [f"test[{i}]" for i in range(270)]  # the layout of new files' predictions
    probs = torch.tensor([[float(r[f"top{k}_probability"]) for k in range(1, 11)] for r in rows])
    assert torch.allclose(probs.sum(dim=1), torch.ones(270), atol=1e-4)
    assert all(r["predicted"] == r["top1"] and float(r["probability"]) == float(r["top1_probability"]) for r in rows)
    assert {r["label"] for r in rows} == {str(c) for c in range(10)}  # class names, as predicted is
    accuracy = sum(r["predicted"] == r["label"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(trained["metrics"]["test/acc"], abs=1e-6)


def test_checkpoint_config_keeps_the_run_and_applies_overrides(tmp_path):
    from omegaconf import OmegaConf

    from experiments.pipeline.from_checkpoint import config_for_checkpoint

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"")
    OmegaConf.save(compose_cfg(run, "model.net.width=8", "optimizer=sgd"), run / ".hydra" / "config.yaml")
    overrides = ["mode=test", f"ckpt_path={ckpt}", "data.batch_size=16", "~callbacks.test_figures"]
    cfg = compose_cfg(tmp_path / "new", *overrides)
    effective, saved = config_for_checkpoint(cfg, overrides)
    assert saved == run / ".hydra" / "config.yaml"
    assert effective.model.net.width == 8 and "SGD" in effective.optimizer._target_
    assert effective.data.batch_size == 16 and effective.mode == "test"
    assert "test_figures" not in effective.callbacks
    assert effective.paths.run_dir == str(tmp_path / "new")
    resumed, _ = config_for_checkpoint(compose_cfg(tmp_path / "new", f"ckpt_path={ckpt}"), [f"ckpt_path={ckpt}"])
    assert resumed.paths.run_dir == str(run)  # resuming continues in the checkpoint's run dir
    with pytest.raises(ConfigError, match="mode=test needs ckpt_path"):
        config_for_checkpoint(compose_cfg(tmp_path, "mode=test"), ["mode=test"])
    with pytest.raises(ConfigError, match="no such file"):
        config_for_checkpoint(compose_cfg(tmp_path, "mode=test", "ckpt_path=nope.ckpt"), [])


@pytest.mark.slow  # three fits (~15 s); test_checkpoints checks a resume's weights in the default tier
def test_resume_after_epoch_one_equals_the_uninterrupted_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    common = ["trainer.max_epochs=3", "trainer.deterministic=true", "trainer.limit_train_batches=6"]
    full = tmp_path / "full"
    run_job(compose_cfg(full, *common))

    part = tmp_path / "part"
    first = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)
    steps_per_epoch = first["global_step"] // 3
    run_job(compose_cfg(part, *common, f"+trainer.max_steps={steps_per_epoch}"))  # stops after epoch 1
    stopped = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)
    assert stopped["epoch"] == 0 and stopped["global_step"] == steps_per_epoch
    record = run_job(compose_cfg(part, *common, f"ckpt_path={part / 'checkpoints' / 'last.ckpt'}"))
    assert record["epochs"] == 3

    a = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 3 * steps_per_epoch
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    assert a["lr_schedulers"] == b["lr_schedulers"]
    steps = {}
    for run in (full, part):  # the resumed run appended to the same TensorBoard run
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        steps[run] = [e.step for e in events.Scalars("train/loss")]
    assert steps[part] == steps[full] == [steps_per_epoch * k - 1 for k in (1, 2, 3)]


# -- devices --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes_writes_one_record_and_one_tensorboard_run(tmp_path):
    result = run_cli("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=4", f"hydra.run.dir={tmp_path}", *QUIET, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("results.json")] == [Path("results.json")]
    record = read_results(tmp_path)
    assert record["status"] == "ok" and 0 <= record["metrics"]["test/acc"] <= 1
    assert {p.parent for p in tmp_path.rglob("events.out.tfevents.*")} == {tmp_path / "tensorboard"}
    assert (tmp_path / "train_ddp_process_1.log").exists()  # rank 1 ran, in the same run dir
    assert "done:" not in (tmp_path / "train_ddp_process_1.log").read_text()


@pytest.mark.slow  # a subprocess that imports every library (~10 s)
def test_env_mode_reports_versions_and_a_verdict(tmp_path):
    result = run_cli("mode=env", f"hydra.run.dir={tmp_path}", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"torch           {torch.__version__}" in result.stdout
    assert "CUDA available  " in result.stdout and "CPU threads" in result.stdout
    assert "verdict: " in result.stdout
    assert not (tmp_path / "results.json").exists()


def test_arch_support_follows_cuda_compatibility():
    from experiments.env import arch_supports

    assert arch_supports(["sm_80", "sm_90"], (8, 6))  # same major, higher minor: binary compatible
    assert not arch_supports(["sm_80", "sm_90"], (12, 0))  # a newer GPU the build has no kernels for
    assert arch_supports(["sm_80", "compute_90"], (12, 0))  # PTX compiles for newer GPUs
    assert not arch_supports(["sm_50"], (6, 1)) and arch_supports(["sm_90a"], (9, 0))


def test_summary_aggregates_jobs_that_differ_only_in_seed(tmp_path):
    from experiments.reporting.sweep_summary import SEEDS_CSV, SUMMARY_MD, write_summary
    from experiments.pipeline.results import write_results

    accs = {("0.1", "0"): 0.5, ("0.1", "1"): 0.7, ("0.1", "2"): 0.6, ("0.01", "0"): 0.9, ("0.01", "1"): None}
    for num, ((lr, seed), acc) in enumerate(accs.items()):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- seed={seed}\n")
        record = {"status": "ok", "metrics": {"val/acc": acc}, "wall_time_s": 2.0} if acc is not None else {"status": "failed"}
        write_results(job, record)
    write_summary(tmp_path, "val/acc", "max")
    rows = read_csv(tmp_path / SEEDS_CSV)
    assert [(r["optimizer.lr"], r["n"]) for r in rows] == [("0.1", "3"), ("0.01", "2")]
    assert float(rows[0]["val/acc mean"]) == pytest.approx(0.6)
    assert float(rows[0]["val/acc std"]) == pytest.approx(0.1)  # sample std of 0.5, 0.6, 0.7
    assert float(rows[1]["val/acc mean"]) == pytest.approx(0.9) and float(rows[1]["val/acc std"]) == 0
    markdown = (tmp_path / SUMMARY_MD).read_text()
    assert "| 0.1 | 3 | 0.6000 +- 0.1000 |" in markdown and "0.9000 +- 0.0000 (n=1)" in markdown
