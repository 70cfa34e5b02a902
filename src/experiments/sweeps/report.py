"""The study's report in the sweep dir, beside the sweep summary: ``optuna_study.csv`` (one row per
trial of the whole study: every worker's), ``optuna_study.json`` (the best trial and every trial),
and Optuna's plots ``optuna_history.png`` (optimisation history) and ``optuna_importance.png``
(parameter importance; it needs two completed trials and a searched parameter, else a log line).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from experiments.atomic import atomic_output
from experiments.reporting.numbers import significant

log = logging.getLogger(__name__)

STUDY_CSV, STUDY_JSON = "optuna_study.csv", "optuna_study.json"
HISTORY_PNG, IMPORTANCE_PNG = "optuna_history.png", "optuna_importance.png"


def write_study_report(study: optuna.Study, sweep_dir: Path) -> None:
    """Write the report files into ``sweep_dir`` (the plots only when they can be drawn)."""
    trials = study.get_trials(deepcopy=False)
    best = _best(study)
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    rows = [_row(t, params, best) for t in trials]
    with atomic_output(sweep_dir / STUDY_CSV, "the study report") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "state", "best", "value", *params, "duration_s", "run_dir", "error"])
        for row in rows:
            writer.writerow([row["trial"], row["state"], "yes" if row["best"] else "", significant(row["value"]),
                             *(_text(row["params"].get(p)) for p in params), significant(row["duration_s"], 3),
                             row["run_dir"], row["error"]])
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}
    summary = {
        "study_name": study.study_name, "direction": study.direction.name.lower(), "trials": len(trials),
        "states": states,
        "best_trial": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
        "all_trials": [{k: v for k, v in row.items() if k != "best"} for row in rows],
    }
    with atomic_output(sweep_dir / STUDY_JSON, "the study report") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    best_note = f"best trial {best.number}: {significant(best.value)} with {best.params}" if best else "no trial completed"
    log.info("optuna study %s: %d trials (%s); %s -> %s", study.study_name, len(trials),
             ", ".join(f"{n} {s}" for s, n in states.items()), best_note, sweep_dir / STUDY_CSV)
    _plots(study, sweep_dir)


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no trial completed
        return None


def _row(trial: FrozenTrial, params: list[str], best: FrozenTrial | None) -> dict[str, Any]:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {
        "trial": trial.number, "state": trial.state.name.lower(), "best": best is not None and trial.number == best.number,
        "value": trial.value, "params": {p: trial.params[p] for p in params if p in trial.params},
        "duration_s": duration, "run_dir": trial.user_attrs.get("run_dir", ""),
        "error": trial.user_attrs.get("error", "over budget: not launched" if trial.user_attrs.get("over_budget") else ""),
    }


def _text(value: Any) -> str:
    """A sampled value: drawn, not measured, so without trailing zeros."""
    return "" if value is None else significant(value, zeros=False) if isinstance(value, float) else str(value)


def _plots(study: optuna.Study, sweep_dir: Path) -> None:
    """Optuna's history and importance plots; a plot that cannot be drawn is a log line, not an error."""
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not completed:
        log.info("optuna: no completed trial, so no %s or %s", HISTORY_PNG, IMPORTANCE_PNG)
        return
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever the machine has
    from optuna.visualization import matplotlib as optuna_plots

    with matplotlib.rc_context():  # Optuna sets its own style globally: the sweep summary's plot keeps ours
        _save(optuna_plots.plot_optimization_history(study), sweep_dir / HISTORY_PNG)
        searched = {k for t in completed for k, d in t.distributions.items() if not d.single()}
        if len(completed) < 2 or not searched:
            log.info("optuna: %s needs 2 completed trials of a searched parameter (have %d); not drawn",
                     IMPORTANCE_PNG, len(completed))
            return
        _save(optuna_plots.plot_param_importances(study), sweep_dir / IMPORTANCE_PNG)


def _save(ax: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure = ax.get_figure()
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    with atomic_output(path, "the study plot") as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
