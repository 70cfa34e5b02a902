"""The classification LightningModule: loss, metrics and optimizer groups around any TransferModel.

The Trainer owns the engineering (device, precision, loop, eval mode, no_grad); this module holds
the science. Train, validation and test share one step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from experiments.config.domains import is_domain_pair
from experiments.errors import ConfigError, TrainingError
from experiments.finetune.callback import FinetuneCallback
from experiments.finetune.groups import build_param_groups
from experiments.finetune.strategies import FinetuneStrategy
from experiments.models.core import TransferModel
from experiments.config.arguments import accepted_kwargs

STAGES = ("train", "val", "test")
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class ClassificationModule(L.LightningModule):
    """Cross-entropy classification of a :class:`TransferModel`.

    Args:
        model: the network (backbone + head).
        num_classes: number of classes (sizes the metrics).
        optimizer: a Hydra ``_partial_`` optimizer; its ``lr`` is the head's base learning rate.
        finetune: the fine-tuning strategy; it splits parameters into named learning-rate groups.
        scheduler: a ``_partial_`` LR scheduler taking the optimizer, or None.
        scheduler_interval: ``epoch`` or ``step``.
        max_epochs: the run's epochs (the strategy's schedule spans them).
        label_smoothing: cross-entropy label smoothing.
        compile: compile the model's forward with ``torch.compile`` (in place, so checkpoints
            keep the eager model's keys); the cached-feature path runs the head eagerly.
        channels_last: hold image weights and batches in the NHWC layout (tensor cores prefer it).
        no_decay_1d: no weight decay on 1-D parameters (biases, norm weights, as timm, fastai and
            the Hugging Face Trainer do); false: every parameter decays (the run's record says which).
    """

    def __init__(
        self,
        model: TransferModel,
        num_classes: int,
        optimizer: OptimizerFactory,
        finetune: FinetuneStrategy,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        max_epochs: int = 1,
        label_smoothing: float = 0.0,
        compile: bool = False,
        channels_last: bool = False,
        no_decay_1d: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.compile_model = compile
        self.channels_last = channels_last
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.finetune = finetune
        self.max_epochs = max_epochs
        self.label_smoothing = label_smoothing
        self.no_decay_1d = bool(no_decay_1d)
        self._batches_are_features = False
        self._add_streams(num_classes, {s: f"{s}/" for s in STAGES})
        #: applies the strategy (freezing, BatchNorm modes, stage learning rates); it comes with
        #: the module (configure_callbacks), so every Trainer.fit of it trains as the strategy says
        self.finetune_callback = FinetuneCallback(finetune, self.base_lr)

    def _add_streams(self, num_classes: int, prefixes: dict[str, str]) -> None:
        """An accuracy and a loss accumulator per stream (``train``, ``val``, ...); a stream's
        values are logged as ``<prefix>acc`` and ``<prefix>loss``."""
        # No per-step checks that wait for the device: torchmetrics' argument validation reads the
        # targets back (torch.unique) and MeanMetric's default NaN handling branches on isnan(x).any()
        # every update, a host sync per step on a GPU. The labels are the data module's (checked by
        # its contract), and a NaN loss propagates into the epoch's mean, where _check_finite stops
        # the run (the "warn" strategy would have dropped it silently).
        metrics = MetricCollection({"acc": MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)})
        # keys avoid "train": nn.Module.train is a method and ModuleDict keys become attributes
        self.metrics = nn.ModuleDict({f"{s}_metrics": metrics.clone(prefix=p) for s, p in prefixes.items()})
        self.losses = nn.ModuleDict({f"{s}_loss": MeanMetric(nan_strategy="disable") for s in prefixes})

    def running_loss(self) -> torch.Tensor | None:
        """The mean training loss of the epoch so far, in this process (read from the accumulator's
        state, without the cross-process sync its ``compute`` does); None before the first step.
        A live progress bar reads it every few steps."""
        stream = self.losses["train_loss"]
        return stream.mean_value / stream.weight if stream.update_count else None

    def epoch_metrics(self) -> set[str]:
        """Names of the metrics logged every training epoch (what an objective may select on):
        ``<prefix>acc`` and ``<prefix>loss`` of each training and validation stream."""
        prefixes = {m.prefix for key, m in self.metrics.items() if not key.startswith("test")}
        return {f"{p}{name}" for p in prefixes for name in ("acc", "loss")} | {"val/acc", "val/loss"}

    def configure_model(self) -> None:
        """Lightning calls this before every stage: the compile and layout options, applied once."""
        if self.compile_model and getattr(self.model, "_compiled_call_impl", None) is None:
            self.model.compile()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def to_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in NHWC when ``channels_last`` is on and it is an image batch. Done here, not in
        ``on_after_batch_transfer``: a module's override of that hook would silence the data
        module's (where augmentation on the device runs)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @property
    def base_lr(self) -> float:
        return float(getattr(self.optimizer_factory, "keywords", {}).get("lr", 1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.to_layout(x))

    def check_data(self, datamodule: Any) -> None:
        """Raise ConfigError when ``datamodule`` cannot train this module (called before fit)."""
        name = getattr(datamodule, "name", type(datamodule).__name__)
        if is_domain_pair(datamodule):
            raise ConfigError(f"data={name} holds a source and a target domain but adapt is null: choose a "
                              "method, e.g. adapt=dann (adapt=source_only for the baseline)")
        if not getattr(datamodule, "has_labels", True):
            raise ConfigError(f"data={name} has no labels (no class folders): it can only be the target of "
                              "a domain adaptation (data=da_folders data.target.root=DIR adapt=dann)")

    def read_cached_features(self, enabled: bool) -> None:
        """Batches hold backbone features (the head alone runs) or inputs (the whole model).

        Switched by the feature cache (:mod:`experiments.finetune.cache`) around cached epochs.
        """
        self._batches_are_features = enabled

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of one batch; the stage's loss and metrics accumulate."""
        x, y = batch
        logits = self.model.forward_head(x) if self._batches_are_features else self(x)
        loss = self.classification_loss(logits, y)
        self._accumulate(stage, logits, y, loss)
        return loss, logits

    def classification_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def _accumulate(self, stage: str, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        # Accumulated in torchmetrics and logged once per epoch (see _log_epoch): a self.log call
        # costs ~1 ms per step in Lightning, which dominated short epochs.
        self.metrics[f"{stage}_metrics"].update(logits.detach(), y)
        self.losses[f"{stage}_loss"].update(loss.detach(), weight=len(y))

    def _log_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        """Log the epoch's loss and metrics (synced across processes by torchmetrics), then reset;
        returns what was logged (nothing when the stream saw no batch)."""
        metrics, loss = self.metrics[f"{stage}_metrics"], self.losses[f"{stage}_loss"]
        logged = {}
        if loss.update_count:
            logged = {f"{metrics.prefix}loss": loss.compute(), **metrics.compute()}
            self.log_dict(logged, prog_bar=not stage.startswith("train"))
        metrics.reset()
        loss.reset()
        return logged

    def on_train_epoch_end(self) -> None:
        self._check_finite(self._log_epoch("train"))

    def _check_finite(self, logged: dict[str, torch.Tensor]) -> None:
        """Stop a run whose training loss became NaN or infinite, with the fix; checked once per
        epoch on the accumulated mean (a per-step check would cost a host sync every step)."""
        for key, value in logged.items():
            if key.endswith("loss") and not torch.isfinite(value):
                raise TrainingError(
                    f"{key} became {value.item()} in epoch {self.current_epoch} (by step {self.global_step}); "
                    f"lower optimizer.lr (now {self.base_lr:g}) or set trainer.gradient_clip_val=1.0. "
                    "Checkpoints of the epochs before are kept"
                )

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")[0]

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")[0]

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Loss and predicted classes: test-time callbacks (confusion matrix, samples) read them."""
        loss, logits = self._shared_step(batch, "test")
        return {"loss": loss, "predictions": logits.argmax(dim=-1)}

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.softmax(self(x), dim=-1)

    def param_groups(self) -> list[dict[str, Any]]:
        return build_param_groups(self.model, self.finetune, self.base_lr, self.max_epochs, self.no_decay_1d)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Every group the optimizer steps: the model's (:meth:`param_groups`, the record's count)."""
        return self.param_groups()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.optimizer_groups())
        if self.scheduler_factory is None:
            return optimizer
        # a schedule over the run's steps is completed here, where the Trainer knows them
        steps = accepted_kwargs(self.scheduler_factory, total_steps=int(self.trainer.estimated_stepping_batches))
        scheduler = self.scheduler_factory(optimizer, **steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}

    def configure_callbacks(self) -> list[L.Callback]:
        """What training this module correctly needs, whoever builds the Trainer: the strategy."""
        return [self.finetune_callback]
