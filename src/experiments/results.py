"""results.json: the flat, machine-readable record of one run (see docs/results.md)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_results(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``record`` atomically (a crash never leaves a half-written file)."""
    path = Path(run_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(record), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RESULTS_FILE).read_text())
