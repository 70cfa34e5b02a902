"""``finetune=auto``'s confirmation: a short race among candidate strategies (successive halving).

The prior (the guidance table's cell) can be wrong on data it was not calibrated on, so before the
run trains, the prior and its plausible neighbours each train briefly on the run's own labelled
data and are scored on its validation split (few-shot runs: limited to as many labels per class as
training has). The test split is never read.

Successive halving over two rungs: every candidate trains ``steps`` optimizer steps; the better half
(ties keep the earlier candidate, the prior first) trains again from the same start for twice as
many; the best of that rung wins. Each trial is trained by the function the resolver hands in
(:func:`experiments.pipeline.auto.run_trial`: built like the run itself, seeded, fresh weights,
fitted by the run's one fit, so frozen candidates cost a feature extraction and a head fit). This
module holds the schedule alone and imports nothing of the pipeline. With ``k`` candidates
the race costs about ``2 k steps``; :func:`rung_steps` sizes ``steps`` so that this is
``race_budget`` of the chosen run's steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from experiments.config.metrics import objective_mode
from experiments.finetune.strategies import FinetuneStrategy

log = logging.getLogger(__name__)

#: a rung's epochs (at most): schedules in epochs (lp_ft's probe, gradual's thawing) keep their shape
RUNG_EPOCHS = 4


@dataclass
class Trial:
    """One candidate's training in one rung."""

    strategy: str
    keys: dict[str, Any]
    rung: int
    epochs: int
    steps: int
    score: float
    seconds: float


@dataclass
class RaceResult:
    """Every trial, the winner, and what the race cost."""

    objective: str
    winner: str
    trials: list[Trial] = field(default_factory=list)
    budget_steps: int = 0
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"objective": self.objective, "winner": self.winner, "budget_steps": self.budget_steps,
                "steps": sum(t.steps for t in self.trials), "seconds": round(self.seconds, 2),
                "trials": [{**asdict(t), "score": round(t.score, 4), "seconds": round(t.seconds, 2)} for t in self.trials]}

    def lines(self) -> list[str]:
        out = [f"  race ({self.objective} on the validation split, successive halving; "
               f"{sum(t.steps for t in self.trials)} steps of a {self.budget_steps}-step budget, {self.seconds:.0f}s):"]
        for t in self.trials:
            keys = ", ".join(f"{k}={v}" for k, v in t.keys.items())
            out.append(f"    rung {t.rung}: {t.strategy}{f' ({keys})' if keys else ''}: {t.score:.4f} "
                       f"after {t.steps} steps")
        out.append(f"  race winner: {self.winner}")
        return out


def rung_steps(run_steps: int, candidates: int, fraction: float) -> int:
    """First-rung steps per candidate so that the race (``k`` trials of ``s`` steps, then ``ceil(k/2)``
    of ``2 s``) spends at most ``fraction`` of the run's ``run_steps``."""
    trials = candidates + 2 * -(-candidates // 2)
    return max(1, int(fraction * run_steps / trials))


def trial_shape(steps: int, batches_per_epoch: int) -> tuple[int, int]:
    """``(epochs, batches per epoch)`` that make about ``steps`` steps: RUNG_EPOCHS epochs of part of
    the split when it is large, as many epochs of the whole split as it takes when it is small."""
    per_epoch = min(batches_per_epoch, -(-steps // RUNG_EPOCHS))
    return max(2, -(-steps // per_epoch)), per_epoch  # two epochs at least: lp_ft's probe, then the rest


#: trains one candidate: ``(strategy name, epochs, batches per epoch) -> (score, strategy trained)``
TrialRunner = Callable[[str, int, int], tuple[float, FinetuneStrategy]]


def race(candidates: list[str], run_trial: TrialRunner, objective: str, run_steps: int, batches_per_epoch: int,
         fraction: float) -> RaceResult:
    """Race ``candidates`` (the prior first) on ``objective``; ``run_trial`` trains one for a trial
    and returns its score. Returns every trial and the winner."""
    sign = -1.0 if objective_mode(objective) == "min" else 1.0
    start = time.perf_counter()
    result = RaceResult(objective, candidates[0], budget_steps=int(fraction * run_steps))
    steps = rung_steps(run_steps, len(candidates), fraction)
    alive = list(candidates)
    for rung in (1, 2):
        epochs, batches = trial_shape(steps, batches_per_epoch)
        scores = {}
        for name in alive:
            began = time.perf_counter()
            score, strategy = run_trial(name, epochs, batches)
            keys = {k: v for k, v in asdict(strategy).items() if k in _own_keys(strategy)}
            result.trials.append(Trial(name, keys, rung, epochs, epochs * batches, score, time.perf_counter() - began))
            log.info("finetune=auto race, rung %d: %s %s=%.4f after %d steps", rung, name, objective, score, epochs * batches)
            scores[name] = sign * score
        ranked = sorted(alive, key=lambda n: -scores[n])  # stable: ties keep the earlier (prior first)
        alive = ranked[: max(1, -(-len(alive) // 2))] if rung == 1 else ranked[:1]
        steps = 2 * epochs * batches  # twice what the first rung made
    result.winner = alive[0]
    result.seconds = time.perf_counter() - start
    return result


def _own_keys(strategy: FinetuneStrategy) -> set[str]:
    """The keys that make a strategy what it is (n_blocks, probe_epochs, ...), not the shared ones."""
    shared = set(asdict(FinetuneStrategy()))
    return set(asdict(strategy)) - shared - {"head_fit"}
