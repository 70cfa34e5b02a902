"""Shared fixtures: real configs composed with Hydra's compose API, runs written into tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.config.compose import CONF, compose_config

ROOT = Path(__file__).resolve().parents[1]

# Small and quiet: every in-process run uses these unless a test overrides them.
FAST = [
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def compose_cfg(run_dir: Path, *overrides: str, fast: bool = True):
    """The config `python run.py <overrides>` would run, writing into ``run_dir`` (small and quiet
    unless ``fast=False``)."""
    return compose_config(run_dir, *(FAST if fast else []), *overrides)


def run_job(cfg, overrides: tuple[str, ...] = ()) -> dict:
    """The job exactly as `run.py` runs it (validate, the mode's task, the record), in-process;
    returns its results.json. A failing job raises SystemExit, as the command exits 1."""
    from experiments.pipeline.context import Job
    from experiments.pipeline.job import run
    from experiments.pipeline.results import read_results

    run(cfg, Job(Path(cfg.paths.run_dir), False, tuple(overrides)))
    return read_results(cfg.paths.run_dir)


def resumed_and_uninterrupted(tmp_path: Path, common: list[str], steps_per_epoch: int) -> tuple[dict, dict]:
    """The ``last.ckpt`` of a run of ``common`` and of the same run stopped after its first epoch
    and resumed from its ``last.ckpt``, both read (frozen tensors restored), for comparison."""
    from experiments.checkpoints import read_checkpoint

    run_job(compose_cfg(tmp_path / "full", *common))
    part = tmp_path / "part"
    run_job(compose_cfg(part, *common, f"+trainer.max_steps={steps_per_epoch}"))  # stops after epoch 1
    run_job(compose_cfg(part, *common, f"ckpt_path={part / 'checkpoints' / 'last.ckpt'}"))
    full, resumed = (read_checkpoint(run / "checkpoints" / "last.ckpt") for run in (tmp_path / "full", part))
    return full, resumed


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """Every test runs as CI does: no hub or index is reached (the framework's and the hub
    clients' offline switches) and the weight caches are the session's own, empty ones, so a test
    never passes on what this machine happened to download. A test that needs another setting
    sets it after this."""
    cache = tmp_path_factory.getbasetemp() / "caches"
    for key in ("EXPERIMENTS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(key, "1")
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    monkeypatch.setenv("HF_HOME", str(cache / "hf"))


@pytest.fixture(scope="session")
def default_cfg(tmp_path_factory):
    """`python run.py`'s composed config, composed once per session (read it, do not change it)."""
    return compose_cfg(tmp_path_factory.mktemp("default"))


def pytest_configure(config):
    """Each worker of a parallel run (pytest-xdist, ``-n``) computes on one thread: two workers on a
    2-core machine with torch's two threads each would fight over the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # and the commands a test starts (run_cli) inherit it


def pytest_collection_modifyitems(config, items):
    """``requires_gpu`` tests run where CUDA is, and are skipped (with the reason) elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (the README's GPU rows)")
    for item in items:
        if "requires_gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_cfg(tmp_path):
    return lambda *overrides, **kw: compose_cfg(tmp_path, *overrides, **kw)


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python run.py ARGS` as a real subprocess (pays the ~5-9 s of heavy imports)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )
