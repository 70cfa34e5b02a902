"""Which folders a command may write: a finished run is never rewritten.

The rule, decided here once and applied to every mode and every way a command can end:

- a command never runs in a folder that holds a finished run (its results.json says ``ok``):
  :class:`KeepFinishedRuns` refuses it before Hydra writes anything there (``.hydra/`` included),
  unless ``overwrite=true`` says to replace that run;
- resuming a finished run (``ckpt_path=`` of it, ``mode=train``) trains in this command's own
  run dir: the finished run's checkpoint is only read (``from_checkpoint.config_for_checkpoint``);
- a failed command never replaces a finished or interrupted record (the interrupted one holds its
  resume command): :func:`record_dir` sends its record to its own Hydra dir, or to ``failed/``;
- no checkpoint with non-finite weights is written (``checkpoints.AtomicCheckpointIO``), so
  ``last.ckpt`` and the best always hold the last finite epoch;
- a fixed path (``publish=PATH``, as ``experiment=pretrain_digits`` sets) is a link that moves to a
  run, atomically, only once that run finished with finite weights (:func:`publish`);
- a command leaves no folder that holds nothing but Hydra's own files (``mode=env``, ``mode=models``,
  a command refused before its task started, a resume whose run is elsewhere):
  :func:`discard_unused_run_dir`. Folder names: :mod:`experiments.config.run_names`.

Hydra loads this module at start-up (the callback): only the standard library, omegaconf and the
light parts of the framework load here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from experiments.errors import ConfigError, TrainingError
from experiments.pipeline.results import RESULTS_FILE, read_results

log = logging.getLogger(__name__)

#: the checkpoint a run writes after every finished epoch: its resume point
LAST_CHECKPOINT = "last.ckpt"

#: records a failed command must not replace: a finished run's, and an interrupted one's resume command
KEPT_STATUSES = ("ok", "interrupted")


def last_checkpoint(cfg: DictConfig, run_dir: Path | str | None = None) -> Path:
    """Where ``last.ckpt`` is written: in the ``last_checkpoint`` callback's folder, else in
    ``<run dir>/checkpoints`` (``run_dir`` defaults to ``paths.run_dir``). The one answer."""
    configured = OmegaConf.select(cfg, "callbacks.last_checkpoint.dirpath", default=None)
    folder = Path(configured) if configured else Path(run_dir or cfg.paths.run_dir) / "checkpoints"
    return folder / LAST_CHECKPOINT


def record_status(run_dir: Path) -> str | None:
    """The ``status`` of ``run_dir``'s results.json; None when there is none or it is unreadable."""
    if not (Path(run_dir) / RESULTS_FILE).is_file():
        return None
    try:
        return read_results(run_dir).get("status")
    except (ValueError, OSError, AttributeError):  # an unreadable record is no finished run's
        return None


def is_finished(run_dir: Path) -> bool:
    return record_status(run_dir) == "ok"


def refuse_finished(run_dir: Path, overwrite: bool, key: str = "hydra.run.dir") -> None:
    """ConfigError when ``run_dir`` holds a finished run and ``overwrite`` was not asked for."""
    if overwrite or not is_finished(run_dir):
        return
    raise ConfigError(
        f"{key}={run_dir} holds a finished run (its results.json says ok), and a command never "
        f"rewrites one: leave {key} out (every run gets a new dir), choose another dir, resume it with "
        f"ckpt_path={Path(run_dir) / 'checkpoints' / LAST_CHECKPOINT} (that trains in a new dir), or add "
        "overwrite=true to replace it"
    )


def record_dir(run_dir: Path, hydra_dir: Path, failed: bool) -> Path:
    """Where a job's results.json goes: its run dir, except that a failed command never replaces
    a finished or interrupted record there (a resume or a rerun that failed): its record then goes
    to the command's own Hydra dir, or beside the kept one as ``failed/``."""
    status = record_status(run_dir)
    if not failed or status not in KEPT_STATUSES:
        return run_dir
    target = hydra_dir if hydra_dir.resolve() != run_dir.resolve() else run_dir / "failed"
    log.error("%s holds a%s run: its record is kept; this failure is recorded in %s",
              run_dir, " finished" if status == "ok" else "n interrupted", target)
    return target


#: what Hydra writes into every job's folder before the job runs
HYDRA_OWN = frozenset({".hydra", "run.log"})


def discard_unused_run_dir(run_dir: Path) -> bool:
    """Remove ``run_dir`` when it holds nothing but :data:`HYDRA_OWN` (the job wrote nothing of its
    own there), closing the log file first; an emptied ``runs/`` or mode folder above it goes too.
    Returns whether it was removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or any(p.name not in HYDRA_OWN for p in run_dir.iterdir()):
        return False
    log_file = (run_dir / "run.log").resolve()
    for handler in list(logging.getLogger().handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve() == log_file:
            logging.getLogger().removeHandler(handler)
            handler.close()
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    if parent.name in ("runs", "advise", "env", "models", "test", "predict", "export") and not any(parent.iterdir()):
        parent.rmdir()
    return not run_dir.exists()


class KeepFinishedRuns(Callback):
    """Refuses a run or sweep whose folder holds a finished run, before Hydra writes into it.

    Prints one paragraph and exits 1: there is no folder of its own to record the refusal in.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check([Path(str(OmegaConf.select(config, "hydra.run.dir")))], config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        jobs = sorted(p.parent for p in sweep.glob(f"*/{RESULTS_FILE}")) if sweep.is_dir() else []
        self._check(jobs, config, "hydra.sweep.dir")

    @staticmethod
    def _check(dirs: list[Path], config: DictConfig, key: str) -> None:
        from experiments.config.rules import rule_problem  # the rule's one home

        overwrite = OmegaConf.select(config, "overwrite", default=False)
        try:
            if problem := rule_problem("overwrite", overwrite):
                raise ConfigError(problem)
            check_writable(Path(str(OmegaConf.select(config, key))), key)
            for run_dir in dirs:
                refuse_finished(run_dir, overwrite, key)
                if overwrite and is_finished(run_dir):
                    set_aside(run_dir)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)


def check_writable(folder: Path, key: str) -> None:
    """ConfigError when ``folder`` cannot be created or written (its nearest existing parent is a
    file, or read-only), before Hydra tries and fails with a traceback."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is read-only"
    else:
        return
    raise ConfigError(f"{key}={folder} cannot be created: {problem}. Choose a writable place: paths.output_root=DIR "
                      f"(every run's parent) or {key}=DIR")


#: the environment variable that tells a job which finished run its folder replaced (JSON:
#: run dir -> where the old run waits), set before Hydra writes the new run's files
REPLACED_RUNS = "EXPERIMENTS_REPLACED_RUNS"


def set_aside(run_dir: Path) -> Path:
    """``overwrite=true``: move the finished run out of the way before anything is written, so the
    new run starts in an empty folder (never mixed with the old files) and a command that fails
    leaves the old run whole. :func:`settle_replaced` deletes it once the new run finished ok."""
    aside = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y-%m-%d_%H-%M-%S')}-{os.getpid()}")
    os.rename(run_dir, aside)
    replaced = json.loads(os.environ.get(REPLACED_RUNS, "{}"))
    replaced[str(run_dir.resolve())] = str(aside)
    os.environ[REPLACED_RUNS] = json.dumps(replaced)
    print(f"overwrite=true: the finished run in {run_dir} was moved to {aside}; it is deleted once this run "
          "finishes ok", file=sys.stderr)
    return aside


def settle_replaced(run_dir: Path, ok: bool) -> None:
    """After a job in a folder that ``overwrite=true`` emptied: delete the old run when the new one
    finished ok; put it back when the new one left nothing (refused before its task); otherwise
    keep it and say where (``mv`` it back to undo)."""
    replaced = json.loads(os.environ.get(REPLACED_RUNS, "{}"))
    aside = replaced.get(str(Path(run_dir).resolve()))
    if not aside or not Path(aside).exists():
        return
    if ok:
        shutil.rmtree(aside, ignore_errors=True)
        log.info("overwrite=true: the replaced run %s was deleted (this run finished ok)", aside)
    elif not Path(run_dir).exists():  # refused before it wrote anything: the old run goes back in place
        os.rename(aside, run_dir)
        print(f"overwrite=true: nothing was written, so the finished run is back in {run_dir}", file=sys.stderr)
    else:
        log.error("overwrite=true: this run did not finish; the run it was to replace is kept in %s "
                  "(mv it back to %s to undo)", aside, run_dir)


def check_publish_target(target: Path, run_dir: Path) -> None:
    """Refuse a ``publish=`` target that moving the link there would destroy or loop, before the
    run trains: an existing regular file (it would be replaced), the run dir itself, a path inside
    it, or a folder above it (the run would be moved aside with it)."""
    where = Path(os.path.abspath(target.expanduser()))
    link = where.parent.resolve() / where.name  # the link itself, not where an old link points
    run = run_dir.resolve()
    problem = None
    if link.exists() and not link.is_symlink() and not link.is_dir():
        problem = "is a regular file, which the link would replace"
    elif link == run:
        problem = "is this run's own folder"
    elif run in link.parents:
        problem = f"is inside this run's folder {run}"
    elif link in run.parents:
        problem = f"is a folder above this run's folder {run}, which moving it aside would move too"
    if problem:
        raise ConfigError(f"publish={target} {problem}; nothing was moved. Give publish= a path of its own outside "
                          "the run folders, e.g. publish=outputs/pretrained/<name>")


def publish(run_dir: Path, checkpoint: Path, target: Path) -> Path:
    """Point the fixed path ``target`` at ``run_dir`` (a relative symbolic link, swapped atomically),
    after checking that ``checkpoint`` (the run's ``last.ckpt``) holds finite weights.

    A folder already at ``target`` (a run written there directly) is moved aside, not deleted.
    TrainingError when the weights are not finite: the link then stays where it was.
    """
    from experiments.checkpoints import non_finite_tensors, read_checkpoint

    check_publish_target(target, run_dir)
    if not checkpoint.is_file():
        raise TrainingError(f"publish={target}: the run left no {checkpoint} to publish; the link is unchanged")
    bad = non_finite_tensors(read_checkpoint(checkpoint)["state_dict"])
    if bad:
        raise TrainingError(
            f"publish={target}: {checkpoint} holds non-finite weights ({len(bad)} tensors, e.g. {bad[:2]}); "
            "the link is unchanged. Lower optimizer.lr or set trainer.gradient_clip_val=1.0"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and not target.is_symlink():
        aside = target.with_name(f"{target.name}.before-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
        os.rename(target, aside)
        log.warning("publish: the folder %s was moved aside to %s", target, aside)
    link = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(run_dir.resolve(), target.parent.resolve()), link)
    os.replace(link, target)
    log.info("published %s -> %s", target, run_dir)
    return target
