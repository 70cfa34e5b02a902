"""The Optuna sweeper (``hydra/sweeper=optuna``, selected by ``hparams_search=optuna``).

Hydra's own Optuna sweeper for hydra-core 1.3 pins optuna 2.10, whose SQL storage does not run on
SQLAlchemy 2; this one runs on current Optuna with the same keys (direction, study_name, storage,
n_trials, n_jobs, sampler, params) plus ``pruner``, ``heartbeat_interval`` and ``max_retries``.
Hydra finds it through ``hydra_plugins.experiments_sweeper``, which registers it; the study's loop
is :func:`experiments.sweeps.study.run_study`. Hydra imports this module at start-up: Optuna is
imported only when a sweep starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from experiments.sweeps.settings import StudySettings


class OptunaSweeper(Sweeper):
    """Asks Optuna for ``n_jobs`` trials at a time, launches them as one batch, tells each result.

    Args: the keys of ``hydra.sweeper`` (conf/hparams_search/optuna.yaml documents each one).
    """

    def __init__(self, direction: str, study_name: str | None, storage: str | None, n_trials: int, n_jobs: int,
                 sampler: Any = None, pruner: Any = None, params: Mapping[str, Any] | None = None,
                 heartbeat_interval: int | None = None, max_retries: int = 1) -> None:
        self.settings = StudySettings(
            direction=str(direction), study_name=study_name, storage=storage, n_trials=n_trials, n_jobs=n_jobs,
            sampler=_plain(sampler), pruner=_plain(pruner), params=dict(_plain(params) or {}),
            heartbeat_interval=heartbeat_interval, max_retries=max_retries,
        )
        self.settings.check()
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from experiments.sweeps.study import run_study  # Optuna and its storage layer: only now

        assert self.config is not None, "setup() runs before sweep()"
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper does
        return run_study(self.settings, arguments, self._launch, sweep_dir)

    def _launch(self, batch: Sequence[Sequence[str]]) -> Sequence[JobReturn]:
        """One batch of jobs (one per trial), numbered on from the previous batch."""
        self.validate_batch_is_legal(batch)
        returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
        self.job_idx += len(batch)
        return returns


def _plain(node: Any) -> Any:
    """A config node as plain data (Hydra hands nested nodes over as DictConfig); None as it is."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
