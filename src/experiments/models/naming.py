"""Name look-ups shared by the model families."""

from __future__ import annotations

import difflib
import fnmatch


def closest_names(name: str, available: list[str], n: int = 5) -> list[str]:
    """The ``n`` names most like ``name`` (substring matches first, then difflib's ratio)."""
    lowered = name.lower()
    contains = [a for a in available if lowered in a.lower()]
    close = difflib.get_close_matches(lowered, available, n=n, cutoff=0.5)
    ordered = list(dict.fromkeys(close + contains))
    return ordered[:n]


def filter_names(available: list[str], pattern: str | None) -> list[str]:
    """Names matching a shell-style ``pattern`` (``*convnext*``); all of them when None."""
    if not pattern:
        return list(available)
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    return [a for a in available if fnmatch.fnmatch(a.lower(), pattern.lower())]
