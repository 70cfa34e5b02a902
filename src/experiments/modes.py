"""The modes besides ``train``: evaluate or predict from a checkpoint, check the environment, list
models. ``cli.main`` dispatches here after validation; every mode gets ``(cfg, run_dir)`` and
returns the results record (None when it records nothing).

Test and predict rebuild data, model and module from the config exactly as training does (the
checkpoint holds weights and state, not the model's construction: see
:mod:`experiments.from_checkpoint`), then run under the Trainer, which owns eval mode, no_grad,
device and precision. Checkpoints load with ``weights_only=True``: no code from the file runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from experiments.errors import ConfigError
from experiments.from_checkpoint import checkpoint_file

log = logging.getLogger(__name__)

Record = dict[str, Any]


def evaluate(cfg: DictConfig, run_dir: Path) -> Record:
    """``mode=test``: validation and test metrics of the checkpoint, as the training run reports them."""
    from experiments.train import build_components, build_trainer, log_config, run_facts

    start, ckpt = time.time(), checkpoint_file(cfg)
    _, datamodule, model, module = build_components(cfg)
    trainer = build_trainer(cfg, [])
    log_config(trainer, cfg)
    val = trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
    test = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
    return {
        "status": "ok",
        "mode": "test",
        "metrics": {k: float(v) for k, v in {**val[0], **test[0]}.items()},
        **run_facts(model, module, datamodule),
        "checkpoint": str(ckpt),
        "wall_time_s": time.time() - start,
    }


def predict(cfg: DictConfig, run_dir: Path) -> Record:
    """``mode=predict``: ``predictions.csv`` in the run dir for the data's predict split."""
    from experiments.reporting.predictions import PREDICTIONS_FILE, PredictionsCsvWriter
    from experiments.train import build_components, build_trainer, run_facts

    start, ckpt = time.time(), checkpoint_file(cfg)
    _, datamodule, model, module = build_components(cfg)
    writer = PredictionsCsvWriter(run_dir / PREDICTIONS_FILE, datamodule.class_names())
    trainer = build_trainer(cfg, [writer])
    if trainer.world_size > 1:
        raise ConfigError(
            f"mode=predict writes one file from one process; trainer.devices={cfg.trainer.devices} "
            f"starts {trainer.world_size}: use trainer=cpu or trainer=gpu (one device)"
        )
    trainer.predict(module, datamodule=datamodule, ckpt_path=ckpt, return_predictions=False, weights_only=True)
    log.info("predictions: %d rows -> %s", writer.rows, writer.path)
    return {
        "status": "ok",
        "mode": "predict",
        "predictions": str(writer.path),
        "num_predictions": writer.rows,
        **run_facts(model, module, datamodule),
        "checkpoint": str(ckpt),
        "wall_time_s": time.time() - start,
    }


def check_environment(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=env``: versions, CUDA build vs GPUs, MPS, CPU threads and a verdict, on stdout."""
    from experiments.env import format_report, inspect_environment

    print(format_report(inspect_environment()), flush=True)


def list_models(cfg: DictConfig, run_dir: Path) -> None:
    """``mode=models``: the configured family's model names (``model.name`` may hold wildcards)."""
    from experiments.models.listing import list_models as print_models

    print_models(cfg)


_MODES: dict[str, Callable[[DictConfig, Path], Record | None]] = {
    "test": evaluate,
    "predict": predict,
    "env": check_environment,
    "models": list_models,
}


def run_mode(cfg: DictConfig, run_dir: Path) -> Record | None:
    """Run ``cfg.mode`` (any mode but ``train``); the record for results.json, or None."""
    return _MODES[cfg.mode](cfg, run_dir)
