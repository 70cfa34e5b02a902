"""The job a task runs in, as Hydra launched it: its dir, whether it is one of a sweep, its
overrides and Hydra's config search path. Light: the wrapper and every task take it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Job:
    """One job as Hydra launched it.

    Args:
        run_dir: Hydra's output dir for this job (``.hydra/`` is there).
        multirun: whether the job is one of a sweep (``-m``).
        overrides: the job's command-line overrides (``hydra.overrides.task``).
        searchpath: ``hydra.searchpath``: extra config folders, where ``finetune=auto`` also finds
            strategies to choose from.
    """

    run_dir: Path
    multirun: bool = False
    overrides: tuple[str, ...] = ()
    searchpath: tuple[str, ...] = ()

    @classmethod
    def from_hydra(cls) -> Job:
        """The job Hydra is running now (inside ``@hydra.main``)."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        return cls(Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN,
                   tuple(hydra_cfg.overrides.task), tuple(str(p) for p in hydra_cfg.searchpath or ()))
