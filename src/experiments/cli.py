"""What ``run.py`` calls: validate (cheap), dispatch the mode, record the result, report errors.

Heavy modules are imported inside the mode functions, after validation.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.config import validate
from experiments.errors import ExperimentError
from experiments.results import write_results

log = logging.getLogger("experiments")


def _hydra_context() -> tuple[Path, bool, list[str]]:
    """Run dir, whether this is a multirun job, and the job's overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    return (
        Path(hydra_cfg.runtime.output_dir),
        hydra_cfg.mode == RunMode.MULTIRUN,
        list(hydra_cfg.overrides.task),
    )


def main(cfg: DictConfig) -> float | None:
    """Run one job; returns the objective (for sweepers) or None when the job failed."""
    run_dir, multirun, overrides = _hydra_context()
    start = time.time()
    record: dict[str, Any] = {
        "status": "failed",
        "model": OmegaConf.select(cfg, "model.name", default="?"),
        "finetune": OmegaConf.select(cfg, "finetune.name", default="?"),
        "overrides": overrides,
        "run_dir": str(run_dir),
    }
    try:
        validate(cfg)
        if cfg.mode != "train":
            from experiments.modes import run_mode

            return run_mode(cfg, run_dir)
        from experiments.train import train

        record.update(train(cfg, run_dir))
    except Exception as err:  # recorded, reported once, then a non-zero exit (or the next job)
        record.update(error=f"{type(err).__name__}: {err}", wall_time_s=time.time() - start)
        write_results(run_dir, record)
        report_error(err)
        if multirun:
            return None
        sys.exit(1)
    record["overrides"], record["run_dir"] = overrides, str(run_dir)
    write_results(run_dir, record)
    metrics = record["metrics"]
    log.info(
        "done: test/acc %.4f, val/acc %.4f, %d epochs in %.1fs; run dir %s",
        metrics.get("test/acc", float("nan")), metrics.get("val/acc", float("nan")),
        record["epochs"], record["wall_time_s"], run_dir,
    )
    return metrics.get(cfg.objective)


def report_error(err: BaseException) -> None:
    """One paragraph for our own errors; the traceback for anything unexpected (a bug)."""
    import os

    if isinstance(err, ExperimentError) and not os.environ.get("HYDRA_FULL_ERROR"):
        log.error("error: %s", err)
        print(f"error: {err}", file=sys.stderr)
    else:
        log.error("run failed:\n%s", "".join(traceback.format_exception(err)))
