"""What ``run.py`` calls: validate (cheap), run the mode's task, own the record, report errors.

Follow a run from here: :func:`main` -> :func:`run_task` -> ``experiments.pipeline.tasks.TASKS[mode]``
(``train``: build, fit, evaluate) -> results.json. Heavy modules are imported inside the tasks,
after validation.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.config.rules import objective_mode, validate
from experiments.errors import ConfigError, ExperimentError
from experiments.pipeline.interrupt import interrupted_record, signals_interrupt
from experiments.pipeline.from_checkpoint import config_for_checkpoint, uses_checkpoint
from experiments.pipeline.results import notify_record_written, write_results
from experiments.pipeline.rundirs import publish, record_dir

log = logging.getLogger("experiments")


def _hydra_context() -> tuple[Path, bool, list[str]]:
    """Run dir, whether this is a multirun job, and the job's overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    return (
        Path(hydra_cfg.runtime.output_dir),
        hydra_cfg.mode == RunMode.MULTIRUN,
        list(hydra_cfg.overrides.task),
    )


def main(cfg: DictConfig) -> float | None:
    """``run.py``'s body: set up logging, then run the configured task inside :func:`run_task`."""
    setup_logging()
    run_dir, multirun, overrides = _hydra_context()
    return run_task(cfg, run_dir, multirun, overrides)


def setup_logging() -> None:
    """Lightning adds its own console handlers; route its records through Hydra's handlers
    instead, so they land once on the console and in the job's log file."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def run_task(cfg: DictConfig, run_dir: Path, multirun: bool, overrides: list[str]) -> float | None:
    """Run one job and own its record: start time, run dir, overrides, and the failure path.

    Returns the objective for sweepers (Optuna), or None for modes without one. A failed job in a
    sweep returns the worst possible value (-inf when the objective is maximised) instead of
    raising, so the sweep goes on and a sampler records the trial as bad; the sweep summary lists
    it as failed. A failed single run exits with status 1. Either way results.json says why.
    """
    from experiments.pipeline.tasks import TASKS

    hydra_dir, start = run_dir, time.time()
    record: dict[str, Any] = {
        "status": "failed",
        "mode": cfg.mode,
        "model": OmegaConf.select(cfg, "model.name", default="?"),
        "finetune": OmegaConf.select(cfg, "finetune.name", default="?"),
    }
    with signals_interrupt() as received:
        try:
            if uses_checkpoint(cfg):
                cfg, saved = config_for_checkpoint(cfg, overrides)
                run_dir = Path(cfg.paths.run_dir)
                if saved is not None:  # .hydra/config.yaml tells what ran, not what was composed
                    _save_config(cfg, hydra_dir / ".hydra" / "config.yaml")
            validate(cfg)
            check_launch(cfg, multirun)
            outcome = TASKS[cfg.mode](cfg, overrides)
            if outcome is None:  # env, models: nothing to record
                return None
            if cfg.mode == "train" and cfg.get("publish"):  # a fixed path moves to this run only now
                last = _checkpoint_dir(cfg, run_dir) / "last.ckpt"
                outcome["published"] = str(publish(run_dir, last, Path(str(cfg.publish))))
            record.update(outcome, status="ok")
        except Exception as raised:  # recorded, reported once, then a non-zero exit (or the next job)
            err = own_error(raised)
            record["error"] = f"{type(err).__name__}: {err}"
            failure: BaseException | None = err
        except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into sys.exit(1)
            if not received:
                raise
            failure = None
        else:
            failure = None
        record.update(overrides=overrides, run_dir=str(run_dir), wall_time_s=time.time() - start)
        if received:  # SIGTERM / SIGINT: the record says where the run stopped and how to resume
            record.update(interrupted_record(received[0], run_dir, _checkpoint_dir(cfg, run_dir)))
        if _is_global_zero():  # a DDP run's other processes run this too: one record, one log line
            written = write_results(record_dir(run_dir, hydra_dir, failed=failure is not None), record)
            notify_record_written(record, written)  # a tracker's run (MLflow) gets it and the outcome
    if received:
        log.error("%s", record["error"])
        sys.exit(128 + received[0])
    if failure is not None:
        report_error(failure)
        if multirun:
            return -math.inf if objective_mode(str(cfg.objective)) == "max" else math.inf
        sys.exit(1)
    metrics = record.get("metrics", {})
    if _is_global_zero():
        # a domain-adaptation run names its target first (test/acc is the source's there)
        shown = ("test/target_acc", "test/source_acc", "val/source_acc") if "test/target_acc" in metrics else ("test/acc", "val/acc")
        parts = [f"{key} {metrics[key]:.4f}" for key in shown if key in metrics]
        parts += [f"{record[key]} {key.removeprefix('num_')}" for key in ("epochs", "num_predictions") if key in record]
        label = "done" if cfg.mode == "train" else f"done ({cfg.mode})"
        log.info("%s: %s in %.1fs; run dir %s", label, ", ".join(parts), record["wall_time_s"], run_dir)
    return metrics.get(cfg.objective)


def _checkpoint_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """Where ``last.ckpt`` is written (the ``last_checkpoint`` callback's folder)."""
    configured = OmegaConf.select(cfg, "callbacks.last_checkpoint.dirpath", default=None)
    return Path(configured) if configured else run_dir / "checkpoints"


def own_error(err: BaseException) -> BaseException:
    """The framework's own error inside Hydra's ``InstantiationException`` wrapper (a data option's
    constructor raised it), so it is reported as one paragraph; any other error as it is."""
    cause = err
    while cause.__cause__ is not None and not isinstance(cause, ExperimentError):
        cause = cause.__cause__
    if isinstance(cause, ExperimentError):
        return cause
    text = str(err)
    if type(err).__name__ == "InstantiationException" and text.startswith("Error locating target"):
        target = text.split("'")[1] if text.count("'") >= 2 else "?"
        key = text.rpartition("full_key:")[2].strip() or "?"
        return ConfigError(
            f"{key}._target_={target!r} cannot be imported: check its spelling (a dotted path to a "
            "class or function) and that its module is on the path (PYTHONPATH=... python run.py ...)"
        )
    return err


def check_launch(cfg: DictConfig, multirun: bool) -> None:
    """Refuse launches that would run wrongly: DDP inside a local sweep (its extra processes re-run
    the command line, which would start the whole sweep again in each of them), ``ddp_spawn``
    (its results come back from a spawned process without the state the record needs), and a
    GPU trainer on a machine without one."""
    strategy = str(OmegaConf.select(cfg, "trainer.strategy", default="auto"))
    if "spawn" in strategy:
        raise ConfigError(
            f"trainer.strategy={strategy} is not supported: the spawned processes' metrics and epoch "
            "count do not reach the results record; use trainer=ddp (trainer.strategy=ddp)"
        )
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    if accelerator in ("gpu", "cuda") and cfg.mode in ("train", "test", "predict"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={accelerator} but this machine has no CUDA GPU that torch "
                f"{torch.__version__} can use: use trainer=cpu (python run.py mode=env explains why)"
            )
    if multirun and strategy.startswith("ddp") and "spawn" not in strategy and "SLURM_JOB_ID" not in os.environ:
        raise ConfigError(
            f"trainer.strategy={strategy} in a multirun: DDP starts its processes by re-running the "
            "command line, which would repeat the sweep; run DDP jobs one at a time (without -m), "
            "or sweep on a cluster with hydra/launcher=slurm"
        )


def _is_global_zero() -> bool:
    """False in the extra processes of a multi-process (DDP) run. Lightning sets the rank in each
    process it starts; a process that has not imported Lightning has not trained, so the check
    never imports it."""
    rank_zero = sys.modules.get("lightning.fabric.utilities.rank_zero")
    return rank_zero is None or getattr(rank_zero.rank_zero_only, "rank", 0) == 0


def _save_config(cfg: DictConfig, path: Path) -> None:
    if path.parent.is_dir():
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        OmegaConf.save(cfg, tmp)
        os.replace(tmp, path)


def report_error(err: BaseException) -> None:
    """One paragraph for our own errors; the traceback for anything unexpected (a bug)."""
    if isinstance(err, ExperimentError) and os.environ.get("HYDRA_FULL_ERROR") != "1":  # Hydra's meaning
        log.error("error: %s", err)
        print(f"error: {err}", file=sys.stderr)
    else:
        log.error("run failed:\n%s", "".join(traceback.format_exception(err)))
