"""One owner of a job: the run dir, the record, signals, exit codes, publish and the sweeper's value.

:func:`run` is the wrapper every job runs in (``cli.main`` for ``run.py``; tests call it the same
way): it turns a checkpoint command's config into the config it trained with, validates, runs the
mode's task (``experiments.pipeline.tasks.TASKS``) and, whatever happens, writes results.json:

- ``ok``: the task's record; with ``publish=PATH`` the link moves to this run;
- ``failed``: the framework's error as one paragraph, exit 1 (in a sweep: the worst objective, so
  the sweep goes on and the sampler records a bad trial);
- ``interrupted`` (SIGTERM, Ctrl-C): where it stopped and how to resume, exit ``128 + signal``.

A single command refused before its task started (a bad value, a missing checkpoint) writes no
record and leaves no folder: the error on the console is the whole answer. In a sweep the refused
job keeps its ``failed`` record, so the summary lists it.

:func:`experiments.pipeline.rundirs.last_checkpoint` answers "where is ``last.ckpt``?".
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

from experiments.config.metrics import objective_mode
from experiments.config.rules import validate
from experiments.errors import ConfigError, ExperimentError
from experiments.pipeline.context import Job
from experiments.pipeline.from_checkpoint import config_for_checkpoint, uses_checkpoint
from experiments.pipeline.interrupt import interrupted_record, signals_interrupt
from experiments.pipeline.launch import check_launch
from experiments.pipeline.results import notify_record_written, write_results
from experiments.reporting.console import quiet_lightning
from experiments.sweeps.trials import read_pruned
from experiments.pipeline.rundirs import (check_publish_target, discard_unused_run_dir, last_checkpoint, publish,
                                          record_dir, settle_replaced)

log = logging.getLogger("experiments")


def run(cfg: DictConfig, job: Job) -> float | None:
    """Run ``job`` with ``cfg`` and own its record. Returns the objective for sweepers, None for
    modes without one; a failed single run exits 1, an interrupted one ``128 + signal``."""
    from experiments.pipeline.tasks import TASKS

    start, run_dir = time.time(), job.run_dir
    record: dict[str, Any] = {"status": "failed", "mode": cfg.mode,
                              "model": OmegaConf.select(cfg, "model.name", default="?"),
                              "finetune": OmegaConf.select(cfg, "finetune.name", default="?")}
    failure: BaseException | None = None
    started = False  # the mode's task began: from here on a failure leaves a record
    with signals_interrupt() as received:
        try:
            cfg, run_dir = _effective_config(cfg, job)
            validate(cfg)
            check_launch(cfg, job.multirun)
            if cfg.mode == "train" and cfg.get("publish"):  # refused before training, not after
                check_publish_target(Path(str(cfg.publish)), run_dir)
            quiet_lightning()  # validated: the heavy imports are due now; each of their lines once
            started = True
            outcome = TASKS[cfg.mode](cfg, job)
            if outcome is None:  # env, models: nothing to record, no folder to keep (a sweep keeps its jobs' dirs)
                if not job.multirun:
                    discard_unused_run_dir(job.run_dir)
                return None
            record.update(outcome.record, status="ok")
            if (pruned := read_pruned(run_dir)) is not None:  # an Optuna trial its pruner stopped early
                record["pruned"] = pruned
            if cfg.mode == "train" and cfg.get("publish"):  # a fixed path moves to this run only now
                record["published"] = str(publish(run_dir, last_checkpoint(cfg, run_dir), Path(str(cfg.publish))))
        except Exception as raised:  # recorded, reported once, then a non-zero exit (or the next job)
            failure = own_error(raised)
            record["error"] = f"{type(failure).__name__}: {failure}"
        except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into sys.exit(1)
            if not received:
                raise
        record.update(overrides=list(job.overrides), run_dir=str(run_dir), wall_time_s=time.time() - start)
        if received:  # SIGTERM / SIGINT: the record says where the run stopped and how to resume
            record.update(interrupted_record(received[0], last_checkpoint(cfg, run_dir)))
        refused = failure is not None and not started and not received and not job.multirun
        if is_global_zero() and not refused:  # a DDP run's other processes run this too: one record, one log line
            written = write_results(record_dir(run_dir, job.run_dir, failed=failure is not None), record)
            notify_record_written(record, written)  # a tracker's run (MLflow) gets it and the outcome
    if is_global_zero():
        if not job.multirun:
            discard_unused_run_dir(job.run_dir)  # a refused command, a resume elsewhere: nothing of theirs to keep
        settle_replaced(job.run_dir, ok=record["status"] == "ok")  # overwrite=true's old run
    return _exit(cfg, job, record, received, failure)


def _effective_config(cfg: DictConfig, job: Job) -> tuple[DictConfig, Path]:
    """The config to run and its run dir: a checkpoint command's is the config it trained with plus
    this command's overrides, and Hydra's saved ``.hydra/config.yaml`` is rewritten to say so."""
    if not uses_checkpoint(cfg):
        return cfg, job.run_dir
    cfg, saved = config_for_checkpoint(cfg, list(job.overrides))
    if saved is not None:  # .hydra/config.yaml tells what ran, not what was composed
        _save_config(cfg, job.run_dir / ".hydra" / "config.yaml")
    return cfg, Path(cfg.paths.run_dir)


def _exit(cfg: DictConfig, job: Job, record: dict[str, Any], received: list[int],
          failure: BaseException | None) -> float | None:
    """The job's end as the shell and the sweeper see it."""
    if received:
        log.error("%s", record["error"])
        sys.exit(128 + received[0])
    if failure is not None:
        report_error(failure)
        if job.multirun:
            return -math.inf if objective_mode(str(cfg.objective)) == "max" else math.inf
        sys.exit(1)
    if is_global_zero():
        log.info("%s", summary_line(cfg.mode, record))
    return record.get("metrics", {}).get(cfg.objective)


#: the metrics the summary line shows, first found first: a domain-adaptation run names its target
#: first (test/acc is the source's there)
SUMMARY_METRICS = (("test/target_acc", "test/source_acc", "val/source_acc"), ("test/acc", "val/acc"))


def summary_line(mode: str, record: dict[str, Any]) -> str:
    """``done: test/acc 0.9889, val/acc 0.9852, 10 epochs; the command took 4.2 s; run dir ...``
    (the time is the whole command's: data, caching, fitting, testing)."""
    metrics = record.get("metrics", {})
    shown = next((keys for keys in SUMMARY_METRICS if keys[0] in metrics), SUMMARY_METRICS[-1])
    parts = [f"{key} {metrics[key]:.4f}" for key in shown if key in metrics]
    for key, one in (("epochs", "epoch"), ("num_predictions", "prediction")):
        if key in record:
            parts.append(f"{record[key]} {one}{'' if record[key] == 1 else 's'}")
    if isinstance(record.get("export"), dict):
        parts.append(f"{record['export']['format']} {record['export']['path']}")
    label = "done" if mode == "train" else f"done ({mode})"
    return (f"{label}: {', '.join(parts) or 'ok'}; the command took {record['wall_time_s']:.1f} s; "
            f"run dir {record['run_dir']}")


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


def report_error(err: BaseException) -> None:
    """One paragraph for our own errors; the traceback for anything unexpected (a bug)."""
    if isinstance(err, ExperimentError) and os.environ.get("HYDRA_FULL_ERROR") != "1":  # Hydra's meaning
        log.error("error: %s", err)
        print(f"error: {err}", file=sys.stderr)
    else:
        log.error("run failed:\n%s", "".join(traceback.format_exception(err)))


def is_global_zero() -> bool:
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
