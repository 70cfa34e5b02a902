"""What ``run.py`` calls: logging, the resolvers, then the job under its wrapper.

Follow a run from here: :func:`main` -> :func:`experiments.pipeline.job.run` (validate, the
mode's task, the record) -> ``experiments.pipeline.tasks.TASKS[mode]``. Heavy modules are
imported inside the tasks, after validation.
"""

from __future__ import annotations

from omegaconf import DictConfig

from experiments.config.resolvers import register_resolvers
from experiments.pipeline.context import Job
from experiments.pipeline.job import run


def main(cfg: DictConfig) -> float | None:
    """``run.py``'s body, once per job (a launcher's worker processes included)."""
    register_resolvers()  # a launcher's worker process has not run run.py's registration
    return run(cfg, Job.from_hydra())
