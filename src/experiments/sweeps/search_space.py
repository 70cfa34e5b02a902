"""A sweep's search space in Hydra's sweep syntax, as Optuna distributions.

``hydra.sweeper.params`` and the command line use Hydra's own override grammar, parsed by Hydra's
``OverridesParser``:

* ``choice(a, b, c)`` (or ``a,b,c``) -> ``CategoricalDistribution``;
* ``interval(lo, hi)`` -> ``FloatDistribution``; ``tag(int, interval(lo, hi))`` -> ``IntDistribution``;
* ``range(start, stop[, step])`` -> ``IntDistribution`` over Hydra's values (``stop`` excluded, as
  in a basic sweep); a float range -> its values as a ``CategoricalDistribution``;
* ``tag(log, ...)``: a log scale (an interval, or a range of step 1);
* a plain value: fixed, passed to every trial.

A command-line entry replaces the params entry of the same key. Optuna is imported only here,
when a sweep starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from experiments.errors import ConfigError

#: the tags the space reads (Hydra's ``tag(...)``); any other tag is refused
TAGS = ("log", "int")


@dataclass
class SearchSpace:
    """What every trial gets: the searched keys as distributions, and the fixed overrides.

    ``written`` keeps each searched key as its override wrote it (``+key``, ``group@package``), so
    a sampled value goes back to Hydra as the override it came from.
    """

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    written: dict[str, str] = field(default_factory=dict)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """One trial's overrides: the fixed ones, then ``key=value`` for each sampled value."""
        return [*self.fixed, *(f"{self.written.get(k, k)}={_override_text(v)}" for k, v in params.items())]


def parse_search_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> SearchSpace:
    """The space of ``hydra.sweeper.params`` (key -> sweep expression or value) with the command
    line's ``arguments`` on top (a key given on both: the command line's). ConfigError for an
    expression Optuna cannot search, naming the key."""
    parser = OverridesParser.create()
    entries = [f"{key}={value}" for key, value in (params or {}).items()]
    by_key: dict[str, Override] = {}
    for override in [*parser.parse_overrides(entries), *parser.parse_overrides(list(arguments))]:
        by_key.pop(override.key_or_group, None)  # the later entry's place, as Hydra orders them
        by_key[override.key_or_group] = override
    space = SearchSpace()
    for key, override in by_key.items():
        if override.is_sweep_override():
            space.distributions[key] = distribution(override)
            space.written[key] = override.get_key_element()
        else:
            space.fixed.append(override.input_line or f"{override.get_key_element()}={override.get_value_element_as_str()}")
    return space


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (see the module's list)."""
    key, sweep = override.key_or_group, override.value()
    tags = set(getattr(sweep, "tags", ()))
    unknown = sorted(tags - set(TAGS))
    if unknown:
        raise ConfigError(f"{key}: tag {', '.join(unknown)} is not one the Optuna sweeper reads; use tag(log, ...) "
                          "for a log scale or tag(int, interval(...)) for integers")
    log = "log" in tags
    if override.is_interval_sweep():
        low, high = sweep.start, sweep.end
        if "int" in tags:
            if low != int(low) or high != int(high):
                raise ConfigError(f"{key}=tag(int, interval({low}, {high})): integer bounds needed")
            return IntDistribution(int(low), int(high), log=log)
        _check_log(key, log, low)
        return FloatDistribution(float(low), float(high), log=log)
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    if not values:
        raise ConfigError(f"{key}: the sweep {override.input_line} has no values; give it at least one")
    if override.is_range_sweep() and not sweep.shuffle and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        step = abs(int(sweep.step))
        if log and step != 1:
            raise ConfigError(f"{key}: tag(log, range(...)) needs step 1 (Optuna's log scale has no step); got {step}")
        _check_log(key, log, min(values))
        return IntDistribution(min(values), max(values), step=step if not log else 1, log=log)
    if log:
        raise ConfigError(f"{key}: tag(log, ...) applies to an interval or an integer range, not to {override.input_line}")
    return CategoricalDistribution([_categorical(v) for v in values])


def _check_log(key: str, log: bool, low: float) -> None:
    if log and low <= 0:
        raise ConfigError(f"{key}: tag(log, ...) needs a lower bound > 0, got {low}; use a positive bound or drop log")


def _categorical(value: Any) -> Any:
    """A choice as Optuna stores it: a primitive stays, a list or dict is its override text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _override_text(value: Any) -> str:
    """A sampled value as Hydra reads it back: a float keeps all its digits, a bool is lower case."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)
