"""Module surgery shared by the model factory (the head swapped for ``nn.Identity``) and the
adapters (a merged layer put back in place of its adapter)."""

from __future__ import annotations

from torch import nn


def replace_module(net: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Swap the sub-module at ``path`` (dotted) for ``new``; returns the old one."""
    parent_path, _, attr = path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    old = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    if attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)
    return old
