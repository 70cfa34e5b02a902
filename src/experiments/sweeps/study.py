"""The Optuna sweeper's loop: ask a batch of trials, launch them as jobs, tell each job's outcome.

Any number of workers (``python run.py hparams_search=optuna hydra.sweeper.storage=URL`` started
several times) share one study: it is loaded if it exists, trial numbers come from the storage,
and a worker stops asking once the study holds ``n_trials`` trials that ran or run (a trial asked
past that, in a race between workers, is told failed as ``over_budget`` and not launched). With
heartbeats (RDB storages), a trial whose worker died is failed by the next worker that asks and run
again from a queued copy.

What a job's outcome is comes from its run dir, the job wrapper's ``results.json`` and the pruning
marker: ok with a finite objective -> COMPLETE; pruned -> PRUNED; failed, interrupted, missing or a
NaN objective -> FAIL with the reason in the trial's user attributes (``status``, ``error``).
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.utils import instantiate
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from experiments.pipeline.results import RESULTS_FILE, read_results
from experiments.sweeps.report import write_study_report
from experiments.sweeps.search_space import SearchSpace, parse_search_space
from experiments.sweeps.settings import StudySettings
from experiments.sweeps.storage import experimental_ok, open_storage
from experiments.sweeps.trials import publish_study, read_pruned, register_trials

log = logging.getLogger(__name__)

#: the job override that tells a job its trial (declared in conf/hparams_search/optuna.yaml)
TRIAL_KEY = "optuna_trial"
#: the user attribute of a trial asked past ``n_trials`` in a race between workers: never launched
OVER_BUDGET = "over_budget"

Launch = Callable[[Sequence[Sequence[str]]], Sequence[JobReturn]]


@dataclass
class Outcome:
    """What to tell Optuna about one job."""

    state: TrialState
    value: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def run_study(settings: StudySettings, arguments: Sequence[str], launch: Launch, sweep_dir: Path) -> optuna.Study:
    """Run this worker's share of the study, then write the study's report into ``sweep_dir``."""
    with experimental_ok(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")  # run_batch beats itself
        return _run_study(settings, arguments, launch, sweep_dir)


def _run_study(settings: StudySettings, arguments: Sequence[str], launch: Launch, sweep_dir: Path) -> optuna.Study:
    space = parse_search_space(settings.params, arguments)
    if not space.distributions:
        log.warning("optuna: nothing to search (hydra.sweeper.params and the command line are all fixed values); "
                    "every trial runs the same config")
    storage = open_storage(settings.storage, settings.heartbeat_interval, settings.max_retries)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep logs each trial's outcome once, below
    study = optuna.create_study(
        study_name=settings.study_name, storage=storage, direction=settings.direction, load_if_exists=True,
        sampler=sampler(settings.sampler), pruner=instantiate(settings.pruner) if settings.pruner else optuna.pruners.NopPruner(),
    )
    held = len(study.get_trials(deepcopy=False))
    if held and settings.sampler and settings.sampler.get("seed") is not None:
        # a resumed or joined study: the seed as given would draw the first trials' values again
        study.sampler = sampler(settings.sampler, offset=held)
        log.info("optuna: the study holds %d trials; this worker's sampler seed is %s + %d",
                 held, settings.sampler["seed"], held)
    publish_study(study.study_name, settings.storage)
    log.info("optuna study %s (%s, %s): %d of %d trials done or running; this worker asks %d at a time",
             study.study_name, settings.direction, settings.storage or "in memory",
             len(counted_trials(study.get_trials(deepcopy=False))), settings.n_trials, settings.n_jobs)
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trials: failed, and queued again
        wanted = min(settings.n_jobs, remaining(study, settings.n_trials))
        trials = [t for t in (study.ask(space.distributions) for _ in range(max(wanted, 0)))
                  if within_budget(study, t, settings.n_trials)]
        if not trials:
            break
        run_batch(study, trials, space, launch, storage)
    write_study_report(study, sweep_dir)
    return study


def sampler(node: dict[str, Any] | None, offset: int = 0) -> optuna.samplers.BaseSampler | None:
    """The configured sampler (None: Optuna's default, TPE), its ``seed`` moved on by ``offset``."""
    if not node:
        return None
    return instantiate({**node, "seed": node["seed"] + offset} if offset and node.get("seed") is not None else node)


def counted_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count against ``n_trials``: ran or running, not a queued copy (WAITING),
    not a failed trial that a copy retries, not one asked over the budget."""
    with experimental_ok():
        retried = {number for t in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    return [t for t in trials if t.state != TrialState.WAITING and OVER_BUDGET not in t.user_attrs
            and not (t.state == TrialState.FAIL and t.number in retried)]


def remaining(study: optuna.Study, n_trials: int) -> int:
    """How many trials the study still needs before it holds ``n_trials`` counted ones."""
    return n_trials - len(counted_trials(study.get_trials(deepcopy=False)))


def within_budget(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """False (and the trial told failed, ``over_budget``) when ``n_trials`` counted trials came
    before it: another worker asked in the same moment."""
    before = [t for t in counted_trials(study.get_trials(deepcopy=False)) if t.number < trial.number]
    if len(before) < n_trials:
        return True
    trial.set_user_attr(OVER_BUDGET, True)
    study.tell(trial, state=TrialState.FAIL)
    return False


def run_batch(study: optuna.Study, trials: list[optuna.Trial], space: SearchSpace, launch: Launch,
              storage: Any) -> None:
    """Launch one job per trial and tell each its outcome; an interruption (or a launcher error)
    fails the batch's trials first, so no trial is left running in a shared study."""
    batch = [[*space.overrides(t.params), f"{TRIAL_KEY}={t.number}"] for t in trials]
    register_trials(study.study_name, trials)
    told: set[int] = set()
    try:
        with heartbeats(storage, study, trials):
            returns = launch(batch)
        for trial, job in zip(trials, returns):
            tell(study, trial, job_outcome(job))
            told.add(trial.number)
    except BaseException as stopped:
        for trial in trials:
            if trial.number not in told:
                trial.set_user_attr("error", f"the sweep stopped: {type(stopped).__name__}: {stopped}"[:1000])
                study.tell(trial, state=TrialState.FAIL)
        raise
    finally:
        register_trials(study.study_name, [])


def tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> None:
    """Tell Optuna ``outcome`` (its attributes first, as user attributes) and log it in one line."""
    for key, value in outcome.attrs.items():
        trial.set_user_attr(key, value)
    study.tell(trial, outcome.value if outcome.state == TrialState.COMPLETE else None, state=outcome.state)
    detail = (f"{outcome.value:.4g}" if outcome.state == TrialState.COMPLETE
              else outcome.attrs.get("error") or outcome.attrs.get("pruned", ""))
    log.info("optuna trial %d: %s %s; params %s", trial.number, outcome.state.name.lower(), detail, trial.params)


def job_outcome(job: JobReturn) -> Outcome:
    """A finished job as Optuna's trial state, read from its run dir (see the module's list)."""
    run_dir = Path(str(job.hydra_cfg.hydra.runtime.output_dir)) if job.hydra_cfg is not None else None
    attrs: dict[str, Any] = {"run_dir": str(run_dir) if run_dir else ""}
    try:
        value = job.return_value
    except Exception as raised:  # the task function raised past the job wrapper
        return Outcome(TrialState.FAIL, attrs={**attrs, "status": "failed", "error": f"{type(raised).__name__}: {raised}"[:1000]})
    if run_dir is None or not (run_dir / RESULTS_FILE).exists():
        return Outcome(TrialState.FAIL, attrs={**attrs, "status": "failed",
                                               "error": f"no {RESULTS_FILE} in {run_dir}: the job did not record"})
    record = read_results(run_dir)
    attrs["status"] = str(record.get("status", "failed"))
    if record.get("status") != "ok":
        return Outcome(TrialState.FAIL, attrs={**attrs, "error": str(record.get("error", "no error recorded"))[:1000]})
    pruned = read_pruned(run_dir)
    if pruned is not None:
        return Outcome(TrialState.PRUNED, attrs={
            **attrs, "status": "pruned",
            "pruned": f"after epoch {pruned['epoch']} ({pruned['monitor']} {pruned['value']:.4g})"})
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return Outcome(TrialState.FAIL, attrs={**attrs, "status": "failed",
                                               "error": f"the objective is {value!r}, not a finite number"})
    return Outcome(TrialState.COMPLETE, float(value), attrs)


@contextmanager
def heartbeats(storage: Any, study: optuna.Study, trials: Sequence[optuna.Trial]) -> Iterator[None]:
    """Beat for ``trials`` while their jobs run (ask and tell send none by themselves), when the
    storage has heartbeats on; otherwise nothing."""
    interval = storage.heartbeat_interval if isinstance(storage, RDBStorage) else None
    if not interval:
        yield
        return
    study_id = storage.get_study_id_from_name(study.study_name)
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials]
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in ids:
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
