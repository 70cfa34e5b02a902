"""``finetune=auto``'s confirmation: a short race among candidate strategies (successive halving).

The prior (the guidance table's cell) can be wrong on data it was not calibrated on, so before the
run trains, the prior and its plausible neighbours each train briefly on the run's own labelled
data and are scored on its validation split (few-shot runs: limited to as many labels per class as
training has). The test split is never read.

Successive halving over two rungs: every candidate trains ``steps`` optimizer steps; the better half
(ties keep the earlier candidate, the prior first) trains again from the same start for twice as
many; the best of that rung wins. Each trial is built like the run itself
(``build.build_components``: seeded, fresh weights, the cached-feature path for frozen
backbones, so frozen candidates cost a feature extraction and a head fit). With ``k`` candidates
the race costs about ``2 k steps``; :func:`rung_steps` sizes ``steps`` so that this is
``race_budget`` of the chosen run's steps.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from omegaconf import DictConfig

from experiments.config.rules import objective_mode
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


def run_trial(cfg: DictConfig, strategy: FinetuneStrategy, epochs: int, batches: int) -> float:
    """Train ``strategy`` as the run would (fresh, seeded), ``epochs`` x ``batches`` steps; the
    objective on the validation split at the end."""
    import lightning as L

    from experiments.pipeline.build import build_components
    from experiments.finetune.cache import FeatureCache

    trial_cfg = copy.deepcopy(cfg)
    trial_cfg.train_steps = None
    trial_cfg.trainer.max_epochs = epochs
    parts = build_components(trial_cfg, strategy)
    cache = FeatureCache(strategy, parts.datamodule, parts.model, trial_cfg.trainer)
    data = cache.fit_datamodule()
    device = {k: trial_cfg.trainer[k] for k in ("accelerator", "precision") if k in trial_cfg.trainer}
    trainer = L.Trainer(**device, devices=1, max_epochs=epochs, limit_train_batches=batches,
                        check_val_every_n_epoch=epochs, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=cache.callbacks(), **cache.trainer_settings())
    trainer.fit(parts.module, datamodule=data)
    return float(trainer.callback_metrics[str(cfg.objective)])


def race(cfg: DictConfig, candidates: list[str], make: Callable[[str, int], FinetuneStrategy],
         run_steps: int, batches_per_epoch: int, fraction: float) -> RaceResult:
    """Race ``candidates`` (the prior first); ``make(name, epochs)`` builds a candidate's strategy
    for a trial of ``epochs`` epochs. Returns every trial and the winner."""
    objective = str(cfg.objective)
    sign = -1.0 if objective_mode(objective) == "min" else 1.0
    start = time.perf_counter()
    result = RaceResult(objective, candidates[0], budget_steps=int(fraction * run_steps))
    steps = rung_steps(run_steps, len(candidates), fraction)
    alive = list(candidates)
    for rung in (1, 2):
        epochs, batches = trial_shape(steps, batches_per_epoch)
        scores = {}
        for name in alive:
            strategy = make(name, epochs)
            began = time.perf_counter()
            score = run_trial(cfg, strategy, epochs, batches)
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
