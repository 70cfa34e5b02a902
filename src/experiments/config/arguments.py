"""The questions every validation asks, answered once: is a config value a number, an integer
(YAML's ``true`` is neither), and which keyword arguments a callable takes. No heavy imports: the
config layer uses it before torch is loaded."""

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


def accepted_arguments(target: Any) -> list[str] | None:
    """The keyword arguments ``target`` (a class or function) takes; None when it takes any. A
    class whose ``__init__`` passes ``**kwargs`` on is read through its bases' ``__init__``."""
    names: list[str] = []
    for owner in target.__mro__ if isinstance(target, type) else (target,):
        init = owner.__dict__.get("__init__") if isinstance(target, type) else owner
        if init is None:
            continue
        params = inspect.signature(init).parameters
        names += [name for name, p in params.items() if name not in ("self", "params")
                  and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return list(dict.fromkeys(names))
    return None


def unknown_argument(key: str, node: Any, also: tuple[str, ...] = ()) -> str | None:
    """The message for the first key of ``node`` (a ``_target_`` config at ``key``) that its target
    does not take (``+optimizer.momentum`` on AdamW), naming the keys it does take; None if none."""
    from hydra.utils import get_object

    try:
        target = get_object(str(node["_target_"]))
    except Exception:  # a target that cannot be imported: instantiating it says so, with its key
        return None
    takes = accepted_arguments(target)
    if takes is None:
        return None
    group = "augment" if key.endswith("device_augment") else key.split(".")[0]
    for name in node:
        if not str(name).startswith("_") and name not in takes and name not in also:
            return (f"{key}.{name} is not an argument of {node['_target_']} (it takes: {', '.join([*takes, *also])}); "
                    f"remove it (~{key}.{name}) or choose another {group} that has it"
                    + (" (optimizer=sgd)" if name == "momentum" else ""))
    return None
