"""Files shipped inside installed Python distributions (weights, corpora), found without importing them."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def locate(distribution: str, path: str) -> Path | None:
    """Where ``path`` (relative to site-packages, as the distribution installs it) lies, or None when
    ``distribution`` is not installed. The path may not exist; the package's code is never imported."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(dist.locate_file(path))
