"""What each ``mode=`` does, one function per mode in one table (:data:`TASKS`).

The job wrapper (:func:`experiments.pipeline.job.run`) validates the config, calls
``TASKS[cfg.mode](cfg, job)`` and owns the record around it (start time, run dir, overrides,
failures). A task returns an :class:`Outcome`: its part of the record and the objects it built
(Trainer, components), so tests, benchmarks and the race reuse a run instead of wiring their own
(None: nothing to record). Heavy imports happen inside the tasks, after validation. ``finetune=auto``
is resolved into the strategy it chooses before anything is built
(:func:`experiments.pipeline.auto.resolve_finetune`).

Test and predict rebuild data, model and module from the config exactly as training does (the
checkpoint holds weights and state, not the model's construction: see
:mod:`experiments.pipeline.from_checkpoint`). Checkpoints load with ``weights_only=True``: no code from the
file runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from experiments.errors import ConfigError
from experiments.pipeline.from_checkpoint import checkpoint_file
from experiments.pipeline.context import Job

if TYPE_CHECKING:  # for the annotations only: the tasks import the heavy modules in their bodies
    import lightning as L

    from experiments.pipeline.build import Components

log = logging.getLogger(__name__)

Record = dict[str, Any]


@dataclass
class Outcome:
    """What a task did: its part of the record, and what it built (None where it built none)."""

    record: Record
    parts: Components | None = None
    trainer: L.Trainer | None = None


def _job(job: Job | None, cfg: DictConfig) -> Job:
    """The job a task runs in; a task called directly (a test, a benchmark) runs in its run dir."""
    return job if job is not None else Job(Path(cfg.paths.run_dir))


def components_checked_against(cfg: DictConfig, ckpt: str | Path | None):
    """The run's components (``build_components``), checked to fit ``ckpt`` before any Trainer
    exists: an unreadable, refused or misfitting checkpoint leaves the run dir untouched."""
    from experiments.pipeline.build import build_components
    from experiments.checkpoints import check_matches, read_checkpoint

    state = read_checkpoint(ckpt) if ckpt else None  # cheap (memory-mapped), before the data loads
    parts = build_components(cfg)
    if state is not None:
        check_matches(state, parts.module, ckpt, parts.model.info.name)
    return parts


def train(cfg: DictConfig, job: Job | None = None, callbacks: Sequence[Any] = ()) -> Outcome:
    """``mode=train``: resolve ``finetune=auto``, fit (resuming from ``ckpt_path`` when given),
    then validate and test the best checkpoint. ``callbacks`` join the configured ones
    (benchmarks time epochs so)."""
    from experiments.pipeline.auto import resolve_finetune
    from experiments.pipeline.build import evaluate, run_facts
    from experiments.pipeline.fit import fit
    from experiments.reporting.hparams import RunConfigText

    job = _job(job, cfg)
    cfg, choice = resolve_finetune(cfg, job.searchpath)
    parts = components_checked_against(cfg, cfg.get("ckpt_path"))
    texts = {"finetune/auto": choice.report()} if choice is not None else {}  # auto's reason beside the curves
    fitted = fit(cfg, parts, [RunConfigText(cfg, job.overrides, texts), *callbacks], ckpt_path=cfg.get("ckpt_path"))
    trainer = fitted.trainer
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    optimizer = trainer.optimizers[0] if trainer.optimizers else None
    record = {
        "metrics": evaluate(trainer, parts, best),
        **run_facts(parts),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "best_checkpoint": best,
        "finetune_detail": {
            **parts.module.finetune_callback.summary(parts.model, optimizer),  # the module brings it
            "feature_cache": fitted.cache.record(),
            "no_decay_1d": bool(getattr(parts.module, "no_decay_1d", False)),  # the weight-decay rule that applied
            **({"auto": choice.record()} if choice is not None else {}),
        },
    }
    return Outcome(record, parts, trainer)


def advise(cfg: DictConfig, job: Job | None = None) -> Outcome:
    """``mode=advise``: finetune=auto's analysis (labels per class, domain shift, linear probe, the
    cell and the strategy it would train, and why) on the console and in the record; no training.

    Uses ``finetune=auto``'s keys when that is the configured strategy, its defaults otherwise.
    """
    import copy

    from omegaconf import open_dict

    from experiments.config.compose import compose_option
    from experiments.pipeline.auto import is_auto, resolve_finetune
    from experiments.pipeline.build import build_components, run_facts

    job = _job(job, cfg)
    if not is_auto(cfg.finetune):
        log.info("mode=advise: finetune=%s ignored, analysing with finetune=auto's defaults", cfg.finetune.name)
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            cfg.finetune = compose_option("finetune", "auto", job.searchpath)
    cfg, choice = resolve_finetune(cfg, job.searchpath)
    parts = build_components(cfg)
    return Outcome({**run_facts(parts), "finetune_detail": {"auto": choice.record()}}, parts)


def evaluate_checkpoint(cfg: DictConfig, job: Job | None = None) -> Outcome:
    """``mode=test``: validation and test metrics of ``ckpt_path``, as the training run reports them."""
    from experiments.pipeline.build import build_trainer, evaluate, run_facts
    from experiments.reporting.hparams import RunConfigText

    job = _job(job, cfg)
    ckpt = checkpoint_file(cfg)
    parts = components_checked_against(cfg, ckpt)
    trainer = build_trainer(cfg, [RunConfigText(cfg, job.overrides)])
    record = {"metrics": evaluate(trainer, parts, str(ckpt)), **run_facts(parts), "checkpoint": str(ckpt)}
    return Outcome(record, parts, trainer)


def predict(cfg: DictConfig, job: Job | None = None) -> Outcome:
    """``mode=predict``: ``predictions.csv`` in the run dir, for the data's test split or, with
    ``predict.inputs=PATH``, for new files prepared as the checkpoint's run prepared its data (then
    also ``predictions.png``, the first images with their predictions). Bad paths are refused before
    the model is built; an undecodable file is a row with its error."""
    from experiments.pipeline.build import build_trainer, run_facts
    from experiments.datamodules.inputs import find_inputs

    ckpt = checkpoint_file(cfg)
    inputs = OmegaConf.select(cfg, "predict.inputs", default=None)
    files = find_inputs(str(inputs), _input_kind(cfg)) if inputs else None
    parts = components_checked_against(cfg, ckpt)
    writer, loader = _prediction_writer(cfg, parts, files)
    trainer = build_trainer(cfg, [writer])
    if trainer.world_size > 1:
        raise ConfigError(
            f"mode=predict writes one file from one process; trainer.devices={cfg.trainer.devices} "
            f"starts {trainer.world_size}: use trainer=cpu or trainer=gpu (one device)"
        )
    data = {"dataloaders": loader} if loader is not None else {"datamodule": parts.datamodule}
    trainer.predict(parts.module, **data, ckpt_path=ckpt, return_predictions=False, weights_only=True)
    log.info("predictions: %d rows -> %s", writer.predicted, writer.path)
    record = {"predictions": str(writer.path), "num_predictions": writer.predicted, **run_facts(parts),
              "checkpoint": str(ckpt)}
    if files is not None:
        record.update(_input_report(trainer, writer, parts.datamodule))
    return Outcome(record, parts, trainer)


def export(cfg: DictConfig, job: Job | None = None) -> Outcome:
    """``mode=export``: ``ckpt_path``'s model as ONNX, TorchScript or safetensors in the run dir
    (``<run>/export/<time>/``), checked against PyTorch on test batches (:mod:`experiments.export`)."""
    from experiments.pipeline.build import run_facts
    from experiments.export import export_model

    ckpt = checkpoint_file(cfg)
    parts = components_checked_against(cfg, ckpt)
    return Outcome({"export": export_model(cfg, parts, ckpt), **run_facts(parts), "checkpoint": str(ckpt)}, parts)


def _input_kind(cfg: DictConfig) -> str:
    """What the run's data feeds its model (``image``, ``text``, ``vectors``), from its class alone."""
    from hydra.utils import get_object

    return getattr(get_object(str(cfg.data._target_)), "input_kind", "paired domains")


def _prediction_writer(cfg: DictConfig, parts, files: list[Path] | None):
    """The CSV writer, and the loader of ``files`` (None: the data's own predict split)."""
    from experiments.datamodules.inputs import input_dataset
    from experiments.reporting.predictions import PREDICTIONS_FILE, PredictionsWriter

    path = Path(cfg.paths.run_dir) / PREDICTIONS_FILE
    class_names = parts.datamodule.class_names()
    if files is None:
        return PredictionsWriter(path, class_names, top_k=cfg.predict.top_k), None
    dataset, names, collate = input_dataset(parts.datamodule, files)
    writer = PredictionsWriter(path, class_names, names, cfg.predict.top_k, cfg.predict.grid)
    return writer, parts.datamodule.make_loader(dataset, train=False, collate_fn=collate)


def _input_report(trainer, writer, datamodule) -> Record:
    """The picture of the first images (a PNG beside the CSV, and in the loggers), the warning
    about undecodable files, and their part of the record."""
    from experiments.reporting.sinks import log_figures

    if writer.errors:
        log.warning("%d of %d inputs could not be decoded: their rows in %s say why", writer.errors, writer.rows, writer.path)
    report: Record = {"num_undecodable": writer.errors}
    figure = writer.figure(datamodule.input_shape[0]) if datamodule.input_kind == "image" else None
    if figure is not None:
        picture = writer.path.with_suffix(".png")
        figure.savefig(picture, dpi=100)
        log_figures(trainer, {"predict/samples": figure})
        report["predictions_figure"] = str(picture)
    return report


def check_environment(cfg: DictConfig, job: Job | None = None) -> None:
    """``mode=env``: versions, CUDA build vs GPUs, MPS, CPU threads and a verdict, on stdout."""
    from experiments.env import format_report, inspect_environment

    print(format_report(inspect_environment()), flush=True)


def list_models(cfg: DictConfig, job: Job | None = None) -> None:
    """``mode=models``: the configured family's model names (``model.name`` may hold wildcards)."""
    from experiments.models.listing import print_models

    print_models(cfg)


Task = Callable[[DictConfig, Job], Outcome | None]

TASKS: dict[str, Task] = {
    "train": train,
    "test": evaluate_checkpoint,
    "predict": predict,
    "export": export,
    "advise": advise,
    "env": check_environment,
    "models": list_models,
}
