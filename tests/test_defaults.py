"""One home for each default: where a class used outside Hydra has Python defaults, they equal
the yaml's (the yaml is what a run gets; the Python default is what a test or a notebook gets)."""

from __future__ import annotations

import inspect

import pytest
from conftest import CONF, compose_cfg
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

#: groups whose options instantiate the framework's own classes
GROUPS = ("adapt", "finetune", "data", "module")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def differing_defaults(node: DictConfig) -> dict[str, tuple]:
    """``key: (yaml value, Python default)`` for every key of ``node`` whose ``_target_``'s
    signature gives a different default (keys without a Python default are the yaml's alone)."""
    target = get_object(node._target_)
    signature = inspect.signature(target)
    values = OmegaConf.to_container(node, resolve=False)
    out = {}
    for key, value in values.items():
        if key.startswith("_") or key not in signature.parameters or isinstance(value, (dict, list)):
            continue
        default = signature.parameters[key].default
        if default is inspect.Parameter.empty or (isinstance(value, str) and "${" in value):
            continue
        if value != default:
            out[key] = (value, default)
    return out


@pytest.mark.parametrize("group", GROUPS)
def test_python_defaults_equal_the_yaml(tmp_path, group):
    """Several options may share a class (``data=text`` and its presets ``bbc_news``,
    ``rotten_tomatoes``): then one of them, the generic one, must hold the Python defaults."""
    by_target: dict[str, dict[str, dict]] = {}
    for option in options(group):
        node = compose_cfg(tmp_path, f"{group}={option}", "data=da_pair" if group == "adapt" else "seed=0")
        node = OmegaConf.select(node, group)
        if not isinstance(node, DictConfig) or "_target_" not in node or node._target_ == "???":
            continue
        by_target.setdefault(node._target_, {})[option] = differing_defaults(node)
    assert by_target
    mismatches = {target: found for target, found in by_target.items() if all(found.values())}
    assert not mismatches, f"yaml value vs Python default, per class and option: {mismatches}"
