"""Fine-tuning strategies: frozen tensors stay bit-identical, trained ones move, LRs as configured."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
import torchvision
from conftest import compose_cfg, run_job

from experiments.checkpoints import read_checkpoint
from experiments.pipeline.results import read_results


LR = 0.01
BLOCKS = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]  # resnet18's, stem first


class StopAfterEpoch(L.Callback):
    """Ends fit after ``epoch`` (as if the run were killed once that epoch's checkpoint was saved)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A 'pretrained' resnet18 state dict (ImageNet layout, 1000 classes) the tests start from."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    net = torchvision.models.resnet18()
    for module in net.modules():  # non-trivial BN statistics, so a moved buffer would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def run_strategy(tmp_path, weights, *overrides, epochs=2):
    cfg = compose_cfg(
        tmp_path, "model=resnet18", f"model.weights={weights}", "scheduler=none", f"optimizer.lr={LR}",
        "optimizer=adam", f"trainer.max_epochs={epochs}", "+trainer.limit_train_batches=4",
        "module.no_decay_1d=false",  # the strategies' own groups, exactly as before the weight-decay rule
        *overrides,
    )
    record = run_job(cfg)
    state = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")  # frozen blocks restored from their file
    after = {k[len("model.backbone."):]: v for k, v in state["state_dict"].items() if k.startswith("model.backbone.")}
    groups = {g["name"]: g["lr"] for g in state["optimizer_states"][0]["param_groups"]}
    return record, after, groups


def changed_blocks(before, after) -> set[str]:
    """Top-level blocks of which at least one tensor (parameter or buffer) differs."""
    return {k.split(".")[0] for k, v in after.items() if not torch.equal(v, before[k])}


def identical(before, after, prefixes) -> bool:
    return all(torch.equal(v, before[k]) for k, v in after.items() if k.split(".")[0] in prefixes)


def test_classifier_only_freezes_everything_but_the_head(tmp_path, weights_file):
    path, before = weights_file
    record, after, groups = run_strategy(tmp_path, path, "finetune=classifier_only")
    assert changed_blocks(before, after) == set()  # BN running_mean/var included
    assert list(groups) == ["head"] and groups["head"] == LR
    assert record["params"]["trainable"] == 512 * 10 + 10


def test_partial_trains_only_the_last_blocks(tmp_path, weights_file):
    path, before = weights_file
    _, after, groups = run_strategy(tmp_path, path, "finetune=partial", "finetune.n_blocks=2")
    assert changed_blocks(before, after) == {"layer3", "layer4"}
    assert identical(before, after, {"conv1", "bn1", "layer1", "layer2"})
    assert groups == {"head": LR, "block3": pytest.approx(LR * 0.1), "block4": pytest.approx(LR * 0.1)}


def test_partial_with_too_many_blocks_names_the_count(tmp_path, weights_file):
    path, _ = weights_file
    with pytest.raises(SystemExit):  # as the command exits 1
        run_strategy(tmp_path, path, "finetune=partial", "finetune.n_blocks=9")
    error = read_results(tmp_path)["error"]
    assert error.startswith("FinetuneError") and "n_blocks=9 but this model has 5 blocks" in error


def test_full_trains_all_with_small_backbone_lr_or_layer_decay(tmp_path, weights_file):
    path, before = weights_file
    _, after, groups = run_strategy(tmp_path / "a", path, "finetune=full")
    assert changed_blocks(before, after) == set(BLOCKS)
    assert groups["head"] == LR and all(groups[f"block{i}"] == pytest.approx(LR * 0.1) for i in range(5))
    _, _, groups = run_strategy(tmp_path / "b", path, "finetune=full", "finetune.layer_decay=0.5", epochs=1)
    # block4 is 1 below the head, block0 (the stem) 5 below
    assert [groups[f"block{i}"] for i in range(5)] == pytest.approx([LR * 0.5**d for d in (5, 4, 3, 2, 1)])


def test_scratch_ignores_weights_and_trains_everything_at_full_lr(tmp_path, weights_file):
    path, before = weights_file
    record, after, groups = run_strategy(tmp_path, path, "finetune=scratch", epochs=1)
    assert record["weights"] == "random"
    assert not torch.equal(after["conv1.weight"], before["conv1.weight"])
    assert set(groups.values()) == {LR}


@pytest.mark.slow  # a resnet18 fit per stage (~10-13 s): the default tier stays under its 240 s
def test_gradual_thaws_one_block_per_epoch_from_the_top(tmp_path, weights_file):
    path, before = weights_file
    record, after, groups = run_strategy(tmp_path, path, "finetune=gradual", epochs=3)
    schedule = record["finetune_detail"]["schedule"]
    assert [(s["epoch"], [b.split(":")[1] for b in s["trainable_blocks"]]) for s in schedule] == [
        (0, []), (1, ["layer4"]), (2, ["layer3", "layer4"])
    ]
    assert changed_blocks(before, after) == {"layer3", "layer4"}
    assert groups["block4"] == pytest.approx(LR * 0.1) and groups["block3"] == pytest.approx(LR * 0.1 * 0.5)


@pytest.mark.slow  # a resnet18 fit per stage (~10-13 s): the default tier stays under its 240 s
def test_lp_ft_switches_stage_and_lowers_the_head_lr(tmp_path, weights_file):
    path, before = weights_file
    record, after, groups = run_strategy(tmp_path, path, "finetune=lp_ft", "finetune.probe_epochs=1", epochs=2)
    schedule = record["finetune_detail"]["schedule"]
    assert schedule[0] == {"epoch": 0, "trainable_blocks": []} and schedule[1]["epoch"] == 1
    assert len(schedule[1]["trainable_blocks"]) == 5
    assert changed_blocks(before, after) == set(BLOCKS)
    assert groups["head"] == pytest.approx(LR * 0.1) and groups["block0"] == pytest.approx(LR * 0.1)
    assert record["finetune_detail"]["feature_cache"]["used"] and record["finetune_detail"]["feature_cache"]["epochs"] == 1


@pytest.mark.slow  # ~40 s: three resnet18 fits
def test_resume_mid_gradual_restores_frozen_state_lrs_and_weights(tmp_path, weights_file):
    path, _ = weights_file
    common = ("finetune=gradual", "scheduler=cosine", "trainer.deterministic=true")
    _, straight, straight_groups = run_strategy(tmp_path / "straight", path, *common, epochs=4)
    stopped = tmp_path / "stopped"
    run_strategy(stopped, path, *common, "+callbacks.stop._target_=test_finetune.StopAfterEpoch", "+callbacks.stop.epoch=1", epochs=4)
    ckpt = stopped / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    record, resumed, resumed_groups = run_strategy(tmp_path / "resumed", path, *common, f"ckpt_path={ckpt}", epochs=4)
    assert record["finetune_detail"]["schedule"][0]["epoch"] == 2
    assert [b.split(":")[1] for b in record["finetune_detail"]["schedule"][0]["trainable_blocks"]] == ["layer3", "layer4"]
    assert resumed_groups == pytest.approx(straight_groups)
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def test_cached_and_uncached_classifier_only_give_the_same_head(tmp_path, weights_file):
    path, _ = weights_file
    heads = {}
    for setting in ("true", "false"):  # the epochs alone train the head (head_fit needs the cache)
        record, _, _ = run_strategy(tmp_path / setting, path, "finetune=classifier_only", f"finetune.cache_features={setting}",
                                    "finetune.head_fit=none", epochs=3)
        assert record["finetune_detail"]["feature_cache"]["used"] is (setting == "true")
        state = torch.load(tmp_path / setting / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        heads[setting] = (state["model.head.weight"], record["metrics"]["test/acc"])
    assert torch.allclose(heads["true"][0], heads["false"][0], atol=1e-5)
    assert heads["true"][1] == pytest.approx(heads["false"][1], abs=0.005)


def test_random_augmentation_takes_the_uncached_path_and_says_why(tmp_path, weights_file, caplog):
    path, _ = weights_file
    caplog.set_level(logging.INFO, logger="experiments")
    augment = "data.train_transforms=[{_target_:torchvision.transforms.v2.RandomRotation,degrees:10}]"
    record, _, _ = run_strategy(tmp_path / "auto", path, "finetune=classifier_only", augment, epochs=1)
    cache = record["finetune_detail"]["feature_cache"]
    assert not cache["used"] and "random augmentation" in cache["reason"]
    assert any("feature cache: off" in r.getMessage() for r in caplog.records)
    with pytest.raises(SystemExit):  # as the command exits 1
        run_strategy(tmp_path / "forced", path, "finetune=classifier_only", "finetune.cache_features=true", augment, epochs=1)
    error = read_results(tmp_path / "forced")["error"]
    assert error.startswith("FinetuneError") and "cache_features=true cannot apply" in error


def test_results_record_block_states(tmp_path, weights_file):
    path, _ = weights_file
    record, _, _ = run_strategy(tmp_path, path, "finetune=partial", "finetune.n_blocks=1", epochs=1)
    blocks = record["finetune_detail"]["blocks"]
    assert [b["trainable_at_end"] for b in blocks] == [False, False, False, False, True]
    assert record["params"]["trainable"] == blocks[-1]["params"] + 512 * 10 + 10


def test_a_bare_trainer_fit_applies_the_strategy(tmp_path):
    """The module brings its strategy (configure_callbacks): a Trainer built by hand, with no
    callback of ours, still trains the head alone under classifier_only."""
    from experiments.pipeline.build import build_components

    cfg = compose_cfg(tmp_path, "finetune=classifier_only", "finetune.cache_features=false")
    parts = build_components(cfg)
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(parts.module, datamodule=parts.datamodule)
    after = parts.model.state_dict()
    head = {k for k in after if k.startswith("head.")}
    assert head and all(not torch.equal(after[k], before[k]) for k in head if after[k].is_floating_point())
    assert all(torch.equal(after[k], before[k]) for k in after if k not in head)  # BatchNorm statistics too


def test_the_model_summary_counts_what_the_strategy_trains(tmp_path):
    """What reports the model before the first step (Lightning's model summary) sees the
    strategy's trainable set: the head alone under classifier_only, not the whole network."""
    from lightning.pytorch.utilities.model_summary import ModelSummary

    from experiments.pipeline.build import build_components

    parts = build_components(compose_cfg(tmp_path, "finetune=classifier_only", "finetune.cache_features=false"))
    seen = {}

    class Summarise(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            seen["trainable"] = ModelSummary(pl_module).trainable_parameters

    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
                        callbacks=[Summarise()])
    trainer.fit(parts.module, datamodule=parts.datamodule)
    assert seen["trainable"] == sum(p.numel() for p in parts.model.head.parameters())


# -- the head fitted on cached features (finetune.head_fit) ------------------------------------------
def test_head_fit_solves_the_same_problem_as_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from experiments.finetune.head_fit import fit_linear_head

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=generator) * 2
    y = torch.arange(3).repeat(40)
    x = centres[y] + torch.randn(len(y), 8, generator=generator) * torch.linspace(0.5, 5, 8)  # unequal scales
    x = x * 10 + 3
    head = torch.nn.Linear(8, 3)
    fit = fit_linear_head(head, (x, y), l2_grid=(0.01,))
    z = ((x - x.mean(0)) / x.std(0, correction=0)).numpy()
    reference = LogisticRegression(C=1 / (2 * 0.01 * len(y)), max_iter=2000, tol=1e-8).fit(z, y.numpy())
    with torch.no_grad():  # the head takes raw features: the standardisation is folded into it
        probabilities = torch.softmax(head(x), 1).numpy()
    assert abs(probabilities - reference.predict_proba(z)).max() < 1e-3
    assert fit.l2 == 0.01 and fit.val_acc is None and fit.train_acc == pytest.approx(reference.score(z, y.numpy()))


def test_head_fit_picks_the_l2_on_validation_and_the_run_records_it(tmp_path, weights_file):
    path, before = weights_file
    runs = {}
    for setting in ("lbfgs", "none"):
        record, after, _ = run_strategy(tmp_path / setting, path, "finetune=classifier_only", f"finetune.head_fit={setting}",
                                        "data.samples_per_class=10", epochs=1)
        assert changed_blocks(before, after) == set()  # the fit touches the head alone
        runs[setting] = record
    fit = runs["lbfgs"]["finetune_detail"]["feature_cache"]["head_fit"]
    assert fit["method"] == "lbfgs" and str(fit["l2"]) in fit["val_acc_by_l2"]
    assert fit["val_acc"] == max(fit["val_acc_by_l2"].values())
    assert "head_fit" not in runs["none"]["finetune_detail"]["feature_cache"]
    # one epoch of 2 steps barely moves a random head; the fitted one starts at the probe's accuracy
    assert runs["lbfgs"]["metrics"]["val/acc"] > runs["none"]["metrics"]["val/acc"] + 0.2
