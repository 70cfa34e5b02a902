"""Registers ``hydra/sweeper=optuna``: the framework's Optuna sweeper (experiments.sweeps).

Hydra instantiates only plugin classes defined under ``hydra_plugins``, so the class Hydra knows is
a subclass here; its logic is :class:`experiments.sweeps.optuna_sweeper.OptunaSweeper`. Imported at
every start-up: light (Optuna loads when a sweep starts).
"""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where a dataclass with string annotations looks its module up

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore

from experiments.sweeps import optuna_sweeper


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper``'s keys and defaults; conf/hparams_search/optuna.yaml sets and explains them."""

    _target_: str = "hydra_plugins.experiments_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # sampler and pruner reach the sweeper as config, built when the study starts
    direction: str = "maximize"
    study_name: Optional[str] = None
    storage: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 1
    sampler: Any = None
    pruner: Any = None
    params: Optional[Dict[str, Any]] = None
    heartbeat_interval: Optional[int] = None
    max_retries: int = 1


class OptunaSweeper(optuna_sweeper.OptunaSweeper):
    """The sweeper of ``hydra/sweeper=optuna`` (see :class:`experiments.sweeps.optuna_sweeper.OptunaSweeper`)."""


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="experiments")

# Hydra's own Optuna plugin registers the same name; which one wins depends on the scan order
if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
    warnings.warn("hydra-optuna-sweeper is installed and also registers hydra/sweeper=optuna (for optuna 2.10): "
                  "`pip uninstall hydra-optuna-sweeper` so hparams_search=optuna runs the framework's sweeper")
