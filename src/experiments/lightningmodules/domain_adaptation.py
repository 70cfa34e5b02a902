"""The domain-adaptation LightningModule: labelled source, unlabelled target, any ``adapt=`` method.

It is a :class:`ClassificationModule` (same optimizer groups, strategy, cross-entropy, per-epoch
accumulators) whose training step hands a source and a target batch to the method, and whose
validation and test run two loaders, source (dataloader 0) and target (dataloader 1).

Logged per epoch: ``train/loss`` (the total), ``train/source_loss``, ``train/source_acc`` and the
method's scalars (``train/domain_acc``, ``train/dann_lambda``, ``train/consistency``, ...);
``val/source_acc``, ``val/source_loss``, ``val/target_acc``, ``val/target_loss`` and the same under
``test/`` (target metrics only when the target has labels). ``val/acc``, ``val/loss``,
``test/acc`` and ``test/loss`` repeat the SOURCE values, so the default checkpoint objective
(``objective: val/acc``) never looks at a target label. The label-free validators
(:mod:`experiments.adapt.validators`), computed from the target's validation PREDICTIONS only, are
logged as ``val/target_entropy``, ``val/target_im``, ``val/target_snd`` and
``val/target_confident``; each can be the ``objective``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from experiments.adapt.adabn import AdaBNCallback
from experiments.adapt.methods.base import AdaptationMethod, DomainBatch
from experiments.adapt.validators import VALIDATORS, label_free_scores
from experiments.datamodules.domain_pair import as_domain_batch
from experiments.config.domains import DOMAINS, is_domain_pair
from experiments.errors import ConfigError
from experiments.lightningmodules.classification import ClassificationModule, OptimizerFactory, SchedulerFactory
from experiments.finetune.strategies import FinetuneStrategy
from experiments.models.core import TransferModel



class DomainAdaptationModule(ClassificationModule):
    """Adapts a :class:`TransferModel` from a labelled source to a target domain.

    Args:
        model, num_classes, optimizer, finetune, scheduler, scheduler_interval, max_epochs,
            label_smoothing, compile, channels_last: as for :class:`ClassificationModule` (the strategy acts on the model).
        adapt: the method; it is bound to ``model`` here (a discriminator sized from the features,
            a teacher copied from the model), so a checkpoint reloads into a module built the same way.

    Training batches are :class:`DomainBatch` (the domain pair builds them on the device) or
    ``{"source": (x, y), "target": x or (x, y)}`` (a loader given to ``Trainer.fit`` directly);
    target labels are there only for a method that uses them (``adapt.uses_target_labels``).
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
        *,
        adapt: AdaptationMethod,
    ) -> None:
        super().__init__(model, num_classes, optimizer, finetune, scheduler, scheduler_interval, max_epochs,
                         label_smoothing, compile, channels_last, no_decay_1d)
        self.adapt = adapt
        adapt.bind(model)
        prefixes = {"train": "train/source_"}
        prefixes.update({f"{stage}_{domain}": f"{stage}/{domain}_" for stage in ("val", "test") for domain in DOMAINS})
        self._add_streams(num_classes, prefixes)
        # nan_strategy="disable": no isnan(...).any() host sync per step (see ClassificationModule._add_streams)
        self.train_scalars = nn.ModuleDict({name: MeanMetric(nan_strategy="disable") for name in ("loss", *adapt.log_names)})
        self._target_probs: list[torch.Tensor] = []
        self.target_has_labels = True  # until check_data meets the data

    def check_data(self, datamodule: Any) -> None:
        """A source and a target domain are needed; tells the pair whether the target's training
        labels may be read (only for a method that trains on them, the oracle)."""
        name = getattr(datamodule, "name", type(datamodule).__name__)
        if not is_domain_pair(datamodule):
            raise ConfigError(f"adapt={self.adapt.name} needs a source and a target domain but data={name} is one "
                              "data set: use data=da_pair (data.source / data.target) or data=da_folders")
        if self.adapt.uses_target_labels and not datamodule.target_has_labels:
            raise ConfigError(f"adapt={self.adapt.name} trains on target labels but the target {datamodule.target.name} "
                              "has none (no class folders); choose a method that needs no target labels, e.g. adapt=dann")
        missing = set(self.adapt.view_names) - set(getattr(datamodule, "target_views", {}))
        if missing:
            raise ConfigError(f"adapt={self.adapt.name} reads the target views {sorted(missing)} but data={name} "
                              "builds none of them: keep data.target_views: ${adapt.views} (conf/data/da_pair.yaml)")
        datamodule.train_target_labels = self.adapt.uses_target_labels
        self.target_has_labels = datamodule.target_has_labels

    #: metrics of the target's labels: never logged when the target has none
    LABELLED_TARGET_METRICS = ("val/target_acc", "val/target_loss")

    def epoch_metrics(self) -> set[str]:
        logged = (super().epoch_metrics() | {f"train/{name}" for name in self.train_scalars}
                  | {f"val/target_{name}" for name in VALIDATORS})
        return logged if self.target_has_labels else logged - set(self.LABELLED_TARGET_METRICS)

    def unlogged_reason(self, metric: str) -> str | None:
        """Why ``metric`` is not logged by this run, when the reason is the data (None otherwise)."""
        if metric in self.LABELLED_TARGET_METRICS and not self.target_has_labels:
            return (f"{metric} needs the target's labels, but this target has none (no class folders): select on a "
                    "label-free validator (objective=val/target_im, val/target_snd, ...) or on the source "
                    "(objective=val/acc), or give the target class folders")
        return None

    def evaluated_model(self) -> nn.Module:
        """The network validation, test, predict and AdaBN use (the teacher for mean_teacher)."""
        return self.adapt.evaluated(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluated_model()(self.to_layout(x))

    @property
    def progress(self) -> float:
        """Training progress in [0, 1]: optimizer steps taken over the steps of the whole run."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        return min(1.0, self.global_step / total) if total and total != float("inf") else 0.0

    def training_step(self, batch: DomainBatch | dict[str, Any], batch_idx: int) -> torch.Tensor:
        if not isinstance(batch, DomainBatch):
            batch = as_domain_batch(batch)
        batch.source_x = self.to_layout(batch.source_x)
        batch.target = {name: self.to_layout(x) for name, x in batch.target.items()}
        step = self.adapt.training_step(self.model, batch, self.progress, self.classification_loss)
        if step.source_logits is not None:
            source_loss = self.classification_loss(step.source_logits.detach(), batch.source_y)
            self._accumulate("train", step.source_logits, batch.source_y, source_loss)
        self.train_scalars["loss"].update(step.loss.detach(), weight=len(batch.source_y))
        for name, value in step.logs.items():
            self.train_scalars[name].update(value)
        return step.loss

    def on_train_epoch_start(self) -> None:
        self.adapt.on_train_epoch_start(self.model, self.current_epoch)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.adapt.after_optimizer_step(self.model)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        scalars = {f"train/{name}": m.compute() for name, m in self.train_scalars.items() if m.update_count}
        if scalars:
            self.log_dict(scalars)
        for metric in self.train_scalars.values():
            metric.reset()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        if DOMAINS[dataloader_idx] == "target" and not self.target_has_labels:
            # held-out unlabelled target images: predictions for the validators, no loss, no accuracy
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            self._target_probs.append(self(x).detach().float().softmax(dim=-1))
            return None
        loss, logits = self._shared_step(batch, f"val_{DOMAINS[dataloader_idx]}")
        if DOMAINS[dataloader_idx] == "target":  # predictions only: the validators read no label
            self._target_probs.append(logits.detach().float().softmax(dim=-1))
        return loss

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        loss, logits = self._shared_step(batch, f"test_{DOMAINS[dataloader_idx]}")
        return {"loss": loss, "predictions": logits.argmax(dim=-1)}

    def _log_domains(self, stage: str) -> None:
        """Both domains' metrics, then the source's again as ``<stage>/acc`` and ``<stage>/loss``."""
        source = self._log_epoch(f"{stage}_source")
        self._log_epoch(f"{stage}_target")
        if source:
            self.log_dict({f"{stage}/{key}": source[f"{stage}/source_{key}"] for key in ("acc", "loss")})

    def on_validation_epoch_end(self) -> None:
        self._log_domains("val")
        if self._target_probs:
            probs = self.all_gather(torch.cat(self._target_probs)).flatten(0, -2)
            scores = label_free_scores(probs, self.adapt.confidence_threshold)
            self.log_dict({f"val/target_{name}": value for name, value in scores.items()})
        self._target_probs.clear()

    def on_test_epoch_end(self) -> None:
        self._log_domains("test")

    def optimizer_groups(self) -> list[dict[str, Any]]:
        return super().optimizer_groups() + self.adapt.param_groups(self.base_lr)

    def configure_callbacks(self) -> list[L.Callback]:
        return [*super().configure_callbacks(), *([AdaBNCallback()] if self.adapt.adabn else [])]
