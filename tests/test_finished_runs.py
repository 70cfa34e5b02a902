"""A finished run is never rewritten (experiments.pipeline.rundirs): every way a later command can fail
against it (a bad value, weights that diverge, a signal, a rerun into its dir) leaves its files
byte for byte as they were, and a fixed path moves to a run only once it finished with finite
weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_cfg, run_cli
from omegaconf import OmegaConf

from experiments.pipeline.context import Job
from experiments.pipeline.job import run as run_job
from experiments.errors import TrainingError
from experiments.pipeline.results import read_results
from experiments.pipeline.rundirs import KeepFinishedRuns, publish

QUICK = ("+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
         "logger=none", "callbacks.test_figures=null")


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _job(run_dir: Path, *overrides: str) -> int:
    """The job as ``run.py`` runs it, in ``run_dir``, with the ``.hydra/config.yaml`` Hydra saves
    there (what a later resume, test or predict reads); its exit code (0 when it returned)."""
    cfg = compose_cfg(run_dir, *QUICK, *overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    try:
        run_job(cfg, Job(run_dir, False, tuple(overrides)))
    except SystemExit as exited:
        return int(exited.code)
    return 0


def test_every_failure_against_a_finished_run_leaves_its_files_byte_identical(tmp_path, capsys):
    run, link = tmp_path / "run", tmp_path / "published" / "digits"
    assert _job(run, "trainer.max_epochs=1", f"publish={link}") == 0
    assert link.resolve() == run.resolve()
    before, last = _files(run), run / "checkpoints" / "last.ckpt"

    # a rerun into its dir, any mode: refused before Hydra writes .hydra/ there
    rerun = run_cli(f"hydra.run.dir={run}", "data.batch_size=0")
    assert rerun.returncode == 1 and "holds a finished run" in rerun.stderr and "overwrite=true" in rerun.stderr
    # a resume with a bad value, a resume stopped by SIGTERM (each in its own dir), and a new run for
    # the same published path whose weights diverge
    assert _job(tmp_path / "bad", f"ckpt_path={last}", "optimizer.lr=-1") == 1
    assert _job(tmp_path / "nan", "trainer.max_epochs=2", "trainer.limit_train_batches=20", "optimizer.lr=1e10",
                "scheduler=none", f"publish={link}") == 1
    assert _job(tmp_path / "term", f"ckpt_path={last}", "trainer.max_epochs=3",
                "+callbacks.preempt._target_=preempt.SigtermAtEpoch", "+callbacks.preempt.epoch=2") == 143

    assert _files(run) == before
    assert link.resolve() == run.resolve()  # the failures did not move the published link
    assert not (tmp_path / "bad").exists()  # refused before its task: no record, no folder, the error printed
    assert "error: optimizer.lr=-1 differs from the run" in capsys.readouterr().err
    assert "train/loss became nan" in read_results(tmp_path / "nan")["error"]  # stopped at the epoch's end
    assert not list((tmp_path / "nan").glob("checkpoints/*.ckpt"))  # no checkpoint of NaN weights
    interrupted = read_results(tmp_path / "term")
    assert interrupted["status"] == "interrupted" and interrupted["epochs"] == 2

    # a failed resume of the interrupted run keeps the record that holds its resume command
    kept = (tmp_path / "term" / "results.json").read_bytes()
    assert _job(tmp_path / "bad2", f"ckpt_path={interrupted['checkpoint']}", "optimizer.lr=-1") == 1
    assert (tmp_path / "term" / "results.json").read_bytes() == kept
    assert not (tmp_path / "bad2").exists()
    assert read_results(tmp_path / "term")["resume"] == f"python run.py ckpt_path={interrupted['checkpoint']}"


def test_a_sweep_into_a_finished_sweep_is_refused_and_overwrite_lets_it(tmp_path, capsys):
    (tmp_path / "0_job").mkdir()
    (tmp_path / "0_job" / "results.json").write_text('{"status": "ok"}')
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "run": {"dir": str(tmp_path / "0_job")}},
                               "overwrite": False})
    for start in (KeepFinishedRuns().on_multirun_start, KeepFinishedRuns().on_run_start):
        with pytest.raises(SystemExit) as exited:
            start(config=config)
        assert exited.value.code == 1
    assert "0_job holds a finished run" in capsys.readouterr().err
    config.overwrite = True
    KeepFinishedRuns().on_multirun_start(config=config)  # the finished job is moved aside ...
    assert not (tmp_path / "0_job").exists() and len(list(tmp_path.glob("0_job.replaced-*"))) == 1
    KeepFinishedRuns().on_run_start(config=config)  # ... so nothing is left to refuse


@pytest.mark.slow
def test_overwrite_replaces_a_finished_run_only_once_the_new_one_finished(tmp_path, monkeypatch):
    """overwrite=true moves the old run aside before anything is written: the new run starts in an
    empty folder (never mixed with the old files), a failure leaves the old run whole, and the old
    run is deleted only when the new one finished ok."""
    import os

    run = tmp_path / "run"
    assert run_cli(f"hydra.run.dir={run}", "trainer.max_epochs=1", "logger=none").returncode == 0
    old = _files(run)
    monkeypatch.delenv("EXPERIMENTS_REPLACED_RUNS", raising=False)
    refused = run_cli(f"hydra.run.dir={run}", "overwrite=true", "model=small_resnet", "data.batch_size=0")
    assert refused.returncode == 1 and "was moved to" in refused.stderr and "is back in" in refused.stderr
    assert not list(tmp_path.glob("run.replaced-*")) and _files(run) == old  # refused before it wrote: put back whole
    failed = run_cli(f"hydra.run.dir={run}", "overwrite=true", "model=small_resnet", "trainer.max_epochs=1",
                     "optimizer.lr=1e10", "scheduler=none", "logger=none")  # fails while training
    assert failed.returncode == 1 and "was moved to" in failed.stderr
    kept = list(tmp_path.glob("run.replaced-*"))
    assert len(kept) == 1 and _files(kept[0]) == old  # the old run whole, where the message says
    assert read_results(run)["status"] == "failed" and not (run / "checkpoints" / "last.ckpt").exists()  # nothing mixed
    # a replacement that finishes: the old run is gone, nothing of it is left in the folder
    again = tmp_path / "again"
    assert run_cli(f"hydra.run.dir={again}", "trainer.max_epochs=1", "logger=none").returncode == 0
    old_last = (again / "checkpoints" / "last.ckpt").read_bytes()
    ok = run_cli(f"hydra.run.dir={again}", "overwrite=true", "model=small_resnet", "trainer.max_epochs=1",
                 "+trainer.limit_train_batches=2", "logger=none")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert read_results(again)["model"] == "small_resnet" and not list(tmp_path.glob("again.replaced-*"))
    assert (again / "checkpoints" / "last.ckpt").read_bytes() != old_last
    assert sorted(p.name for p in (again / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]


def _checkpoint(path: Path, value: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.full((3,), value)}, "epoch": 0, "global_step": 1}, path)
    return path


def test_publish_moves_the_link_only_to_finite_weights_and_keeps_a_folder_it_finds(tmp_path):
    target = tmp_path / "pretrained" / "digits_small_resnet"
    target.mkdir(parents=True)  # a run written there directly (before runs were published)
    (target / "results.json").write_text("{}")
    good, nan = tmp_path / "runs" / "good", tmp_path / "runs" / "nan"
    publish(good, _checkpoint(good / "checkpoints" / "last.ckpt", 1.0), target)
    assert target.is_symlink() and target.resolve() == good.resolve()
    assert [p.name for p in target.parent.glob("digits_small_resnet.before-*")]  # moved aside, not deleted
    with pytest.raises(TrainingError, match=r"non-finite weights .*the link is unchanged"):
        publish(nan, _checkpoint(nan / "checkpoints" / "last.ckpt", float("nan")), target)
    assert target.resolve() == good.resolve()
    assert not list(target.parent.glob(".*.tmp"))


@pytest.mark.parametrize(("where", "problem"), [
    ("file", "is a regular file, which the link would replace"),
    ("run", "is this run's own folder"),
    ("inside", "is inside this run's folder"),
    ("parent", "is a folder above this run's folder"),
])
def test_publish_refuses_a_target_it_would_destroy_before_the_run_trains(tmp_path, where, problem, capsys):
    run_dir = tmp_path / "runs" / "one"
    targets = {"file": tmp_path / "notes.txt", "run": run_dir, "inside": run_dir / "checkpoints" / "pub",
               "parent": tmp_path / "runs"}
    (tmp_path / "notes.txt").write_text("the user's own file")
    cfg = compose_cfg(run_dir, "trainer.max_epochs=1", "logger=none", f"publish={targets[where]}")
    with pytest.raises(SystemExit):
        run_job(cfg, Job(run_dir))
    error = capsys.readouterr().err
    assert f"error: publish={targets[where]} {problem}" in error and "nothing was moved" in error
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "results.json").exists()  # refused before training
    assert (tmp_path / "notes.txt").read_text() == "the user's own file" and not (tmp_path / "runs").is_symlink()
    assert not list(tmp_path.rglob("*.before-*"))


def test_pretrain_preset_publishes_instead_of_writing_a_fixed_dir(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=pretrain_digits")
    assert cfg.publish.endswith("pretrained/digits_small_resnet")
    assert "pretrained" not in str(OmegaConf.select(cfg, "hydra.run.dir", default=""))
