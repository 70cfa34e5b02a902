"""Numbers as summaries show them: rounded to what they mean, not to the float's 17 digits."""

from __future__ import annotations

import math
from typing import Any

#: significant digits of a metric in every summary (results.json keeps the full value)
DIGITS = 4


def significant(value: Any, digits: int = DIGITS, zeros: bool = True) -> str:
    """``value`` with ``digits`` significant digits (``0.9852``, ``0.001235``, ``1.235e+05``), trailing
    zeros kept unless ``zeros=False`` (``0.6000`` or ``0.6``); an int as it is, None as ``""``, NaN
    and infinities by name, anything else as its text."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:{'#' if zeros else ''}.{digits}g}".rstrip(".").replace(".e", "e")


def mean_spread(mean: float, spread: float, digits: int = DIGITS) -> str:
    """``0.6000 +- 0.1000``: the mean to ``digits`` significant digits, the spread to the same
    decimal place (a spread finer than the mean's last digit means nothing)."""
    text = significant(mean, digits)
    if "e" in text or "." not in text:
        return f"{text} +- {significant(spread, 2)}"
    return f"{text} +- {spread:.{len(text.split('.')[1])}f}"


def as_number(text: str) -> str:
    """An override's value with a float to :data:`DIGITS` significant digits (``0.00046568046`` ->
    ``0.0004657``, ``1e-05`` stays): a value drawn, not measured, so no trailing zeros; any other
    text as it is."""
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value) or text.strip().lstrip("+-").isdigit():
        return text
    return significant(value, zeros=False)
