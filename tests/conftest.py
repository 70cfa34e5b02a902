"""Shared fixtures: real configs composed with Hydra's compose API, runs written into tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import experiments.config  # noqa: F401  (registers the config resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

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
    """The config `python run.py <overrides>` would run, writing into ``run_dir``."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("run", overrides=[f"paths.run_dir={run_dir}", *(FAST if fast else []), *overrides])


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
