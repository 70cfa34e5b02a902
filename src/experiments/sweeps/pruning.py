"""Pruning inside a sweep job: the validation objective goes to the job's Optuna trial every epoch,
and the run stops when the study's pruner says so.

Our own callback rather than ``optuna_integration.PyTorchLightningPruningCallback``: that one
needs another package, raises ``TrialPruned`` out of the fit (the job would record a failure and
skip testing) and knows nothing of how a job finds its trial here (:mod:`experiments.sweeps.trials`).
This one stops the run as early stopping does (``trainer.should_stop``): the job tests its best
checkpoint, writes its record and keeps its checkpoints, and :data:`~experiments.sweeps.trials.PRUNED_FILE`
tells the sweeper to record the trial as pruned.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L

from experiments.config.declared import Integer
from experiments.sweeps.trials import STORAGE_ENV, STUDY_ENV, registered_trial, write_pruned

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """Reports ``monitor`` after each validation to Optuna trial ``trial``; stops a pruned run.

    Args:
        trial: the trial number the sweeper gave this job (``optuna_trial``); None (a run outside
            an Optuna sweep): the callback does nothing.
        monitor: the validation metric reported, the sweep's objective.
        run_dir: where the pruning marker goes (the job's run dir).
    """

    KEYS = {"trial": Integer(low=0, null=True)}

    def __init__(self, trial: int | None, monitor: str, run_dir: str) -> None:
        self.trial_number, self.monitor, self.run_dir = trial, monitor, Path(run_dir)
        self._trial: Any = None
        self._warned = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.trial_number is not None and self._trial is None and trainer.is_global_zero:
            self._trial = job_trial(int(self.trial_number))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # fitting only: the validation of the best checkpoint after the fit is no new epoch
        if self.trial_number is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        prune = self._report(trainer) if trainer.is_global_zero and self._trial is not None else False
        if trainer.world_size > 1:  # rank 0 decides; every DDP process stops at the same epoch
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            trainer.should_stop = True

    def _report(self, trainer: L.Trainer) -> bool:
        """Report this epoch's value; whether the pruner stops the run (the marker written if so)."""
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            if not self._warned:  # the epoch's value is missing, not the run: report the next one
                log.warning("optuna trial %s: %s is %s after validation; nothing reported", self.trial_number,
                            self.monitor, "not logged" if value is None else float(value))
                self._warned = True
            return False
        epoch = trainer.current_epoch
        self._trial.report(float(value), step=epoch)
        if not self._trial.should_prune():
            return False
        write_pruned(self.run_dir, int(self.trial_number), epoch, float(value), self.monitor)
        log.info("optuna trial %s pruned after epoch %d (%s %.4g): the run stops here", self.trial_number,
                 epoch, self.monitor, float(value))
        return True


def job_trial(number: int) -> Any | None:
    """Trial ``number`` of the sweep this job runs in: the sweeper's own object when the job runs
    in its process, else loaded from the study's storage with the sweep's pruner; None (and a
    warning) when neither can be had (an in-memory study in another process)."""
    trial = registered_trial(number)
    if trial is not None:
        return trial
    study_name, url = os.environ.get(STUDY_ENV), os.environ.get(STORAGE_ENV)
    if not study_name or not url:
        log.warning("optuna trial %d: its study is in another process's memory, so this job cannot be pruned; "
                    "set hydra.sweeper.storage (e.g. journal:///path/study.log) to prune jobs run elsewhere", number)
        return None
    import optuna

    from experiments.sweeps.storage import open_storage

    storage = open_storage(url)
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=_sweep_pruner())
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)
    return optuna.trial.Trial(study, trial_id)


def _sweep_pruner() -> Any:
    """The pruner of the sweep's config (``hydra.sweeper.pruner``; none: Optuna's NopPruner)."""
    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    node = HydraConfig.get().sweeper.get("pruner") if HydraConfig.initialized() else None
    return instantiate(node) if node is not None else optuna.pruners.NopPruner()
