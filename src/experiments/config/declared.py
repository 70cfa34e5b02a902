"""Keys declared once, next to the class that takes them, and checked before torch is imported.

A class that a config option instantiates (an ``adapt=`` method, a data module, the device
augmentation) declares its keys' rules in a class attribute::

    class DANN(AdaptationMethod):
        KEYS = {"loss_weight": Number(low=0), "hidden": Integer(low=1), "dropout": Number(low=0, high=1, high_open=True)}

Two readers, one declaration:

* before torch: :func:`declared_keys` reads ``KEYS`` from the class's *source* (Python's ``ast``),
  without importing its module (which imports torch), following its base classes through their
  imports; :func:`problems_of` checks a config node against them. ``config.rules.validate`` runs
  it on every option node with a ``_target_``, so a new method's new key is checked with no edit
  here or in the rule table;
* at construction: :func:`check_arguments` checks the same rules on the constructor's arguments
  (a test or a script that builds the class directly gets the same message).

Only the rule classes below may appear in a ``KEYS`` literal, with literal arguments.
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config.arguments import is_integer, is_number

#: the name of the class attribute that holds the declarations
KEYS_ATTRIBUTE = "KEYS"


@dataclass(frozen=True)
class Number:
    """A number (not a bool) within ``[low, high]``; ``*_open`` excludes the bound; ``null`` allows None."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    null: bool = False
    kind: str = "a number"

    def _typed(self, value: Any) -> bool:
        return is_number(value)

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.null
        if not self._typed(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    @property
    def allowed(self) -> str:
        if self.low is not None and self.high is not None:
            bounds = f" in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            bounds = f" {'>' if self.low_open else '>='} {self.low}"
        elif self.high is not None:
            bounds = f" {'<' if self.high_open else '<='} {self.high}"
        else:
            bounds = ""
        return f"{'null or ' if self.null else ''}{self.kind}{bounds}"


@dataclass(frozen=True)
class Integer(Number):
    """An integer (not a bool) within the bounds; ``words`` are literal strings also allowed (``all``)."""

    kind: str = "an integer"
    words: tuple[str, ...] = ()

    def _typed(self, value: Any) -> bool:
        return is_integer(value)

    def ok(self, value: Any) -> bool:
        return value in self.words or super().ok(value)

    @property
    def allowed(self) -> str:
        return super().allowed + "".join(f" or {w}" for w in self.words)


@dataclass(frozen=True)
class Flag:
    """``true`` or ``false`` (YAML booleans: ``adapt.adabn=off`` must not turn AdaBN on)."""

    allowed: str = "true or false"

    def ok(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class OneOf:
    """One of ``values``."""

    values: tuple[Any, ...] = ()

    def ok(self, value: Any) -> bool:
        # strict on booleans: 0 == False and 1 == True in Python, but 0 is not the flag false
        return any(value is v if isinstance(v, bool) or v is None else
                   (not isinstance(value, bool) and value == v) for v in self.values)

    @property
    def allowed(self) -> str:
        spelled = {True: "true", False: "false", None: "null"}  # as they are written in YAML and overrides
        return f"one of {', '.join(spelled[v] if v is None or isinstance(v, bool) else str(v) for v in self.values)}"


@dataclass(frozen=True)
class Interval:
    """Null or ``[low, high]`` with ``lo <= low <= high <= hi`` (a random range: scale, translate)."""

    lo: float = 0.0
    hi: float = 1.0
    example: str = ""

    def ok(self, value: Any) -> bool:
        if value is None:
            return True
        items = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig" else None
        return items is not None and len(items) == 2 and all(is_number(x) for x in items) and \
            self.lo <= items[0] <= items[1] <= self.hi

    @property
    def allowed(self) -> str:
        return f"null or [low, high] with {self.lo} <= low <= high <= {self.hi}" + (f" (e.g. {{key}}=[{self.example}])" if self.example else "")


Rule = Number | Integer | Flag | OneOf | Interval
RULES: dict[str, type] = {cls.__name__: cls for cls in (Number, Integer, Flag, OneOf, Interval)}


def problem(key: str, rule: Rule, value: Any) -> str | None:
    """``<key>=<value> is invalid: expected <allowed>`` when ``value`` breaks ``rule`` (an example
    in ``allowed`` names the key as ``{key}``)."""
    return None if rule.ok(value) else f"{key}={value!r} is invalid: expected {rule.allowed.replace('{key}', key)}"


# -- at construction ---------------------------------------------------------------------------
def keys_of_class(cls: type) -> dict[str, Rule]:
    """The declarations of ``cls`` and its bases (a subclass's win)."""
    merged: dict[str, Rule] = {}
    for owner in reversed(cls.__mro__):
        merged.update(owner.__dict__.get(KEYS_ATTRIBUTE, {}))
    return merged


def checked_init(init: Callable[..., None], cls: type, prefix: str, error: type[Exception]) -> Callable[..., None]:
    """``init`` that first checks its bound arguments against ``cls``'s declared keys, raising
    ``error`` with ``<prefix>.<key>=<value> is invalid: expected ...``."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        rules = keys_of_class(type(self))
        found = [p for k, v in bound.arguments.items() if k in rules and (p := problem(f"{prefix}.{k}", rules[k], v))]
        if found:
            raise error("; ".join(found))
        init(self, *args, **kwargs)

    wrapper.__wrapped_checked__ = True  # type: ignore[attr-defined]
    return wrapper


# -- before torch: read from the source ------------------------------------------------------------
def _module_file(module: str) -> Path | None:
    """The source file of ``module`` found by walking its packages' paths, executing nothing
    (``importlib.util.find_spec`` would import the parent packages)."""
    if module in sys.modules and getattr(sys.modules[module], "__file__", None):
        return Path(sys.modules[module].__file__)
    path: list[str] | None = None
    spec = None
    parts = module.split(".")
    for i in range(len(parts)):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), path)
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or [])
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


@functools.lru_cache(maxsize=256)
def _parsed(module: str) -> ast.Module | None:
    file = _module_file(module)
    if file is None or not file.is_file() or file.stat().st_size > 500_000:
        return None
    return ast.parse(file.read_text(encoding="utf-8"), str(file))


def _rule_from_ast(node: ast.expr) -> Rule | None:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RULES):
        return None
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    except ValueError:
        return None
    cls = RULES[node.func.id]
    return cls(tuple(args), **kwargs) if cls is OneOf and args else cls(*args, **kwargs)


def _imports(tree: ast.Module, module: str) -> dict[str, tuple[str, str]]:
    """``local name -> (module, name)`` of the module's ``from X import Y`` statements."""
    out: dict[str, tuple[str, str]] = {}
    package = module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: max(0, len(package.split(".")) - node.level + 1)]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                out[alias.asname or alias.name] = (base, alias.name)
    return out


@functools.lru_cache(maxsize=256)
def _declared(module: str, name: str, depth: int = 0) -> tuple[tuple[str, Rule], ...]:
    tree = _parsed(module)
    if tree is None or depth > 8:
        return ()
    imports = _imports(tree, module)
    if name in imports and not any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
        return _declared(*imports[name], depth + 1)  # re-exported (a package's __init__)
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        return ()
    merged: dict[str, Rule] = {}
    for base in cls.bases:
        base_name = base.id if isinstance(base, ast.Name) else None
        if base_name and base_name in imports:
            merged.update(_declared(*imports[base_name], depth + 1))
        elif base_name:
            merged.update(_declared(module, base_name, depth + 1))
    for stmt in cls.body:
        target = stmt.target if isinstance(stmt, ast.AnnAssign) else stmt.targets[0] if isinstance(stmt, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id == KEYS_ATTRIBUTE and isinstance(stmt.value, ast.Dict):
            for key, value in zip(stmt.value.keys, stmt.value.values):
                rule = _rule_from_ast(value)
                if isinstance(key, ast.Constant) and rule is not None:
                    merged[str(key.value)] = rule
    return tuple(merged.items())


def declared_keys(target: str) -> dict[str, Rule]:
    """The keys ``target`` (a ``_target_`` dotted path to a class) declares, read from its source;
    empty when it declares none or its source cannot be read (a compiled or missing module)."""
    module, _, name = str(target).rpartition(".")
    return dict(_declared(module, name)) if module else {}


def problems_of(key: str, node: Mapping[str, Any]) -> list[str]:
    """Every declared key of ``node``'s ``_target_`` whose value in ``node`` breaks its rule."""
    rules = declared_keys(str(node["_target_"]))
    return [p for k, rule in rules.items() if k in node and (p := problem(f"{key}.{k}", rule, node[k]))]
