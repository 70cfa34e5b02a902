"""DDP that works inside a local sweep (``python run.py -m trainer=ddp ... seed=0,1``).

Lightning starts DDP's extra processes by re-running the command line, and under Hydra adds the run
dir of ``hydra.run.dir``. Inside a multirun both are wrong: the command line is the whole sweep
(``-m seed=0,1``: every extra process would start the sweep again) and the run dir is not the job's.
Its launcher also leaves ``LOCAL_RANK``, ``WORLD_SIZE`` and the master address in the process's
environment and the process group open, so the sweep's next job in the same process would take
itself for an extra process. :class:`JobDDPStrategy` (``conf/trainer/ddp.yaml``) fixes both:

- in a multirun, each extra process runs this job alone: ``run.py``, the job's own overrides,
  ``hydra.mode=RUN`` and the job's dir as ``hydra.run.dir`` (its log is ``train_ddp_process_<rank>.log``
  there; ``.hydra/`` is rank 0's); a single run keeps Lightning's command;
- the next job's strategy clears what the previous job's launch left in this process.

Only rank 0 writes the record, checkpoints and loggers, as in a single DDP run. This leans on
Lightning's subprocess launcher (``_SubprocessScriptLauncher``), the one part of its API that is
not public; ``tests/test_management.py`` runs a DDP sweep on CPU to catch a change there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script

#: what Lightning's launcher writes into the launching process's environment
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
#: set to this process's id after it launched a job's extra processes (their environment is its own)
LAUNCHED_ENV = "EXPERIMENTS_DDP_LAUNCHED_BY"


class JobDDPStrategy(DDPStrategy):
    """Lightning's ``DDPStrategy`` (the same arguments) whose extra processes run one sweep job."""

    def __init__(self, **kwargs: Any) -> None:
        _forget_previous_launch()
        super().__init__(**kwargs)

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if type(self._launcher) is subprocess_script._SubprocessScriptLauncher:
            self._launcher = _JobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


class _JobLauncher(subprocess_script._SubprocessScriptLauncher):
    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        lightning_command = subprocess_script._hydra_subprocess_cmd
        if in_sweep:  # the module's function is what the launcher calls for each extra process
            subprocess_script._hydra_subprocess_cmd = _job_command
        try:
            super()._call_children_scripts()
        finally:
            subprocess_script._hydra_subprocess_cmd = lightning_command
        os.environ[LAUNCHED_ENV] = str(os.getpid())


def _job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command of extra process ``local_rank``: this job alone, in this job's dir."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra = HydraConfig.get()
    script = Path(get_original_cwd(), sys.argv[0]).resolve()
    command = [sys.executable, str(script), *hydra.overrides.hydra, *hydra.overrides.task, "hydra.mode=RUN",
               f"hydra.run.dir={_quoted(str(hydra.runtime.output_dir))}", "hydra.output_subdir=null",
               f"hydra.job.name=train_ddp_process_{local_rank}"]
    return command, get_original_cwd()


def _quoted(text: str) -> str:
    """``text`` as one quoted override value: a job dir's ``,`` and ``=`` are not sweep syntax."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _forget_previous_launch() -> None:
    """A previous job of this process launched extra processes: its environment and process group
    go, so this job launches its own (its extra processes have finished with their job)."""
    if os.environ.get(LAUNCHED_ENV) != str(os.getpid()):
        return
    for key in (*LAUNCH_ENV, LAUNCHED_ENV):
        os.environ.pop(key, None)
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
