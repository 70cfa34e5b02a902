"""How a sweep job finds its Optuna trial, and how it tells the sweeper it was pruned.

The sweeper gives every job the override ``optuna_trial=N`` (conf/hparams_search/optuna.yaml) and
puts the study's name and storage URL in :data:`STUDY_ENV` and :data:`STORAGE_ENV` before it
launches (jobs in-process, in joblib workers and on SLURM inherit them). A job in the sweeper's own
process (Hydra's basic launcher) takes the very trial object the sweeper asked for
(:func:`register_trials`), so pruning works even with the in-memory storage; a job elsewhere loads
the trial from the storage. A pruned job leaves :data:`PRUNED_FILE` in its run dir; the sweeper
tells Optuna ``PRUNED`` and the sweep summary shows the job as pruned.

Light: the standard library and :mod:`experiments.atomic` (the sweep summary imports this at
Hydra's start-up).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from experiments.atomic import atomic_output

#: the environment variables that carry the study to the jobs
STUDY_ENV, STORAGE_ENV = "EXPERIMENTS_OPTUNA_STUDY", "EXPERIMENTS_OPTUNA_STORAGE"
#: written into a job's run dir when the pruner stopped it: ``{"trial", "epoch", "value", "monitor"}``
PRUNED_FILE = "optuna_pruned.json"

#: the trials this process's sweeper is running now, by study name and trial number
_running: dict[tuple[str, int], Any] = {}


def publish_study(study_name: str, storage_url: str | None) -> None:
    """Tell the jobs about to start which study they belong to (no URL: the in-memory storage)."""
    os.environ[STUDY_ENV] = study_name
    if storage_url:
        os.environ[STORAGE_ENV] = str(storage_url)
    else:
        os.environ.pop(STORAGE_ENV, None)


def register_trials(study_name: str, trials: Iterable[Any]) -> None:
    """The batch of trials being launched, for jobs that run in this process."""
    _running.clear()
    _running.update({(study_name, trial.number): trial for trial in trials})


def registered_trial(number: int) -> Any | None:
    """The trial ``number`` of the published study if this process's sweeper is running it."""
    return _running.get((os.environ.get(STUDY_ENV, ""), number))


def write_pruned(run_dir: Path, trial: int, epoch: int, value: float, monitor: str) -> Path:
    """Leave the pruning marker in ``run_dir`` (whole or not at all: the sweeper reads it)."""
    path = Path(run_dir) / PRUNED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, "the pruning marker") as tmp:
        tmp.write_text(json.dumps({"trial": trial, "epoch": epoch, "value": value, "monitor": monitor}) + "\n")
    return path


def read_pruned(run_dir: Path) -> dict[str, Any] | None:
    """The pruning marker of ``run_dir``; None when the job was not pruned."""
    path = Path(run_dir) / PRUNED_FILE
    return json.loads(path.read_text()) if path.exists() else None
