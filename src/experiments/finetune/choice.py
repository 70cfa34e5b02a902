"""What ``finetune=auto`` chose and why (:class:`AutoChoice`), and the chosen strategy's config.

The resolver (:mod:`experiments.pipeline.auto`) measures, decides a prior, races; this module
holds its outcome for the console report, TensorBoard text and results.json's
``finetune_detail.auto``, and composes a chosen strategy from its own ``finetune/<name>.yaml``
through Hydra's search path (so a strategy added with ``hydra.searchpath`` can be chosen too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.config.compose import compose_option
from experiments.finetune.decide import Advice
from experiments.finetune.race import RaceResult
from experiments.finetune.strategies import FinetuneStrategy


def strategy_config(name: str, keys: dict[str, Any], searchpath: Sequence[str] = ()) -> DictConfig:
    """``finetune/<name>.yaml`` as Hydra composes ``finetune=<name>`` (the repository's ``conf/``,
    then ``searchpath``), with ``keys`` merged over it: a strategy chosen by auto gets exactly the
    defaults ``finetune=<name>`` gets."""
    node = OmegaConf.merge(compose_option("finetune", name, searchpath), keys)
    assert isinstance(node, DictConfig)
    return node


def strategy_from_config(name: str, keys: dict[str, Any], searchpath: Sequence[str] = ()) -> FinetuneStrategy:
    """:func:`strategy_config`, instantiated."""
    from hydra.utils import instantiate

    return instantiate(strategy_config(name, keys, searchpath))


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
    #: the chosen strategy's config (its yaml and ``keys``): what ``finetune`` becomes in the run
    config: DictConfig | None = None

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
