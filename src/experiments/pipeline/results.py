"""results.json: the flat, machine-readable record of one run (see docs/results.md)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from experiments.atomic import atomic_output
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
    with atomic_output(path, "the run's record") as tmp:
        tmp.write_text(json.dumps(_jsonable(record), indent=2, sort_keys=False) + "\n")
    return path


def read_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RESULTS_FILE).read_text())


#: called once with the written record and its path, then forgotten: trackers that opened a run
#: for this job (an MLflow run) attach results.json and close the run with the job's outcome
_record_listeners: list[Callable[[dict[str, Any], Path], None]] = []


def on_record_written(listener: Callable[[dict[str, Any], Path], None]) -> None:
    """Call ``listener(record, path)`` after this process writes its next record."""
    _record_listeners.append(listener)


def notify_record_written(record: dict[str, Any], path: Path) -> None:
    """Hand the written record to every waiting listener (in order), then forget them."""
    listeners = list(_record_listeners)
    _record_listeners.clear()
    for listener in listeners:
        listener(record, path)
