"""The OmegaConf resolvers the yaml files use, registered explicitly by the entry points (``run.py``
and the job body, for launcher worker processes; the compose helper for tests and benchmarks):

* ``${objective_mode:METRIC}``: ``max`` or ``min`` (:mod:`experiments.config.metrics`), for the
  checkpoint callback, early stopping and the Optuna sweeper's direction;
* ``${swept_name:${hydra.overrides.task},FALLBACK}``: a sweep job's dir name by its swept values
  (:mod:`experiments.config.sweep_names`);
* ``${run_dir:...}`` and ``${run_label:...}``: a command's folder and a run's name, named for what
  they hold (:mod:`experiments.config.run_names`).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from experiments.config.metrics import objective_mode


def _swept_name(job_overrides: Any, fallback: str) -> str:
    from experiments.config.sweep_names import swept_name  # Hydra's override parser: only when a sweep names a job

    return swept_name(list(job_overrides), str(fallback))


def _run_dir(output_root: Any, mode: Any, ckpt_path: Any, model: Any, finetune: Any, overrides: Any, now: Any) -> str:
    from experiments.config.run_names import run_dir

    return run_dir(str(output_root), str(mode), None if ckpt_path is None else str(ckpt_path),
                   model, finetune, list(overrides or []), str(now))


def _run_label(model: Any, finetune: Any, overrides: Any) -> str:
    from experiments.config.run_names import run_label

    return run_label(model, finetune, list(overrides or []))


RESOLVERS = {"objective_mode": objective_mode, "swept_name": _swept_name, "run_dir": _run_dir, "run_label": _run_label}


def register_resolvers() -> None:
    """Register every resolver of :data:`RESOLVERS` that is not registered yet (idempotent)."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
