"""The two questions every validation asks, answered once: is a config value a number, an
integer (YAML's ``true`` is neither), and which keyword arguments a callable takes. No heavy
imports: the config layer uses it before torch is loaded."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    """An int, not a bool (YAML's ``true`` is not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def accepted_kwargs(fn: Callable[..., Any], through_kwargs: bool = True, **offered: Any) -> dict[str, Any]:
    """The subset of ``offered`` that ``fn``'s signature names; with ``through_kwargs`` all of them
    when it takes ``**kwargs`` (a user's module), without it only the named ones (a family builder
    that forwards ``**kwargs`` to a constructor that would refuse them). A ``functools.partial``
    (a Hydra ``_partial_``) is read through to its function."""
    params = inspect.signature(getattr(fn, "func", fn)).parameters
    if through_kwargs and any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return offered
    return {k: v for k, v in offered.items() if k in params}
