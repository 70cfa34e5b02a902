"""The framework's Optuna sweeper: the sweep syntax as Optuna distributions, storages, the study's
budget across workers, a job's outcome as a trial state, pruning, and real sweeps as subprocesses."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, compose_cfg, run_cli, run_job
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from experiments.errors import ConfigError
from experiments.pipeline.results import write_results
from experiments.sweeps.search_space import parse_search_space
from experiments.sweeps.storage import open_storage
from experiments.sweeps.study import OVER_BUDGET, counted_trials, job_outcome, remaining, within_budget
from experiments.sweeps.trials import PRUNED_FILE, register_trials, publish_study, write_pruned

#: a sweep job as small as a real one gets: one short epoch, no figures, no logger
TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2", "logger=none", "callbacks.test_figures=null", "callbacks.progress_bar=null",
        "callbacks.model_summary=null", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
#: a pruner that prunes every run after its first epoch (no accuracy here reaches 0.999)
PRUNE_ALL = ["hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner", "~hydra.sweeper.pruner.n_startup_trials",
             "+hydra.sweeper.pruner.lower=0.999", "hydra.sweeper.pruner.n_warmup_steps=0"]
optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # the retry API, used below


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# -- the search space --------------------------------------------------------------------------------
def test_sweep_syntax_becomes_optuna_distributions():
    space = parse_search_space({
        "optimizer.lr": "tag(log, interval(1e-4, 3e-2))",
        "optimizer.weight_decay": "interval(0, 0.1)",
        "data.batch_size": "choice(32, 64, 128)",
        "model.net.width": "range(8, 33, 8)",
        "finetune.unfreeze_every": "tag(log, range(1, 9))",
        "+callbacks.extra.depth": "tag(int, interval(1, 4))",
        "augment": "choice(digits, null_aug)",
        "trainer.max_epochs": 3,
    }, [])
    d = space.distributions
    assert d["optimizer.lr"] == FloatDistribution(1e-4, 3e-2, log=True)
    assert d["optimizer.weight_decay"] == FloatDistribution(0.0, 0.1)
    assert d["data.batch_size"] == CategoricalDistribution([32, 64, 128])
    assert d["model.net.width"] == IntDistribution(8, 32, step=8)  # Hydra's range stops before 33
    assert d["finetune.unfreeze_every"] == IntDistribution(1, 8, log=True)
    assert d["callbacks.extra.depth"] == IntDistribution(1, 4)
    assert d["augment"] == CategoricalDistribution(["digits", "null_aug"])
    assert space.fixed == ["trainer.max_epochs=3"]
    # a sampled trial goes back to Hydra as the overrides it came from, its "+" kept, floats whole
    overrides = space.overrides({"optimizer.lr": 0.0012345678901234, "callbacks.extra.depth": 2, "data.batch_size": 64})
    assert overrides == ["trainer.max_epochs=3", "optimizer.lr=0.0012345678901234", "+callbacks.extra.depth=2",
                         "data.batch_size=64"]


def test_command_line_replaces_the_presets_entry_and_adds_fixed_values():
    space = parse_search_space({"optimizer.lr": "tag(log, interval(1e-4, 3e-2))", "data.batch_size": "choice(32, 64)"},
                               ["optimizer.lr=choice(-1, 0.003)", "data.batch_size=64", "seed=3"])
    assert space.distributions == {"optimizer.lr": CategoricalDistribution([-1, 0.003])}
    assert space.fixed == ["data.batch_size=64", "seed=3"]  # a fixed value is not searched
    assert parse_search_space(None, ["optimizer.lr=0.1,0.2"]).distributions["optimizer.lr"] == CategoricalDistribution([0.1, 0.2])
    floats = parse_search_space({"x": "range(0.5, 2.0, 0.5)"}, []).distributions["x"]
    assert floats == CategoricalDistribution([0.5, 1.0, 1.5])  # a float range: its values


@pytest.mark.parametrize("expression,message", [
    ("tag(log, interval(0, 1))", "lower bound > 0"),
    ("tag(linear, interval(1, 2))", "tag linear is not one the Optuna sweeper reads"),
    ("tag(log, choice(1, 10))", "tag(log, ...) applies to an interval or an integer range"),
    ("tag(log, range(1, 9, 2))", "needs step 1"),
    ("tag(int, interval(0.5, 3))", "integer bounds needed"),
])
def test_a_space_optuna_cannot_search_names_the_key(expression, message):
    with pytest.raises(ConfigError, match="optimizer.lr") as raised:
        parse_search_space({"optimizer.lr": expression}, [])
    assert message in str(raised.value)


# -- storages ---------------------------------------------------------------------------------------
def test_storage_urls_and_the_heartbeat_they_allow(tmp_path):
    assert open_storage(None) is None
    journal = open_storage(f"journal://{tmp_path}/sub/study.log")
    study = optuna.create_study(study_name="s", storage=journal)
    study.enqueue_trial({"x": 1})
    again = optuna.load_study(study_name="s", storage=open_storage(f"journal://{tmp_path}/sub/study.log"))
    assert len(again.get_trials()) == 1  # the file holds the study for the next worker
    sqlite = open_storage(f"sqlite:///{tmp_path}/optuna.db", heartbeat_interval=5, max_retries=2)
    assert isinstance(sqlite, optuna.storages.RDBStorage) and sqlite.heartbeat_interval == 5
    with pytest.raises(ConfigError, match="heartbeat_interval=5 needs a database storage"):
        open_storage(f"journal://{tmp_path}/study.log", heartbeat_interval=5)
    with pytest.raises(ConfigError, match="hydra.sweeper.storage=optuna.db is not a storage URL"):
        open_storage("optuna.db")
    with pytest.raises(ConfigError, match="heartbeat_interval=0"):
        open_storage(f"sqlite:///{tmp_path}/x.db", heartbeat_interval=0)


# -- the study's budget -----------------------------------------------------------------------------
def test_budget_counts_trials_that_ran_not_retried_copies_or_over_budget_asks():
    study = optuna.create_study()
    for _ in range(2):
        trial = study.ask({"x": FloatDistribution(0, 1)})
        study.tell(trial, 0.5)
    dead = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(dead, state=TrialState.FAIL)
    # what a heartbeat's retry leaves: the dead trial failed, a queued copy of it
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[dead.number])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.WAITING]
    assert remaining(study, 4) == 2  # the retried failure and its unstarted copy do not count
    copy = study.ask({"x": FloatDistribution(0, 1)})  # picks up the queued copy
    assert copy.number == 3 and within_budget(study, copy, 4)
    late = study.ask({"x": FloatDistribution(0, 1)})  # #4 arrives after 3 counted trials: still in
    assert within_budget(study, late, 4)
    extra = study.ask({"x": FloatDistribution(0, 1)})  # a racing worker's fifth: refused and failed
    assert not within_budget(study, extra, 4)
    assert study.trials[extra.number].state == TrialState.FAIL and study.trials[extra.number].user_attrs[OVER_BUDGET]
    assert [t.number for t in counted_trials(study.trials)] == [0, 1, 3, 4]


# -- a job's outcome as a trial state -----------------------------------------------------------------
def _job(run_dir: Path, value: object, status: JobStatus = JobStatus.COMPLETED) -> JobReturn:
    job = JobReturn(hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}}), status=status)
    job.return_value = value
    return job


def test_job_outcomes_become_complete_fail_and_pruned(tmp_path):
    ok, failed, nan, pruned, silent = (tmp_path / n for n in ("ok", "failed", "nan", "pruned", "silent"))
    write_results(ok, {"status": "ok", "metrics": {"val/acc": 0.8}})
    write_results(failed, {"status": "failed", "error": "ConfigError: optimizer.lr=-1 is invalid"})
    write_results(nan, {"status": "ok", "metrics": {}})
    write_results(pruned, {"status": "ok", "metrics": {"val/acc": 0.3}})
    write_pruned(pruned, trial=3, epoch=1, value=0.3, monitor="val/acc")
    silent.mkdir()

    assert (job_outcome(_job(ok, 0.8)).state, job_outcome(_job(ok, 0.8)).value) == (TrialState.COMPLETE, 0.8)
    outcome = job_outcome(_job(failed, -math.inf))
    assert outcome.state == TrialState.FAIL and "optimizer.lr=-1" in outcome.attrs["error"]
    outcome = job_outcome(_job(nan, math.nan))  # a NaN objective is a failed trial, not a crash
    assert outcome.state == TrialState.FAIL and "not a finite number" in outcome.attrs["error"]
    outcome = job_outcome(_job(pruned, 0.3))
    assert outcome.state == TrialState.PRUNED and outcome.attrs["pruned"] == "after epoch 1 (val/acc 0.3)"
    assert "no results.json" in job_outcome(_job(silent, None)).attrs["error"]
    outcome = job_outcome(_job(ok, RuntimeError("the launcher lost it"), JobStatus.FAILED))
    assert outcome.state == TrialState.FAIL and outcome.attrs["error"] == "RuntimeError: the launcher lost it"


def test_a_pruned_job_stops_early_tests_its_best_checkpoint_and_leaves_the_marker(tmp_path):
    """The pruning callback in a real run, finding its trial as an in-process sweep job does."""
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.999))
    trial = study.ask()
    publish_study(study.study_name, None)
    register_trials(study.study_name, [trial])
    try:
        overrides = ["hparams_search=optuna", f"optuna_trial={trial.number}", "trainer.max_epochs=3",
                     "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2", "logger=none",
                     "callbacks.test_figures=null"]
        record = run_job(compose_cfg(tmp_path, *overrides))
    finally:
        register_trials(study.study_name, [])
    marker = json.loads((tmp_path / PRUNED_FILE).read_text())
    assert marker["trial"] == trial.number and marker["epoch"] == 0 and marker["monitor"] == "val/acc"
    assert record["status"] == "ok" and record["epochs"] == 1  # stopped after the first of 3 epochs
    assert record["pruned"] == marker  # results.json says so too
    assert "test/acc" in record["metrics"] and Path(record["best_checkpoint"]).exists()  # kept and tested
    assert study.trials[trial.number].intermediate_values == {0: pytest.approx(marker["value"])}


# -- the sweep summary of an Optuna sweep ------------------------------------------------------------
def test_summary_keeps_searched_keys_rounds_numbers_and_shows_pruned_jobs(tmp_path):
    from experiments.reporting.sweep_summary import SUMMARY_MD, searched_keys, write_summary

    jobs = [("0.00046568046379195655", 0.91234567891234, None), ("0.0012345678901234", 0.8, 1), ("-1", None, None)]
    for number, (lr, acc, pruned_at) in enumerate(jobs):
        job = tmp_path / f"trial{number}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- data.batch_size=64\n- optuna_trial={number}\n")
        write_results(job, {"status": "ok", "metrics": {"val/acc": acc}, "wall_time_s": 12.3456} if acc else {"status": "failed"})
        if pruned_at is not None:
            write_pruned(job, trial=number, epoch=pruned_at, value=acc, monitor="val/acc")
    config = OmegaConf.create({"hydra": {"overrides": {"task": ["hparams_search=optuna", "optimizer.lr=choice(-1,0.001)"]},
                                         "sweeper": {"params": {"data.batch_size": "choice(32, 64)", "seed": 3}}}})
    swept = searched_keys(config)
    assert swept == ["optimizer.lr", "data.batch_size"]  # a fixed params value is not searched
    rows, best = write_summary(tmp_path, "val/acc", "max", swept)
    assert [r.status for r in rows] == ["ok", "pruned", "failed"] and best is rows[0]  # a pruned job is never best
    table = read_csv(tmp_path / "summary.csv")
    # searched, so a column, though every trial drew 64; metrics to 4 significant digits
    assert [(r["optimizer.lr"], r["data.batch_size"], r["val/acc"], r["wall_time_s"]) for r in table][:2] == [
        ("0.0004657", "64", "0.9123", "12.3"), ("0.001235", "64", "0.8000", "12.3")]
    markdown = (tmp_path / SUMMARY_MD).read_text()
    assert "3 jobs: 1 ok, 1 pruned, 1 failed." in markdown and "Every job: `data.batch_size" not in markdown
    assert "0.91234567" not in markdown and "| 0.9123 |" in markdown


# -- real sweeps ------------------------------------------------------------------------------------
def _worker(storage: str, sweep_dir: Path, seed: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "hparams_search=optuna", f"hydra.sweeper.storage={storage}",
         f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.sampler.seed={seed}", "hydra.sweeper.study_name=shared",
         *TINY, *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_workers_share_one_journal_study(tmp_path):
    """Two processes on one journal file: the study's 3 trials once each, numbered 0-2, split
    between the workers' own sweep dirs, each job dir named by its trial."""
    storage = f"journal://{tmp_path}/study.log"
    workers = [_worker(storage, tmp_path / f"worker{i}", i, "hydra.sweeper.n_trials=3") for i in range(2)]
    logs = [w.communicate(timeout=180)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    ran = counted_trials(study.trials)
    assert sorted(t.number for t in ran) == [0, 1, 2] and all(t.state == TrialState.COMPLETE for t in ran)
    assert all(t.user_attrs.get(OVER_BUDGET) for t in study.trials if t not in ran)  # a race's extra ask only
    dirs = {t.number: Path(t.user_attrs["run_dir"]) for t in ran}
    assert all(d.name.startswith(f"trial{n}_") and d.parent.name in ("worker0", "worker1") for n, d in dirs.items())
    assert {d.parent.name for d in dirs.values()} == {"worker0", "worker1"}  # both workers ran trials
    for worker in ("worker0", "worker1"):  # each report: the whole study as the storage held it at its end
        rows = read_csv(tmp_path / worker / "optuna_study.csv")
        assert sorted(int(r["trial"]) for r in rows if r["state"] in ("complete", "running")) == [0, 1, 2]
        assert (tmp_path / worker / "optuna_history.png").read_bytes()[:4] == b"\x89PNG"
    assert any((tmp_path / w / "optuna_importance.png").exists() for w in ("worker0", "worker1"))


@pytest.mark.slow  # two sweeps, one killed mid-trial
def test_a_trial_whose_worker_was_killed_is_run_again_by_the_next_worker(tmp_path):
    import os
    import signal
    import time

    storage = f"sqlite:///{tmp_path}/optuna.db"
    common = ["hydra.sweeper.n_trials=1", "hydra.sweeper.heartbeat_interval=1"]
    doomed = _worker(storage, tmp_path / "doomed", 0, *common, "trainer.max_epochs=200")
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "doomed" / "trial0_small_cnn_full" / "checkpoints").exists():
        time.sleep(0.5)  # until the trial trains: it is running in the storage, and beating
    doomed.send_signal(signal.SIGKILL)  # no goodbye: the trial stays "running" until its heartbeat is stale
    doomed.wait(timeout=30)
    time.sleep(3)  # past the grace period (2 x heartbeat_interval)
    survivor = _worker(storage, tmp_path / "survivor", 1, *common)
    log = survivor.communicate(timeout=180)[0]
    assert survivor.returncode == 0, log[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    first, retry = study.trials
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(retry) == [0]
    assert retry.params == first.params and Path(retry.user_attrs["run_dir"]).name == "trial1_small_cnn_full"
    assert os.path.isdir(tmp_path / "survivor" / "trial1_small_cnn_full")


@pytest.mark.slow  # a sweep of three trials in one process
def test_failed_and_pruned_trials_are_told_so_and_the_summary_says_it(tmp_path):
    result = run_cli("hparams_search=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=1",
                     "optimizer.lr=choice(-1, 0.003)", "trainer.max_epochs=3", *PRUNE_ALL, *TINY,
                     f"hydra.sweep.dir={tmp_path}", "hydra.sweeper.storage=sqlite:///" + str(tmp_path / "optuna.db"))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # a failed job fails the sweep
    trials = read_csv(tmp_path / "optuna_study.csv")
    states = {(r["optimizer.lr"], r["state"]) for r in trials}
    assert states == {("-1", "fail"), ("0.003", "pruned")}, trials  # seed 1 draws both values
    assert all("optimizer.lr=-1 is invalid" in r["error"] for r in trials if r["state"] == "fail")
    summary = {r["optuna_trial"]: r for r in read_csv(tmp_path / "summary.csv")}
    pruned = next(r for r in trials if r["state"] == "pruned")
    assert summary[pruned["trial"]]["status"] == "pruned" and summary[pruned["trial"]]["epochs"] == "1"
    assert (Path(pruned["run_dir"]) / "checkpoints" / "last.ckpt").exists()  # a pruned run keeps its checkpoints
    study = json.loads((tmp_path / "optuna_study.json").read_text())
    counts = {state: sum(r["state"] == state for r in trials) for state in ("fail", "pruned")}
    assert study["best_trial"] is None and study["states"] == counts  # nothing completed: no best


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own for one test (trust auth, a free port), stopped after it."""
    if not all(shutil.which(b) for b in ("initdb", "pg_ctl", "postgres")):
        pytest.skip("needs a local PostgreSQL server binary (initdb, pg_ctl, postgres)")
    pytest.importorskip("psycopg", reason="needs the psycopg driver (the `sweeps` extra)")
    import os
    import socket
    import tempfile

    # a folder the server's own user can enter: the server refuses to run as root
    home = Path(tempfile.mkdtemp(prefix="pg-"))
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        shutil.chown(home, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([*run_as, "initdb", "-D", str(home / "data"), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    subprocess.run([*run_as, "pg_ctl", "-D", str(home / "data"), "-l", str(home / "log"), "-w",
                    "-o", f"-p {port} -k {home} -h 127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, "pg_ctl", "-D", str(home / "data"), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow  # a PostgreSQL server and two sweeps
def test_a_study_in_postgresql_is_resumed_by_a_second_sweep(tmp_path, postgres_url):
    for n_trials in (1, 2):
        result = run_cli("hparams_search=optuna", f"hydra.sweeper.storage={postgres_url}",
                         f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.heartbeat_interval=2", *TINY,
                         f"hydra.sweep.dir={tmp_path}/sweep{n_trials}")
        assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="small_cnn_full", storage=postgres_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2  # the second sweep ran one more
    assert Path(study.trials[1].user_attrs["run_dir"]).parent.name == "sweep2"


@pytest.mark.slow  # a PostgreSQL server, two workers, 12 trials, one worker killed
def test_two_workers_on_postgresql_finish_12_trials_when_one_is_killed_mid_trial(tmp_path, postgres_url):
    """The issue's goal: two local workers on one PostgreSQL study of 12 trials; one killed by
    SIGKILL mid-trial; its trial is failed by the heartbeat check and run again by the survivor,
    and the study ends with 12 completed-or-pruned trials, none repeated."""
    import signal
    import time

    common = ["hydra.sweeper.n_trials=12", "hydra.sweeper.heartbeat_interval=1", "trainer.max_epochs=3"]
    doomed = _worker(postgres_url, tmp_path / "doomed", 0, *common)
    survivor = _worker(postgres_url, tmp_path / "survivor", 1, *common)
    deadline = time.time() + 180
    while time.time() < deadline:  # a trial of the doomed worker that trains and has no record yet
        running = [d for d in (tmp_path / "doomed").glob("trial*") if (d / "checkpoints").exists()
                   and not (d / "results.json").exists()]
        if running and len(list((tmp_path / "doomed").glob("trial*"))) >= 2:
            break
        time.sleep(0.1)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    log = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, log[-3000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    states = [t.state for t in study.trials]
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 12 and len({t.number for t in study.trials}) == len(study.trials), states
    killed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(killed) == 1 and not [t for t in study.trials if t.state == TrialState.RUNNING], states
    retried = [t for t in finished if t.system_attrs.get("failed_trial") == killed[0].number]
    assert retried and Path(retried[0].user_attrs["run_dir"]).parent.name == "survivor"  # the survivor ran it again
