"""The Optuna sweeper's settings (``hydra.sweeper.*``), checked before any trial starts. Light."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from experiments.errors import ConfigError

DIRECTIONS = ("maximize", "minimize")


@dataclass
class StudySettings:
    """One study: how it is named, stored, sampled and pruned, and what it searches.

    ``sampler``/``pruner`` are config nodes with ``_target_`` (None: TPE / no pruning), built when
    the study starts; ``params`` maps a key to its sweep expression (see
    :mod:`experiments.sweeps.search_space`).
    """

    direction: str
    study_name: str | None
    storage: str | None
    n_trials: int
    n_jobs: int = 1
    sampler: dict[str, Any] | None = None
    pruner: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval: int | None = None
    max_retries: int = 1

    def check(self) -> None:
        """ConfigError naming the first key whose value cannot run."""
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"hydra.sweeper.direction={self.direction} is invalid: expected one of "
                              f"{', '.join(DIRECTIONS)} (the preset derives it from `objective`)")
        for key in ("n_trials", "n_jobs"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"hydra.sweeper.{key}={value!r} is invalid: expected an integer >= 1")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"hydra.sweeper.max_retries={self.max_retries!r} is invalid: expected an integer >= 0")
        for key in ("sampler", "pruner"):
            node = getattr(self, key)
            if node is not None and (not isinstance(node, dict) or "_target_" not in node):
                raise ConfigError(f"hydra.sweeper.{key}={node!r} is invalid: expected null or a node with "
                                  f"_target_ (e.g. optuna.{key}s.{'TPESampler' if key == 'sampler' else 'MedianPruner'})")
