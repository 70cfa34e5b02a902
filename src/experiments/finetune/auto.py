"""``finetune=auto`` as a resolver: measure, decide a prior, confirm it by a race, return a strategy.

1. :func:`experiments.finetune.measure.measure`: labels per class, BatchNorm shift, linear probe
   (training and validation splits only);
2. :func:`experiments.finetune.decide.decide`: the guidance table's cell and its strategy, the
   **prior**, with keys from the measurements and the reason;
3. with ``finetune.confirm=true``, :func:`experiments.finetune.race.race`: the prior against its
   neighbours on the labelled data, successive halving, within ``finetune.race_budget`` of the run;
4. the winner is composed from its own ``conf/finetune/<name>.yaml`` (one home for its defaults)
   plus the keys auto derived or was given, and the run trains it as if it had been named.

:class:`AutoChoice` holds all of it: the console report, TensorBoard text and results.json's
``finetune_detail.auto``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from experiments.config.compose import CONF
from experiments.datamodules.base import ClassificationDataModule
from experiments.finetune.decide import Advice, decide, keys_for, unsuitable_warning
from experiments.finetune.race import RaceResult, race
from experiments.finetune.strategies import Auto, FinetuneStrategy
from experiments.models.core import TransferModel

log = logging.getLogger(__name__)


def strategy_from_config(name: str, keys: dict[str, Any], conf_dir: Path = CONF) -> FinetuneStrategy:
    """``conf/finetune/<name>.yaml`` with ``keys`` merged over it, instantiated: a strategy chosen by
    auto gets exactly the defaults ``finetune=<name>`` gets."""
    from hydra.utils import instantiate

    node = OmegaConf.merge(OmegaConf.load(conf_dir / "finetune" / f"{name}.yaml"), keys)
    return instantiate(node)


@dataclass
class AutoChoice:
    """The prior, the race (None: not run, and why), the strategy that trains and why."""

    prior: Advice
    strategy: FinetuneStrategy
    keys: dict[str, Any]
    race: RaceResult | None
    reason: str
    measure_seconds: float
    warning: str | None = None  # the different/small cell's, naming the strategy that trains

    def record(self) -> dict[str, Any]:
        """``finetune_detail.auto`` of results.json."""
        return {**self.prior.record(), "prior": self.prior.strategy, "prior_keys": self.prior.given_keys,
                "strategy": self.strategy.name, "keys": self.keys, "confirm": self.race is not None,
                "race": self.race.record() if self.race else None, "reason": self.reason,
                "prior_reason": self.prior.reason, "measure_seconds": round(self.measure_seconds, 2),
                **({"warning": self.warning} if self.warning else {})}

    def report(self, with_warning: bool = True) -> str:
        """Prior and race, for the console and TensorBoard."""
        lines = self.prior.report(with_warning=False).splitlines()
        lines[0] = lines[0].replace("finetune=auto ->", "finetune=auto prior:", 1)
        if self.race is not None:
            lines += self.race.lines()
        keys = ", ".join(f"{k}={v}" for k, v in self.keys.items())
        lines.append(f"finetune=auto -> {self.strategy.name}{f' ({keys})' if keys else ''}: {self.reason}")
        if self.warning and with_warning:
            lines.append(f"  WARNING: {self.warning}")
        return "\n".join(lines)


def resolve(cfg: DictConfig, auto: Auto, datamodule: ClassificationDataModule, model: TransferModel) -> AutoChoice:
    """The strategy ``finetune=auto`` trains on this run: measured, decided, confirmed."""
    from experiments.pipeline.build import steps_per_epoch
    from experiments.finetune.measure import measure

    start = time.perf_counter()
    measured = measure(auto, datamodule, model, cfg.trainer)
    measure_seconds = time.perf_counter() - start
    max_epochs = int(cfg.trainer.max_epochs)
    prior = decide(measured, auto, max_epochs)

    def keys(name: str, epochs: int) -> dict[str, Any]:
        own = prior.keys if name == prior.strategy and epochs == max_epochs else keys_for(name, measured, auto, epochs)[0]
        if name == "partial" and name != prior.strategy and own["n_blocks"] >= len(measured.blocks) > 1:
            own = {"n_blocks": len(measured.blocks) - 1}  # as a neighbour, partial stops short of full
        shared = {} if name == "scratch" else prior.shared_keys
        return {**shared, **own}

    candidates = list(dict.fromkeys([prior.strategy, *dict(auto.neighbours).get(prior.strategy, [])]))
    if not auto.confirm or not measured.pretrained or len(candidates) < 2:
        why = ("finetune.confirm=false: the prior trains" if not auto.confirm else
               "random init: nothing to race, scratch trains" if not measured.pretrained else
               f"finetune.neighbours has no alternative to {prior.strategy}")
        chosen = keys(prior.strategy, max_epochs)
        choice = AutoChoice(prior, strategy_from_config(prior.strategy, chosen), chosen, None, why, measure_seconds)
    else:
        per_epoch = steps_per_epoch(cfg.trainer, datamodule)
        result = race(cfg, candidates, lambda name, epochs: strategy_from_config(name, keys(name, epochs)),
                      max_epochs * per_epoch, per_epoch, float(auto.race_budget))
        winner = result.winner
        final = keys(winner, max_epochs)
        if winner == prior.strategy:
            why = f"the race confirmed the prior ({winner} scored best of {len(candidates)})"
        else:
            best = {t.strategy: t.score for t in result.trials if t.rung == 2}
            why = (f"the race overruled the prior: {winner} {best.get(winner, float('nan')):.4f} against "
                   f"{prior.strategy} {best.get(prior.strategy, float('nan')):.4f} ({result.objective})"
                   if prior.strategy in best else
                   f"the race overruled the prior: {prior.strategy} did not reach the second rung; {winner} won it")
        choice = AutoChoice(prior, strategy_from_config(winner, final), final, result, why, measure_seconds)
    if prior.warning:
        trained = choice.strategy.name
        choice.warning = prior.warning if trained == prior.strategy else \
            unsuitable_warning(measured, auto, trained, "the race's winner over the prior")
    for line in choice.report(with_warning=False).splitlines():
        log.info(line)
    if choice.warning:
        log.warning("finetune=auto: %s", choice.warning)
    return choice


def log_choice_text(trainer: L.Trainer, choice: AutoChoice) -> None:
    """The analysis as TensorBoard text (``finetune/auto``), beside the run's curves."""
    from experiments.reporting.sinks import log_text

    log_text(trainer, "finetune/auto", choice.report())
