"""The OmegaConf resolvers the yaml files use, registered explicitly by the entry points (``run.py``
and the job body, for launcher worker processes; the compose helper for tests and benchmarks):

* ``${objective_mode:METRIC}``: ``max`` or ``min`` (:mod:`experiments.config.metrics`), for the
  checkpoint callback, early stopping and the Optuna sweeper's direction;
* ``${swept_name:${hydra.overrides.task},FALLBACK}``: a sweep job's dir name by its swept values
  (:mod:`experiments.config.sweep_names`).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from experiments.config.metrics import objective_mode


def _swept_name(job_overrides: Any, fallback: str) -> str:
    from experiments.config.sweep_names import swept_name  # Hydra's override parser: only when a sweep names a job

    return swept_name(list(job_overrides), str(fallback))


RESOLVERS = {"objective_mode": objective_mode, "swept_name": _swept_name}


def register_resolvers() -> None:
    """Register every resolver of :data:`RESOLVERS` that is not registered yet (idempotent)."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
