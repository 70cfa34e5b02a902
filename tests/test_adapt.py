"""Domain adaptation: gradient reversal, the lambda schedule, the EMA teacher, AdaBN, the domain
pair and its target views, the label-free validators, and every adapt= method end to end."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg, run_job
from torch import nn
from torch.utils.data import Dataset

from experiments.adapt.adabn import adapt_batchnorm
from experiments.adapt.ema import ema_teacher, ema_update
from experiments.adapt.grl import GradientReversal, dann_lambda
from experiments.adapt.methods.base import DomainBatch
from experiments.datamodules import DigitsDataModule, DomainPairDataModule
from experiments.errors import ConfigError, ModelError
from experiments.models.core import ModelInfo, Preprocessing, TransferModel, create_model, group_blocks
from experiments.models.custom import SmallCNN, build_custom

# A few batches: every in-process run below takes a few seconds.
TINY = ["experiment=da_digits", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "+trainer.num_sanity_val_steps=0"]
NO_FIGURES = "callbacks.test_figures=null"
TRAP = "data.target._target_=test_adapt.LabelTrapDigits"


# -- pure torch pieces ---------------------------------------------------------------------------
def test_gradient_reversal_sends_back_minus_lambda_times_the_gradient():
    reversal = GradientReversal(0.3)
    x = torch.randn(5, 7, requires_grad=True)
    upstream = torch.randn(5, 7)
    y = reversal(x)
    assert torch.equal(y, x)
    (y * upstream).sum().backward()
    assert torch.equal(x.grad, -0.3 * upstream)
    reversal.lambda_ = 2.0  # settable between steps
    x.grad = None
    (reversal(x) * upstream).sum().backward()
    assert torch.equal(x.grad, -2.0 * upstream)


def test_dann_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # 0.98661
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)  # 0.99991
    assert dann_lambda(0.5, gamma=10, lambda_max=0.1) == pytest.approx(0.1 * (2 / (1 + math.exp(-5)) - 1))
    assert dann_lambda(-1) == 0.0 and dann_lambda(3) == dann_lambda(1)  # progress is clamped to [0, 1]


def small_model(width: int = 8) -> TransferModel:
    return create_model(build_custom(lambda num_classes, in_chans: SmallCNN(num_classes, in_chans, width=width), 10, 1), 10)


def test_one_ema_update_follows_the_formula():
    torch.manual_seed(0)
    student = small_model()
    teacher = ema_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()(torch.randn(4, 1, 8, 8))  # moves the student's BatchNorm statistics
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, decay=0.9)
    params = dict(student.named_parameters())
    for name, value in teacher.state_dict().items():
        if name in params:
            expected = 0.9 * before[name] + (1 - 0.9) * params[name].detach()
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
            assert not torch.equal(value, before[name])
        else:  # buffers are copied
            assert torch.equal(value, student.state_dict()[name]), name


def test_adabn_changes_only_batchnorm_running_statistics():
    torch.manual_seed(0)
    model = small_model()
    model.train()
    model.backbone.stage2.eval()  # a frozen block: its mode must survive too
    params = {k: v.clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    batches = [torch.rand(16, 1, 8, 8) * 3 + 1 for _ in range(3)]
    seen = adapt_batchnorm(model, batches)
    assert seen == 48
    for name, value in model.named_parameters():
        assert torch.equal(value, params[name]), name  # every weight bit-identical
    changed = {k for k, v in model.named_buffers() if not torch.equal(v, buffers[k])}
    assert changed and all(k.rsplit(".", 1)[-1] in {"running_mean", "running_var", "num_batches_tracked"} for k in changed)
    # momentum=None: the exact average over the batches, here of the first conv's outputs
    conv, bn = model.backbone.stage1[0], model.backbone.stage1[1]
    with torch.no_grad():
        means = torch.stack([conv(x).mean(dim=(0, 2, 3)) for x in batches])
    torch.testing.assert_close(bn.running_mean, means.mean(0), rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3
    assert model.training and model.backbone.stage1.training and not model.backbone.stage2.training
    assert not model.backbone.stage2[1].training


def test_dann_refuses_a_backbone_without_pooled_features():
    from experiments.adapt.methods.dann import DANN

    backbone = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))  # (B, 4, 8, 8): no (B, F) features
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    model = TransferModel(backbone, head, group_blocks(backbone, None), Preprocessing(in_chans=1), ModelInfo("custom", "conv_only"))
    dann = DANN()
    dann.bind(model)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ModelError, match=r"adapt=dann .*\(batch, features\).*conv_only returns shape \(4, 4, 8, 8\)"):
        dann.training_step(model, DomainBatch(x, torch.tensor([0, 1]), {"plain": x}), 0.5, nn.functional.cross_entropy)


def test_mean_teacher_evaluates_the_teacher_and_masks_unconfident_targets():
    from experiments.adapt.methods.mean_teacher import MeanTeacher
    from experiments.finetune import Full
    from experiments.lightningmodules.domain_adaptation import DomainAdaptationModule

    torch.manual_seed(0)
    method = MeanTeacher(confidence_threshold=0.99, views={"student": None, "teacher": None})
    module = DomainAdaptationModule(small_model(), 10, torch.optim.Adam, Full(), adapt=method)
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(1.0)  # the student moves away from its teacher
    module.eval()
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(module(x), module.adapt.teacher(x)) and not torch.equal(module(x), module.model(x))
    module.train()
    y = torch.tensor([0, 1, 2, 3])
    batch = DomainBatch(x, y, {"plain": x, "student": x + 0.1, "teacher": x - 0.1})
    step = module.adapt.training_step(module.model, batch, 1.0, nn.functional.cross_entropy)
    # an untrained teacher is never 99 % sure: every target sample is masked out, and the class
    # balance (weighted by the confident share) is off too: the loss is the source cross-entropy
    assert float(step.logs["mask_rate"]) == 0 and float(step.logs["class_balance"]) == 0
    assert step.source_logits.shape == (4, 10)
    torch.testing.assert_close(step.loss, nn.functional.cross_entropy(step.source_logits, y))
    with pytest.raises(ConfigError, match="reads the target view 'student'"):
        module.adapt.training_step(module.model, DomainBatch(x, y, {"plain": x}), 1.0, nn.functional.cross_entropy)


# -- the domain pair -----------------------------------------------------------------------------
def test_domains_of_different_sizes_are_refused_naming_both_shapes_and_the_fix():
    with pytest.raises(ConfigError) as err:
        DomainPairDataModule(DigitsDataModule(image_size=16), DigitsDataModule())
    message = str(err.value)
    assert "(1, 16, 16)" in message and "(1, 8, 8)" in message
    assert "data.source.image_size=16 data.target.image_size=16" in message
    pair = DomainPairDataModule(DigitsDataModule(image_size=16), DigitsDataModule(image_size=[16, 16]))
    assert pair.input_shape == (1, 16, 16) and pair.num_classes == 10


def test_feature_cache_is_off_for_a_domain_pair():
    from experiments.finetune import ClassifierOnly
    from experiments.finetune.cache import plan_feature_cache

    plan = plan_feature_cache(ClassifierOnly(), DomainPairDataModule(DigitsDataModule(), DigitsDataModule()), 2, n_blocks=3)
    assert not plan.used and "domain adaptation" in plan.reason


def test_adapt_and_data_must_fit(tmp_path):
    from experiments.pipeline.build import build_components

    with pytest.raises(ConfigError, match="adapt=dann needs a source and a target domain.*data=da_pair"):
        build_components(compose_cfg(tmp_path, "adapt=dann"))
    with pytest.raises(ConfigError, match="adapt is null.*adapt=dann"):
        build_components(compose_cfg(tmp_path, "data=da_pair"))


class LabelRead(AssertionError):
    """Raised by a target-train label the moment anything reads it."""


class _Unreadable:
    def _read(self, *args, **kwargs):
        raise LabelRead("a target-train label was read")

    __int__ = __index__ = __float__ = __bool__ = __repr__ = __eq__ = __hash__ = _read


class _TrappedLabels(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.armed = dataset, False

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return x, (_Unreadable() if self.armed else y)


class LabelTrapDigits(DigitsDataModule):
    """Digits whose training labels raise when read, from the end of set-up (the contract check
    has read them) on; validation and test labels stay readable (the target is evaluated)."""

    def load_splits(self):
        train, val, test = super().load_splits()
        return _TrappedLabels(train), val, test

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.train_set.dataset.armed = True


# -- every method end to end ---------------------------------------------------------------------
METHOD_SCALARS = {"source_only": [], "dann": ["train/domain_acc", "train/dann_lambda"],
                  "cdan": ["train/domain_acc", "train/dann_lambda"], "mcc": ["train/class_confusion"],
                  "mean_teacher": ["train/consistency", "train/mask_rate", "train/class_balance"],
                  "adamatch": ["train/target_loss", "train/mask_rate", "train/threshold"],
                  "oracle": ["train/target_loss"]}
VALIDATOR_SCALARS = {f"val/target_{name}" for name in ("entropy", "im", "snd", "confident")}


@pytest.mark.parametrize("method", list(METHOD_SCALARS))
def test_every_method_runs_reloads_and_logs_both_domains(tmp_path, method):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from experiments.pipeline.tasks import evaluate_checkpoint
    from experiments.pipeline.tasks import train

    # the target's training labels raise when read: only the oracle may (and must) read them
    trap = [TRAP] if method != "oracle" else []
    figures = [NO_FIGURES] if method != "dann" else []  # matplotlib is slow: drawn in one run
    record = train(compose_cfg(tmp_path, *TINY, f"adapt={method}", *trap, *figures)).record
    assert record["adapt"] == {"method": method, "adabn": False}
    metrics = record["metrics"]
    for stage in ("val", "test"):
        for key in ("source_acc", "source_loss", "target_acc", "target_loss"):
            assert 0 <= metrics[f"{stage}/{key}"] < 10, key
        assert metrics[f"{stage}/acc"] == metrics[f"{stage}/source_acc"]  # the objective reads the source
    assert record["finetune_detail"]["feature_cache"]["used"] is False
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/source_acc", "val/target_acc", "test/target_acc"} | VALIDATOR_SCALARS <= scalars
    assert set(METHOD_SCALARS[method]) <= scalars
    if method == "dann":
        assert 0 <= events.Scalars("train/domain_acc")[-1].value <= 1
        # one confusion matrix per domain, never the two mixed
        assert {f"test/confusion_matrix/{d}" for d in ("source", "target")} <= set(events.Tags()["images"])
        assert [g["name"] for g in record["finetune_detail"]["lr_groups"]][-1] == "discriminator"
        assert "test/features" in events.Tags()["images"]  # both domains' test features, PCA
    assert 0 <= metrics["test/proxy_a_distance"] <= 2

    reloaded = evaluate_checkpoint(compose_cfg(tmp_path / "test", *TINY, f"adapt={method}", *trap, NO_FIGURES, "mode=test",
                                           f"ckpt_path={record['best_checkpoint']}")).record
    for key in ("test/source_acc", "test/target_acc", "val/target_acc", "test/proxy_a_distance"):
        assert reloaded["metrics"][key] == pytest.approx(metrics[key], abs=1e-6), key


def test_a_domain_adaptation_checkpoint_starts_another_run_as_model_weights(tmp_path):
    """model.weights=<an adaptation run's checkpoint> loads the network that run evaluated (a mean
    teacher's EMA copy), backbone and head, and leaves the method's parts out."""
    from experiments.models.weights import read_state_dict
    from experiments.pipeline.tasks import train

    train(compose_cfg(tmp_path / "da", *TINY, "adapt=mean_teacher", NO_FIGURES))
    checkpoint = tmp_path / "da" / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    loaded = read_state_dict(checkpoint)
    teacher = {k[len("adapt.teacher."):]: v for k, v in saved.items() if k.startswith("adapt.teacher.")}
    assert loaded.keys() == teacher.keys() and any(k.startswith("head.") for k in loaded)
    assert all(torch.equal(loaded[k], teacher[k]) for k in teacher)
    assert any(not torch.equal(saved[f"model.{k}"], teacher[k]) for k in teacher if k.endswith("weight"))  # not the student
    follow = run_job(compose_cfg(tmp_path / "next", f"model.weights={checkpoint}",
                                 "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "logger=none"))
    assert follow["status"] == "ok" and follow["weights"] == f"file:{checkpoint}"


def test_the_oracle_reads_the_target_labels(tmp_path):
    from experiments.pipeline.tasks import train

    with pytest.raises(LabelRead):  # the trap works: a method that reads target labels trips it
        train(compose_cfg(tmp_path, *TINY, "adapt=oracle", TRAP, NO_FIGURES))


def test_adabn_evaluates_the_target_with_target_statistics_and_leaves_the_checkpoint(tmp_path):
    from experiments.pipeline.tasks import evaluate_checkpoint
    from experiments.pipeline.tasks import train

    record = train(compose_cfg(tmp_path, *TINY, "adapt=source_only", TRAP, NO_FIGURES)).record
    ckpt = record["best_checkpoint"]
    before = torch.load(ckpt, weights_only=True)["state_dict"]

    def tested(adabn: bool) -> dict:
        run = tmp_path / f"adabn_{adabn}"
        cfg = compose_cfg(run, *TINY, "adapt=source_only", TRAP, NO_FIGURES, f"adapt.adabn={adabn}", "mode=test", f"ckpt_path={ckpt}")
        return evaluate_checkpoint(cfg).record["metrics"]

    plain, adapted = tested(False), tested(True)
    assert adapted["test/source_acc"] == plain["test/source_acc"]  # the source keeps its own statistics
    assert adapted["test/target_loss"] != plain["test/target_loss"]
    after = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def write_images(folder: Path, classes: list[str], per_class: int = 12) -> None:
    """``folder/<class>/<i>.png`` (``""``: the images straight in ``folder``), 8x8 RGB."""
    from torchvision.io import write_png

    generator = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = (torch.rand(3, 8, 8, generator=generator) * 80 + 120 * c).to(torch.uint8)
            write_png(image, str(folder / name / f"{i}.png"))


def test_domains_with_different_classes_are_refused(tmp_path):
    from experiments.datamodules import ImageFolderDataModule

    write_images(tmp_path / "source", ["a", "b"])
    write_images(tmp_path / "target", ["a", "b", "c"])
    with pytest.raises(ConfigError, match="source domain has 2 classes .* but the target 3"):
        DomainPairDataModule(ImageFolderDataModule(str(tmp_path / "source")), ImageFolderDataModule(str(tmp_path / "target")))


def test_an_unlabelled_target_folder_is_trained_on_and_not_evaluated(tmp_path):
    from experiments.pipeline.tasks import train

    write_images(tmp_path / "source", ["a", "b"])
    write_images(tmp_path / "target", [""])
    folders = ["data=da_folders", f"data.source.root={tmp_path / 'source'}", f"data.target.root={tmp_path / 'target'}",
               "data.source.batch_size=4", "data.target.batch_size=4", "trainer.max_epochs=1", NO_FIGURES]
    record = train(compose_cfg(tmp_path / "run", *folders, "adapt=dann")).record
    assert "val/source_acc" in record["metrics"] and "val/target_acc" not in record["metrics"]
    assert not any(k.startswith("test/target") for k in record["metrics"])
    # a held-out share of the unlabelled images feeds the label-free validators: they can select
    chosen = train(compose_cfg(tmp_path / "snd", *folders, "adapt=dann", "objective=val/target_snd")).record
    assert {"val/target_snd", "val/target_im", "val/target_entropy"} <= set(chosen["metrics"])
    assert chosen["best_checkpoint"] and 0 <= chosen["metrics"]["val/target_im"] <= 1
    with pytest.raises(ConfigError, match="adapt=oracle trains on target labels.*has none"):
        train(compose_cfg(tmp_path / "oracle", *folders, "adapt=oracle"))
    with pytest.raises(ConfigError, match="adapt is null"):
        train(compose_cfg(tmp_path / "none", *folders))


def test_channel_tint_scales_each_channel_by_its_own_factor_within_bounds():
    from experiments.datamodules.transforms import RandomChannelTint

    torch.manual_seed(0)
    image = torch.full((3, 4, 4), 0.5)
    tinted = RandomChannelTint(0.7, 1.3)(image)
    factors = tinted[:, 0, 0] / 0.5
    assert torch.all((factors >= 0.7) & (factors <= 1.3)) and len(set(factors.tolist())) == 3
    assert torch.equal(tinted, tinted[:, :1, :1].expand_as(tinted))  # one factor per channel
    with pytest.raises(ValueError, match="low <= high"):
        RandomChannelTint(1.3, 0.7)


def test_shared_normalisation_applies_to_both_domains():
    pair = DomainPairDataModule(DigitsDataModule(), DigitsDataModule(), mean=[0.5], std=[0.5])
    pair.set_preprocessing(Preprocessing(in_chans=1))
    assert pair.source.preprocessing.mean == pair.target.preprocessing.mean == (0.5,)


# -- views, validators, the method surface -------------------------------------------------------
def test_target_views_are_augmentations_of_the_same_images_each_its_own_draw():
    from experiments.datamodules import DeviceAugment
    from experiments.datamodules.domain_pair import as_domain_batch

    noisy = DeviceAugment(noise=0.1)
    pair = DomainPairDataModule(DigitsDataModule(), DigitsDataModule(),
                                target_views={"weak": noisy, "strong": DeviceAugment(noise=0.1, invert=1.0), "same": DeviceAugment()})
    pair.setup("fit")
    x, y = next(iter(pair.source.train_dataloader()))
    target = next(iter(pair.target.train_dataloader()))[0]
    batch = as_domain_batch({"source": (x, y), "target": target}, pair, epoch=0)
    views = batch.target
    assert set(views) == {"plain", "weak", "strong", "same"} and batch.target_y is None
    assert torch.equal(views["plain"], target)
    torch.testing.assert_close(views["same"], target)  # no augmentation: the images (normalisation undone and redone)
    # a view is near ITS image: closer than the images are to each other
    assert not torch.equal(views["weak"], target)
    assert (views["weak"] - target).abs().mean() < 0.5 * (target - target.roll(1, 0)).abs().mean()
    assert not torch.equal(views["strong"], views["weak"])  # each view its own draw
    again = as_domain_batch({"source": (x, y), "target": target}, pair, epoch=0)
    assert not torch.equal(again.target["weak"], views["weak"])  # the generator moves on within an epoch
    fresh = DomainPairDataModule(DigitsDataModule(), DigitsDataModule(), target_views={"weak": noisy})
    fresh.setup("fit")
    replay = as_domain_batch({"source": (x, y), "target": target}, fresh, epoch=0)
    assert torch.equal(replay.target["weak"], views["weak"])  # seeded by (seed, epoch): a resume draws the same
    with pytest.raises(ConfigError, match="target_views.plain"):
        DomainPairDataModule(DigitsDataModule(), DigitsDataModule(), target_views={"plain": noisy})


def test_augment_option_augments_the_source_of_a_pair(tmp_path):
    from experiments.pipeline.tasks import train

    from experiments.pipeline.build import build_components

    cfg = compose_cfg(tmp_path, *TINY, "augment=digits", "adapt=source_only", NO_FIGURES)
    pair = build_components(cfg).datamodule
    assert pair.source.device_augment is not None and pair.target.device_augment is None
    assert not pair.train_is_deterministic
    assert 0 <= train(cfg).record["metrics"]["val/source_acc"] <= 1  # it trains (a TypeError before)


def test_validators_read_predictions_only_and_rank_as_documented():
    from experiments.adapt.validators import VALIDATORS, label_free_scores

    assert set(inspect_params(label_free_scores)) == {"probs", "threshold"}  # no labels can reach it
    confident = torch.eye(4).repeat(8, 1) * 0.97 + 0.01  # sure, and every class used
    collapsed = torch.zeros(32, 4)
    collapsed[:, 0] = 0.97
    collapsed[:, 1:] = 0.01  # sure, one class
    uniform = torch.full((32, 4), 0.25)
    scores = {name: label_free_scores(p) for name, p in (("confident", confident), ("collapsed", collapsed), ("uniform", uniform))}
    assert scores["confident"]["entropy"] < scores["uniform"]["entropy"]
    assert scores["confident"]["im"] > scores["collapsed"]["im"] and scores["confident"]["im"] > scores["uniform"]["im"]
    assert scores["confident"]["confident"] == 1 and scores["uniform"]["confident"] == 0
    # SND: each confident sample's neighbourhood is its 7 cluster mates (entropy log 7); identical
    # uniform predictions make all 31 others equally near (log 31)
    assert float(scores["confident"]["snd"]) == pytest.approx(math.log(7), abs=0.01)
    assert float(scores["uniform"]["snd"]) == pytest.approx(math.log(31), abs=1e-4)
    assert set(scores["confident"]) == set(VALIDATORS)


def inspect_params(fn) -> list[str]:
    import inspect

    return list(inspect.signature(fn).parameters)


def test_target_validation_labels_do_not_change_the_validators():
    from experiments.adapt.methods.source_only import SourceOnly
    from experiments.finetune import Full
    from experiments.lightningmodules.domain_adaptation import DomainAdaptationModule

    torch.manual_seed(0)
    module = DomainAdaptationModule(small_model(), 10, torch.optim.Adam, Full(), adapt=SourceOnly()).eval()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        module.validation_step((x, torch.zeros(16, dtype=torch.long)), 0, dataloader_idx=1)
        first = torch.cat(module._target_probs)
        module._target_probs.clear()
        module.validation_step((x, torch.arange(16) % 10), 0, dataloader_idx=1)
        second = torch.cat(module._target_probs)
    assert torch.equal(first, second)


def test_a_label_free_validator_can_be_the_objective(tmp_path):
    from experiments.config.metrics import objective_mode
    from experiments.pipeline.tasks import train

    assert objective_mode("val/target_entropy") == "min" and objective_mode("val/target_snd") == "max"
    record = train(compose_cfg(tmp_path, *TINY, "adapt=source_only", "objective=val/target_im", NO_FIGURES)).record
    assert "val/target_im" in record["metrics"]


NEW_METHOD = '''
import torch
from experiments.adapt.methods.base import AdaptationMethod, AdaptStep
from experiments.config.declared import Number


class TargetEntropy(AdaptationMethod):
    log_names = ("target_entropy",)
    KEYS = {"weight": Number(low=0)}

    def __init__(self, name="target_entropy", adabn=False, weight=0.1, views=None):
        super().__init__(name, adabn, views)
        self.weight = weight

    def training_step(self, model, batch, progress, loss_fn):
        source_logits = model(batch.source_x)
        probs = model(batch.target["strong"]).softmax(-1)
        entropy = -(probs * probs.clamp_min(1e-8).log()).sum(-1).mean()
        return AdaptStep(loss_fn(source_logits, batch.source_y) + self.weight * entropy, source_logits,
                         {"target_entropy": entropy.detach()})
'''

NEW_YAML = '''defaults:
  - override /module@_global_.module: domain_adaptation
  - _self_
_target_: my_methods.TargetEntropy
name: target_entropy
adabn: false
weight: 0.1
views:
  strong:
    _target_: experiments.datamodules.DeviceAugment
    noise: 0.1
'''


def test_a_new_method_is_one_class_and_one_yaml(tmp_path, monkeypatch):
    from experiments.pipeline.tasks import train

    (tmp_path / "my_methods.py").write_text(NEW_METHOD)
    (tmp_path / "conf" / "adapt").mkdir(parents=True)
    (tmp_path / "conf" / "adapt" / "target_entropy.yaml").write_text(NEW_YAML)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose_cfg(tmp_path / "run", *TINY, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "adapt=target_entropy",
                      TRAP, NO_FIGURES)
    record = train(cfg).record
    assert record["adapt"]["method"] == "target_entropy" and 0 <= record["metrics"]["val/target_acc"] <= 1


def test_a_new_methods_new_key_is_checked_before_torch_from_its_declaration(tmp_path):
    """The method's class declares ``weight``; nothing in the framework names it, yet a bad value is
    refused by the early check, in a process that never imports torch, and by the constructor."""
    (tmp_path / "my_methods.py").write_text(NEW_METHOD)
    (tmp_path / "conf" / "adapt").mkdir(parents=True)
    (tmp_path / "conf" / "adapt" / "target_entropy.yaml").write_text(NEW_YAML)
    script = (
        "import sys\n"
        "from experiments.config.compose import compose_config\n"
        "from experiments.config.rules import validate\n"
        "from experiments.errors import ConfigError\n"
        f"cfg = compose_config({str(tmp_path / 'run')!r}, 'hydra.searchpath=[file://{tmp_path / 'conf'}]', "
        "'adapt=target_entropy', 'adapt.weight=-1')\n"
        "try:\n    validate(cfg)\nexcept ConfigError as err:\n    print('refused:', err)\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)}).stdout
    assert "refused: adapt.weight=-1 is invalid: expected a number >= 0" in out, out
    assert "torch imported: False" in out, out
    sys.path.insert(0, str(tmp_path))
    try:
        from my_methods import TargetEntropy

        with pytest.raises(ConfigError, match=r"adapt.weight=-0.5 is invalid: expected a number >= 0"):
            TargetEntropy(weight=-0.5)
        assert TargetEntropy(weight=0.5).weight == 0.5
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_methods", None)


def test_inverse_decay_follows_the_formula_over_the_run():
    from experiments.lightningmodules.schedules import InverseDecayLR

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = InverseDecayLR(optimizer, total_steps=100)
    lrs = []
    for _ in range(120):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[50] == pytest.approx(0.1 * (1 + 10 * 0.5) ** -0.75)
    assert lrs[100] == lrs[119] == pytest.approx(0.1 * 11 ** -0.75)  # held after the run's steps
    with pytest.raises(ConfigError, match="scheduler.power=-1"):
        InverseDecayLR(optimizer, 10, power=-1)


def test_lenet_bn_has_four_blocks_and_a_flattened_feature_layer():
    from experiments.models.custom import LeNetBN

    model = create_model(build_custom(LeNetBN, 10, 3, input_hw=(32, 32), name="lenet_bn"), 10)
    assert [b.name for b in model.blocks][-1].startswith("features") and len(model.blocks) == 4
    assert model.num_features == 256 and model.num_classes == 10
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ModelError, match="at least 8x8"):
        LeNetBN(10, 3, input_hw=(4, 4))


def test_proxy_a_distance_tells_separable_domains_from_mixed_ones():
    import numpy as np

    from experiments.reporting.domain_features import proxy_a_distance

    rng = np.random.default_rng(0)
    same = proxy_a_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)))
    apart = proxy_a_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 3)
    assert same < 0.3 and apart > 1.9


@pytest.mark.parametrize("override, message", [
    ("adapt.adabn=off", "adapt.adabn='off' is invalid: expected true or false"),  # bool("off") is True
    ("adapt.lambda_max=abc", "adapt.lambda_max='abc' is invalid: expected a number >= 0"),
    ("adapt.ema_decay=1", "adapt.ema_decay=1 is invalid: expected a number in [0, 1)"),
    ("module.compile=off", "module.compile='off' is invalid: expected true or false"),
    ("data.source.batch_size=0", "data.source.batch_size=0 is invalid: expected an integer >= 1"),
    ("data.target.samples_per_class=0", "data.target.samples_per_class=0 is invalid"),
])
def test_bad_adaptation_values_are_named_before_torch(tmp_path, override, message):
    from experiments.config.rules import validate

    method = "adapt=mean_teacher" if "ema_decay" in override else "adapt=dann"
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_cfg(tmp_path, "experiment=da_digits_m", method, override))
