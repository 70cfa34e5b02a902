"""A sweep job is named by what its sweep varies: ``-m seed=0,1 trainer.max_epochs=2`` gives the
job dirs ``0_seed=0`` and ``1_seed=1`` (and so the TensorBoard and MLflow run names); the overrides
every job shares stay in each job's ``.hydra/`` and in the sweep summary's header.

A job's own config holds only its values (``seed=0``, ``trainer.max_epochs=2``), not which of
them were swept. :class:`SweptKeys`, a Hydra callback, reads the sweep's command line once at the
start of the multirun and hands the swept keys to the jobs through :data:`SWEPT_KEYS_ENV` (set
before the launcher starts them, so jobs run in-process, in joblib workers and on SLURM see it);
the resolver ``${swept_name:...}`` (:func:`swept_name`) keeps those keys of the job's overrides.
Light: omegaconf and Hydra's override parser only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

#: the environment variable that carries the swept keys (comma-separated) from the sweep to its jobs
SWEPT_KEYS_ENV = "EXPERIMENTS_SWEPT_KEYS"


def swept_keys(overrides: Sequence[str], sweeper_params: Sequence[str] = ()) -> list[str]:
    """The keys a multirun command line sweeps (``seed=0,1``, ``model=a,b``, ``x=range(3)``), then
    the keys a sweeper searches (``hydra.sweeper.params``: Optuna's space), in command-line order."""
    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    return list(dict.fromkeys([*keys, *(str(k) for k in sweeper_params)]))


def bounded_name(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters, its tail replaced by a hash when longer: a sweep job's
    dir name stays under the file system's 255-byte limit however many overrides it has; the full
    overrides stay in the job's .hydra/ and results.json."""
    if len(text) <= limit:
        return text
    import hashlib

    return f"{text[: limit - 9]}~{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def swept_name(job_overrides: Sequence[str], fallback: str, limit: int = 100) -> str:
    """``key=value`` of each swept key among ``job_overrides``, joined by ``,`` and bounded to
    ``limit`` characters (:func:`bounded_name`); ``fallback`` when the sweep
    varies nothing or its swept keys are unknown (a sweep started without :class:`SweptKeys`)."""
    swept = [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]
    values = [str(o) for o in job_overrides if str(o).split("=", 1)[0].lstrip("+~") in swept]
    return bounded_name(",".join(values), limit) if values else fallback


class SweptKeys(Callback):
    """Hydra callback (``hydra.callbacks.swept_keys``): at the start of a multirun, the keys its
    command line sweeps go to :data:`SWEPT_KEYS_ENV` for the jobs' names (:func:`swept_name`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = OmegaConf.select(config, "hydra.overrides.task", default=[]) or []
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept_keys(list(overrides), list(params)))
