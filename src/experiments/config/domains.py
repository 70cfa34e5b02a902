"""Two domains (domain adaptation), answered in one place: their names, in the order of a pair's
loaders and config keys, and whether a data module is a pair. No heavy imports: the config
layer reads it too."""

from __future__ import annotations

from typing import Any

#: a pair's domains: config keys (``data.source``, ``data.target``) and the order of its
#: validation and test loaders
DOMAINS = ("source", "target")


def is_domain_pair(datamodule: Any) -> bool:
    """True for a data module that holds a source and a target domain (``data=da_pair``,
    ``data=da_folders``: :class:`~experiments.datamodules.domain_pair.DomainPairDataModule`)."""
    return bool(getattr(datamodule, "is_domain_pair", False))
