"""Keys of the field's classes that config options instantiate (the Lightning Trainer, its callbacks
and loggers), declared here because their sources declare none: checked before torch like the
keys our own classes declare (:mod:`experiments.config.declared`). Booleans are booleans
(``callbacks.model_checkpoint.save_last=off`` must not mean true), counts are counts and modes
are ``min`` or ``max``, so a typo is one line before the first epoch, not a traceback after it."""

from __future__ import annotations

from experiments.config.declared import Flag, Integer, Number, OneOf, Rule

_MODE = OneOf(("min", "max"))
_MAYBE_FLAG = OneOf((None, True, False))

LIBRARY_KEYS: dict[str, dict[str, Rule]] = {
    "lightning.pytorch.Trainer": {
        "max_epochs": Integer(low=1), "min_epochs": Integer(low=0, null=True),
        "log_every_n_steps": Integer(low=1), "check_val_every_n_epoch": Integer(low=1, null=True),
        "accumulate_grad_batches": Integer(low=1), "gradient_clip_val": Number(low=0, null=True),
        "enable_progress_bar": Flag(), "enable_model_summary": Flag(), "enable_checkpointing": Flag(),
        "deterministic": OneOf((True, False, "warn")), "benchmark": _MAYBE_FLAG, "inference_mode": Flag(),
        "detect_anomaly": Flag(), "barebones": Flag(), "sync_batchnorm": Flag(), "num_sanity_val_steps": Integer(low=-1),
        "use_distributed_sampler": Flag(), "num_nodes": Integer(low=1),
    },
    "lightning.pytorch.callbacks.EarlyStopping": {
        "min_delta": Number(low=0), "patience": Integer(low=0), "mode": _MODE, "verbose": Flag(), "strict": Flag(),
        "check_finite": Flag(), "stopping_threshold": Number(null=True), "divergence_threshold": Number(null=True),
        "check_on_train_epoch_end": _MAYBE_FLAG, "log_rank_zero_only": Flag(),
    },
    "lightning.pytorch.callbacks.ModelCheckpoint": {
        "verbose": Flag(), "save_last": OneOf((None, True, False, "link")), "save_top_k": Integer(low=-1),
        "save_on_exception": Flag(), "save_weights_only": Flag(), "mode": _MODE, "auto_insert_metric_name": Flag(),
        "every_n_train_steps": Integer(low=0, null=True), "every_n_epochs": Integer(low=0, null=True),
        "save_on_train_epoch_end": _MAYBE_FLAG, "enable_version_counter": Flag(),
    },
    "lightning.pytorch.callbacks.LearningRateMonitor": {
        "logging_interval": OneOf((None, "step", "epoch")), "log_momentum": Flag(), "log_weight_decay": Flag(),
    },
    "lightning.pytorch.callbacks.RichProgressBar": {"refresh_rate": Integer(low=0), "leave": Flag()},
    "lightning.pytorch.callbacks.TQDMProgressBar": {"refresh_rate": Integer(low=0), "leave": Flag()},
    "lightning.pytorch.callbacks.RichModelSummary": {"max_depth": Integer(low=-1)},
    "lightning.pytorch.callbacks.ModelSummary": {"max_depth": Integer(low=-1)},
    "lightning.pytorch.loggers.TensorBoardLogger": {"log_graph": Flag(), "default_hp_metric": Flag()},
    "lightning.pytorch.loggers.CSVLogger": {"flush_logs_every_n_steps": Integer(low=1)},
}


def library_keys(target: str) -> dict[str, Rule] | None:
    """The declared keys of a field library's ``target``; None when it is not declared here."""
    return LIBRARY_KEYS.get(str(target))
