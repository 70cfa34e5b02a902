"""``finetune=auto``'s confirmation: a race among candidate strategies, budgeted by what they cost.

The prior (the guidance table's cell) can be wrong on data it was not calibrated on, so before the
run trains, the prior and its neighbours train on the run's own labelled data and are scored on
its validation split (few-shot runs: limited to as many labels per class as training has). The
test split is never read. Candidates differ in cost by orders of magnitude, so the race spends by
cost, not by count:

1. **Frozen candidates first** (``classifier_only``: the backbone never trains, so the head fits
   on features computed once): each trains the run's whole schedule, nearly free, and its score is
   the one the run would get. The best is the *incumbent*.
2. **Nothing left to win**: when the incumbent is within a point of the objective's best possible
   value (an accuracy of 1), no backbone candidate trains.
3. **Backbone candidates** share ``fraction`` of what the prior's run costs, in optimizer steps
   (a backbone prior: its steps; a frozen prior: its feature extraction, a forward pass over the
   data, so challengers of a cheap prior get a cheap budget, none at all on small data), by
   successive halving:
   each trains ``s`` steps (scratch: ``steps_mult`` times more, counted so: its own budget, not the
   run's), the better half trains again from the same start for twice as many. When the prior is
   the frozen incumbent, the backbone candidates stop after the first rung if none is within its
   noise: the cheap prior stands without paying for a second rung (a backbone prior always gets
   its second rung: a few steps are no verdict on a strategy that trains the backbone).
4. **A close finish** (the top two within the noise of the validation split: the binomial standard
   error of the difference of two accuracies on ``val_size`` samples) trains both again with a
   second seed; the mean of the two seeds decides, and when the means are still within the noise
   of a mean the prior stays (it is one of the two), else the cheaper wins (a frozen candidate
   over a backbone one): the race overrules the prior only on evidence. The budget keeps room for
   the second seeds.

Ties keep the earlier candidate (the prior first). Each trial is trained by the function the
resolver hands in (:func:`experiments.pipeline.auto.trial_score`: built like the run itself,
seeded, fresh weights, fitted by the run's one fit). This module holds the schedule alone and
imports nothing of the pipeline.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from experiments.config.metrics import best_possible, is_proportion, objective_mode
from experiments.finetune.strategies import FinetuneStrategy

log = logging.getLogger(__name__)

#: a rung's epochs (at most): schedules in epochs (lp_ft's probe, gradual's thawing) keep their shape
RUNG_EPOCHS = 4
#: a forward pass over a batch against a training step on it (forward, backward, update): about a
#: third, the usual accounting of a step's FLOPs; what a frozen candidate's feature extraction costs
FORWARD_SHARE = 1 / 3
#: the shortest backbone trial worth running (two epochs of a batch: lp_ft's probe, then the rest)
MIN_TRIAL_STEPS = 2
#: a score this close to the objective's best possible value leaves nothing to race for (the
#: strategy table's own tolerance: within 1 point of the best)
NOTHING_TO_WIN = 0.01


@dataclass(frozen=True)
class Candidate:
    """A strategy in the race: whether it is frozen (trains no backbone parameter in the whole run)
    and its budget against the run's (``steps_mult``: scratch converges later than fine-tuning)."""

    name: str
    frozen: bool = False
    steps_mult: float = 1.0
    #: a frozen candidate's whole run in backbone-step equivalents (its feature extraction: one
    #: forward pass over the training and validation batches, about a third of a training step
    #: each); None: ``steps_mult`` times the run's steps
    run_cost: float | None = None

    def cost(self, run_steps: int) -> float:
        """What this candidate's run costs, in backbone optimizer steps."""
        return self.run_cost if self.run_cost is not None else run_steps * self.steps_mult


@dataclass
class Trial:
    """One candidate's training in one rung (0: the frozen candidates' whole schedule)."""

    strategy: str
    keys: dict[str, Any]
    rung: int
    epochs: int
    steps: int
    score: float
    seconds: float
    seed: int = 0  # offset from the run's seed: 1 is a close finish's second seed
    backbone_steps: int = 0  # steps in which backbone parameters train (the race's budget counts these)


@dataclass
class RaceResult:
    """Every trial, the winner, what the race cost and why it stopped where it did."""

    objective: str
    winner: str
    trials: list[Trial] = field(default_factory=list)
    budget_steps: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def backbone_steps(self) -> int:
        return sum(t.backbone_steps for t in self.trials)

    def record(self) -> dict[str, Any]:
        frozen = sum(t.seconds for t in self.trials if t.backbone_steps == 0)
        return {"objective": self.objective, "winner": self.winner, "budget_steps": self.budget_steps,
                "steps": sum(t.steps for t in self.trials), "backbone_steps": self.backbone_steps,
                "seconds": round(self.seconds, 2), "frozen_seconds": round(frozen, 2),
                "backbone_seconds": round(self.seconds - frozen, 2), "notes": list(self.notes),
                "trials": [{**asdict(t), "score": round(t.score, 4), "seconds": round(t.seconds, 2)} for t in self.trials]}

    def lines(self) -> list[str]:
        out = [f"  race ({self.objective} on the validation split, budgeted by cost; {self.backbone_steps} backbone "
               f"steps of a {self.budget_steps}-step budget, {self.seconds:.0f}s):"]
        for t in self.trials:
            keys = ", ".join(f"{k}={v}" for k, v in t.keys.items())
            what = "whole schedule, frozen backbone" if t.rung == 0 else f"rung {t.rung}"
            seed = f", seed +{t.seed}" if t.seed else ""
            out.append(f"    {what}: {t.strategy}{f' ({keys})' if keys else ''}: {t.score:.4f} "
                       f"after {t.steps} steps{seed} ({t.seconds:.1f}s)")
        out += [f"    {note}" for note in self.notes]
        out.append(f"  race winner: {self.winner}")
        return out


def rung_steps(run_steps: int, mults: Sequence[float], fraction: float) -> int:
    """First-rung steps ``s`` of a backbone candidate (times its ``steps_mult``) so that the rungs
    (every candidate ``s``, the better half ``2 s``) and a close finish's second seeds (two more of
    ``2 s``) spend at most ``fraction`` of the run's ``run_steps``."""
    if not mults:
        return 0
    ordered = sorted(mults, reverse=True)
    top_two = ordered[:2] if len(ordered) > 1 else ordered * 2
    units = sum(ordered) + 2 * sum(ordered[: -(-len(ordered) // 2)]) + 2 * sum(top_two)
    return max(1, int(fraction * run_steps / units))


def trial_shape(steps: int, batches_per_epoch: int) -> tuple[int, int]:
    """``(epochs, batches per epoch)`` that make at most ``steps`` steps (two epochs at least):
    RUNG_EPOCHS epochs of part of the split when it is large, as many epochs of the whole split as
    fit when it is small."""
    per_epoch = max(1, min(batches_per_epoch, steps // RUNG_EPOCHS))
    return max(2, steps // per_epoch), per_epoch  # two epochs at least: lp_ft's probe, then the rest


def noise(a: float, b: float, val_size: int, objective: str) -> float:
    """The standard error of the difference of two scores on ``val_size`` validation samples: binomial
    for a proportion (accuracy, error); 0 (unknown) for any other objective."""
    if not is_proportion(objective) or val_size < 1:
        return 0.0
    clip = [min(max(x, 0.0), 1.0) for x in (a, b)]
    return math.sqrt(sum(p * (1 - p) for p in clip) / val_size)


#: trains one candidate: ``(strategy name, epochs, batches per epoch, seed offset) -> (score, strategy trained)``
TrialRunner = Callable[[str, int, int, int], tuple[float, FinetuneStrategy]]


class _Race:
    """One race's state: the trials so far and each candidate's score (mean over its seeds)."""

    def __init__(self, run_trial: TrialRunner, objective: str, result: RaceResult) -> None:
        self.run_trial, self.objective, self.result = run_trial, objective, result
        self.sign = -1.0 if objective_mode(objective) == "min" else 1.0
        self.scores: dict[str, list[float]] = {}

    def trial(self, c: Candidate, rung: int, epochs: int, batches: int, seed: int = 0) -> float:
        began = time.perf_counter()
        score, strategy = self.run_trial(c.name, epochs, batches, seed)
        steps = epochs * batches
        keys = {k: v for k, v in asdict(strategy).items() if k in _own_keys(strategy)}
        self.result.trials.append(Trial(c.name, keys, rung, epochs, steps, score, time.perf_counter() - began, seed,
                                        0 if c.frozen else steps))
        log.info("finetune=auto race, %s: %s %s=%.4f after %d steps", f"rung {rung}" if rung else "frozen",
                 c.name, self.objective, score, steps)
        if seed == 0:
            self.scores[c.name] = [score]
        else:
            self.scores[c.name].append(score)
        return score

    def score(self, name: str) -> float:
        return sum(self.scores[name]) / len(self.scores[name])

    def ranked(self, names: Sequence[str]) -> list[str]:
        return sorted(names, key=lambda n: -self.sign * self.score(n))  # stable: ties keep the earlier

    def ahead(self, a: str, b: str) -> float:
        """How far ``a`` is ahead of ``b`` (positive: better), in the objective's units."""
        return self.sign * (self.score(a) - self.score(b))


def race(candidates: Sequence[Candidate], run_trial: TrialRunner, objective: str, run_steps: int,
         batches_per_epoch: int, fraction: float, val_size: int = 0) -> RaceResult:
    """Race ``candidates`` (the prior first) on ``objective``, spending by cost (see the module's
    docstring); ``run_trial`` trains one for a trial and returns its score. ``run_steps`` is the
    run's optimizer steps (``batches_per_epoch`` of them an epoch); ``val_size`` the validation
    samples a score is measured on. Returns every trial and the winner."""
    start = time.perf_counter()
    # the budget follows what the prior's own run costs: a frozen prior's challengers get a fraction
    # of its feature extraction, a backbone prior's a fraction of its training
    budget = fraction * candidates[0].cost(run_steps)
    result = RaceResult(objective, candidates[0].name, budget_steps=int(budget))
    state = _Race(run_trial, objective, result)
    by_name = {c.name: c for c in candidates}
    prior = candidates[0].name
    frozen = [c for c in candidates if c.frozen]
    backbone = [c for c in candidates if not c.frozen]
    s = rung_steps(int(budget), [c.steps_mult for c in backbone], 1.0)
    if backbone and s < MIN_TRIAL_STEPS:
        result.notes.append(f"the prior {prior}'s run costs about {candidates[0].cost(run_steps):.0f} backbone steps: its "
                            f"challengers' budget ({budget:.0f} steps) buys no trial of {MIN_TRIAL_STEPS} steps, so "
                            f"{', '.join(c.name for c in backbone)} did not race")
        backbone = []
    raced = [c.name for c in (*frozen, *backbone)]
    if prior not in raced or len(raced) < 2:  # nothing the prior could be compared with: it trains as decided
        result.winner = prior
        result.seconds = time.perf_counter() - start
        return result
    run_epochs = -(-run_steps // batches_per_epoch)
    for c in frozen:  # nearly free: the whole schedule on cached features
        state.trial(c, 0, run_epochs, batches_per_epoch)
    finalists = state.ranked([c.name for c in frozen])
    incumbent = finalists[0] if finalists else None
    bound = best_possible(objective)
    if incumbent and backbone and bound is not None and abs(bound - state.score(incumbent)) < NOTHING_TO_WIN:
        result.notes.append(f"{incumbent} scored {state.score(incumbent):.4f}, within {NOTHING_TO_WIN} of the best "
                            f"possible {bound:g}: no backbone candidate trains")
        backbone = []
    if backbone:
        made: dict[str, int] = {}
        alive = [c.name for c in backbone]
        for rung in (1, 2):
            for name in alive:  # rung 2: twice what the candidate made in rung 1
                steps = 2 * made[name] if rung == 2 else max(1, round(s * by_name[name].steps_mult))
                epochs, batches = trial_shape(steps, batches_per_epoch)
                state.trial(by_name[name], rung, epochs, batches)
                made[name] = epochs * batches
            ranked = state.ranked(alive)
            if rung == 1 and incumbent == prior and state.ahead(ranked[0], incumbent) < -noise(
                    state.score(ranked[0]), state.score(incumbent), val_size, objective):
                result.notes.append(f"after rung 1 no backbone candidate is within the noise of {incumbent} "
                                    f"(best: {ranked[0]} {state.score(ranked[0]):.4f}): the second rung is skipped")
                alive = []
                break
            alive = ranked[: max(1, -(-len(alive) // 2))] if rung == 1 else ranked
        finalists = state.ranked(finalists + alive)
    if len(finalists) > 1:
        first, second = finalists[:2]
        gap = state.ahead(first, second)
        within = noise(state.score(first), state.score(second), val_size, objective)
        if gap <= within:
            result.notes.append(f"{first} and {second} finished {gap:.4f} apart, within the noise ({within:.4f} on "
                                f"{val_size} validation samples): both trained a second seed, the mean decides")
            for name in (first, second):
                last = next(t for t in reversed(result.trials) if t.strategy == name)
                state.trial(by_name[name], last.rung, last.epochs, last.steps // last.epochs, seed=1)
            finalists = state.ranked(finalists)
            first, second = finalists[:2]
            within = noise(state.score(first), state.score(second), val_size, objective) / math.sqrt(2)
            keep = prior if prior in (first, second) else min((first, second), key=lambda n: _cost(by_name[n]))
            if state.ahead(first, second) <= within and keep == second:
                why = "the prior stays" if keep == prior else "the cheaper one wins"
                result.notes.append(f"over two seeds {first} leads {second} by {state.ahead(first, second):.4f}, "
                                    f"within the noise of the mean ({within:.4f}): {why}, {second}")
                finalists = [second, first, *finalists[2:]]
    result.winner = finalists[0] if finalists else candidates[0].name
    result.seconds = time.perf_counter() - start
    return result


def _cost(c: Candidate) -> float:
    """A candidate's cost rank: a frozen one is nearly free; a backbone one costs its budget."""
    return 0.0 if c.frozen else c.steps_mult


def _own_keys(strategy: FinetuneStrategy) -> set[str]:
    """The keys that make a strategy what it is (n_blocks, probe_epochs, ...), not the shared ones."""
    shared = set(asdict(FinetuneStrategy()))
    return set(asdict(strategy)) - shared - {"head_fit"}
