"""finetune=auto and mode=advise: the shift measure, the decision table, the run it trains."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import compose_cfg, run_job
from torch.utils.data import Subset, TensorDataset

from experiments.checkpoints import read_checkpoint
from experiments.config.rules import validate
from experiments.errors import ConfigError
from experiments.finetune.choice import strategy_from_config
from experiments.finetune.decide import Measurements, decide, unsuitable_warning
from experiments.finetune.measure import BatchNormStatistics, dataset_labels, gaussian_shift
from experiments.finetune.auto import Auto
from experiments.finetune.strategies import Partial
from experiments.models.core import create_model
from experiments.models.custom import SmallResNet, build_custom

BLOCKS = ("stem", "stage1", "stage2", "stage3", "stage4")
SOURCE = ["data=digits", "data.partition=source", "data.channels=3", "data.image_size=32"]
TARGET = ["data=digits", "data.partition=target", "data.channels=3", "data.image_size=32", "data.samples_per_class=10"]
TINY = ["model=small_resnet", "model.net.width=4", "trainer.max_epochs=2", "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "callbacks.test_figures=null"]


def tiny_resnet(num_classes: int = 10):
    torch.manual_seed(0)
    spec = build_custom(functools.partial(SmallResNet, width=4), num_classes=num_classes, in_chans=3)
    return create_model(spec, num_classes)


def set_batchnorm_statistics(model, images: torch.Tensor) -> None:
    """Running statistics of every BatchNorm layer = the exact statistics of ``images``."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one full batch gives its statistics
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


def measured_shift(model, images: torch.Tensor) -> tuple[list, float]:
    with BatchNormStatistics(model) as statistics, torch.no_grad():
        for batch in images.split(16):  # batches combine exactly
            model(batch)
    return statistics.shift(len(model.blocks))


# -- the shift measure -----------------------------------------------------------------------------
def test_shift_is_zero_on_its_own_data_and_grows_with_a_colour_tint():
    torch.manual_seed(1)
    images = torch.nn.functional.avg_pool2d(torch.rand(64, 3, 20, 20), 5, stride=1)  # smooth 16x16 textures
    model = tiny_resnet()
    set_batchnorm_statistics(model, images)

    per_block, overall = measured_shift(model, images)
    assert [b.name for b in model.blocks] == list(BLOCKS) and len(per_block) == 5
    assert overall < 2e-3 and all(s is not None and s < 2e-3 for s in per_block)

    tint = torch.tensor([1.0, 0.3, 0.0]).view(1, 3, 1, 1)  # an orange cast, blended in by strength a
    shifts = [measured_shift(model, (1 - a) * images + a * images * tint + a * 0.3 * tint)[1]
              for a in (0.1, 0.2, 0.4, 0.7, 1.0)]
    assert shifts == sorted(shifts) and len(set(shifts)) == len(shifts), shifts
    assert shifts[0] > 10 * max(overall, 1e-4) and shifts[-1] > 0.3


def test_gaussian_shift_is_symmetric_and_bounded():
    mean, var = torch.zeros(3), torch.ones(3)
    assert torch.allclose(gaussian_shift(mean, var, mean, var), torch.zeros(3, dtype=torch.float64))
    other_mean, other_var = torch.tensor([0.5, 0.0, 3.0]), torch.tensor([1.0, 4.0, 0.01])
    forward = gaussian_shift(mean, var, other_mean, other_var)
    assert torch.allclose(forward, gaussian_shift(other_mean, other_var, mean, var))
    assert ((forward > 0) & (forward <= 1)).all() and forward[0] < forward[1] < forward[2]


def test_labels_are_read_below_subsets_and_wrappers():
    labels = torch.arange(20) % 4
    inner = Subset(TensorDataset(torch.zeros(20, 1), labels), list(range(5, 20)))
    inner.dataset.labels = labels  # a labels tensor at the bottom, as the in-memory sources have
    outer = Subset(inner, [0, 3, 7, 14])
    assert dataset_labels(outer).tolist() == [int(outer[i][1]) for i in range(len(outer))]


# -- the decision ------------------------------------------------------------------------------------
def situation(samples_per_class: float, block_shift: tuple, probe_acc: float | None, **kw) -> Measurements:
    shifts = [s for s in block_shift if s is not None]
    overall = sum(shifts) / len(shifts) if shifts else None
    return Measurements(10, samples_per_class, kw.get("pretrained", True), BLOCKS, block_shift, overall, probe_acc)


CALM = (0.01, 0.02, 0.02, 0.03, 0.02)
SHIFTED = (0.35, 0.40, 0.30, 0.25, 0.20)


@pytest.mark.parametrize(
    ("measured", "cell", "strategy", "keys"),
    [
        (situation(10, CALM, 0.95), ("similar", "small"), "classifier_only", {}),
        (situation(63, CALM, 0.97), ("similar", "large"), "partial", {"n_blocks": 1}),
        (situation(10, SHIFTED, 0.30), ("different", "small"), "full", {}),
        (situation(1000, SHIFTED, 0.35), ("different", "large"), "full", {}),
    ],
)
def test_four_situations_land_in_their_cell_and_the_reason_names_the_numbers(measured, cell, strategy, keys):
    advice = decide(measured, Auto(), max_epochs=10)
    assert (advice.domain, advice.size) == cell
    assert (advice.strategy, advice.keys) == (strategy, keys)
    for number in (f"{measured.samples_per_class:.1f}", f"{measured.overall_shift:.3f}", f"{measured.probe_acc:.3f}"):
        assert number in advice.reason, (number, advice.reason)
    record = advice.record()
    assert set(record) >= {"strategy", "keys", "cell", "shift", "probe_acc", "samples_per_class", "reason"}
    assert record["cell"] == {"domain": cell[0], "size": cell[1]}
    assert list(record["shift"]["per_block"]) == list(BLOCKS)
    unsuitable = cell == ("different", "small")
    assert (advice.warning is not None) == unsuitable
    if unsuitable:
        assert "experiment=da_digits_m" in advice.warning and "scratch" in advice.warning
        assert f"this run trains {strategy}, finetune.different_small's choice" in advice.warning
        # when the race overrules the prior, the warning names what trains instead
        raced = unsuitable_warning(measured, Auto(), "lp_ft", "the race's winner over the prior")
        assert "this run trains lp_ft, the race's winner over the prior" in raced


def test_partial_depth_follows_where_the_shift_is():
    late_shift = situation(63, (0.01, 0.02, 0.05, 0.20, 0.30), 0.9)  # overall 0.116; the probe says similar
    advice = decide(late_shift, Auto(shift_threshold=0.15), max_epochs=10)
    assert advice.strategy == "partial" and advice.keys == {"n_blocks": 2}
    assert "stage3" in advice.reason
    strategy = strategy_from_config(advice.strategy, advice.given_keys)  # conf/finetune/partial.yaml + the keys
    assert isinstance(strategy, Partial) and strategy.n_blocks == 2
    input_shift = situation(63, (0.5, 0.2, 0.1, 0.05, 0.05), 0.9)  # the input differs: every block -> full
    assert decide(input_shift, Auto(shift_threshold=0.15), max_epochs=10).strategy == "full"


def test_shared_keys_pass_to_the_chosen_strategy_but_not_to_scratch():
    auto = Auto(backbone_lr_mult=0.01, different_small="scratch")
    advice = decide(situation(63, CALM, 0.97), auto, max_epochs=10)
    assert advice.record()["keys"] == {"backbone_lr_mult": 0.01, "n_blocks": 1}
    assert strategy_from_config(advice.strategy, advice.given_keys).backbone_lr_mult == 0.01
    scratch = decide(situation(10, SHIFTED, 0.3), auto, max_epochs=10)
    # scratch gets its own budget and rate, none of the fine-tuning keys
    assert scratch.record()["keys"] == {"steps_mult": 2.0, "lr_mult": 1.0}
    assert strategy_from_config("scratch", scratch.given_keys).backbone_lr_mult == 1.0


def test_disagreeing_measures_count_as_similar_and_say_why():
    advice = decide(situation(10, SHIFTED, 0.93), Auto(), max_epochs=10)
    assert advice.domain == "similar" and advice.strategy == "classifier_only"
    assert "still separate the classes" in advice.reason


def test_without_batchnorm_the_probe_decides_and_random_init_trains_from_scratch():
    no_bn = situation(10, (None,) * 5, 0.2)
    advice = decide(no_bn, Auto(), max_epochs=10)
    assert advice.domain == "different" and "no BatchNorm" in advice.reason
    assert advice.record()["shift"] == {"per_block": dict.fromkeys(BLOCKS), "overall": None}
    random_init = decide(situation(500, CALM, None, pretrained=False), Auto(), max_epochs=10)
    assert (random_init.strategy, random_init.domain) == ("scratch", None)
    assert "nothing to transfer" in random_init.reason


def test_auto_keys_are_checked_before_anything_heavy(tmp_path):
    with pytest.raises(ConfigError, match=r"finetune.shift_threshold=2 .*\(0, 1\)"):
        validate(compose_cfg(tmp_path, "finetune=auto", "finetune.shift_threshold=2"))
    with pytest.raises(ConfigError, match="finetune.different_small='auto'"):
        validate(compose_cfg(tmp_path, "finetune=auto", "finetune.different_small=auto"))


# -- end to end -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source_weights(tmp_path_factory):
    """A small_resnet (width 4) whose BatchNorm statistics are those of the digits' source half:
    'pretrained' on the source without a training step."""
    from hydra.utils import instantiate

    directory = tmp_path_factory.mktemp("source")
    datamodule = instantiate(compose_cfg(directory, *SOURCE).data)
    datamodule.setup("fit")
    images = torch.stack([datamodule.train_set[i][0] for i in range(len(datamodule.train_set))])
    model = tiny_resnet()
    set_batchnorm_statistics(model, images)
    path = directory / "source.pth"
    torch.save(model.state_dict(), path)
    return path


def test_auto_end_to_end_records_its_analysis_and_trains_the_chosen_strategy(tmp_path, source_weights):
    common = [*TINY, *TARGET, f"model.weights={source_weights}"]
    auto_run = run_job(compose_cfg(tmp_path / "auto", *common, "finetune=auto", "finetune.similar_small=partial",
                                   "finetune.confirm=false"))  # the prior alone, as auto decided before races
    auto = auto_run["finetune_detail"]["auto"]
    assert auto["cell"] == {"domain": "similar", "size": "small"}  # the source's statistics, held-out digits
    assert auto["samples_per_class"] == 10.0 and auto["shift"]["overall"] < 0.15
    assert list(auto["shift"]["per_block"]) == list(BLOCKS) and 0 <= auto["probe_acc"] <= 1
    assert (auto["strategy"], auto["keys"]) == ("partial", {"n_blocks": 1}) and auto["race"] is None
    assert auto["prior"] == "partial" and auto["confirm"] is False and "confirm=false" in auto["reason"]
    assert auto_run["finetune"] == auto_run["finetune_detail"]["strategy"] == "partial"
    assert [b["trainable_at_end"] for b in auto_run["finetune_detail"]["blocks"]] == [False] * 4 + [True]
    events = b"".join(p.read_bytes() for p in (tmp_path / "auto" / "tensorboard").glob("events.*"))
    assert b"finetune/auto" in events

    named_run = run_job(compose_cfg(tmp_path / "named", *common, "finetune=partial", "finetune.n_blocks=1"))
    assert auto_run["metrics"] == named_run["metrics"]  # the same run, bit for bit
    weights = [read_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt")["state_dict"]
               for run in ("auto", "named")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])


def test_advise_writes_the_analysis_and_trains_nothing(tmp_path, source_weights):
    record = run_job(compose_cfg(tmp_path, *TINY, *TARGET, f"model.weights={source_weights}", "mode=advise",
                                 "finetune=auto", "finetune.confirm=false"))
    assert record["status"] == "ok" and record["mode"] == "advise"
    auto = record["finetune_detail"]["auto"]
    assert auto["strategy"] == record["finetune"] == "classifier_only" and str(auto["samples_per_class"]) in auto["prior_reason"]
    assert "metrics" not in record and "epochs" not in record
    assert not (tmp_path / "checkpoints").exists()
    random_init = run_job(compose_cfg(tmp_path / "random", *TINY, *TARGET, "mode=advise"))
    assert random_init["finetune_detail"]["auto"]["strategy"] == "scratch"
    assert random_init["finetune_detail"]["auto"]["cell"]["domain"] is None


def test_pretrain_preset_composes_for_both_backbones(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=pretrain_digits")
    assert (cfg.model.name, cfg.finetune.name, cfg.data.name) == ("small_resnet", "scratch", "digits")
    assert (cfg.data.partition, cfg.data.channels, cfg.data.image_size, cfg.data.classes) == ("source", 3, 32, None)
    assert compose_cfg(tmp_path, "experiment=pretrain_digits", "model=resnet18").model.name == "resnet18"


@pytest.mark.slow
def test_resnet18_pretrains_at_32x32_and_its_checkpoint_transfers(tmp_path):
    quick = ["trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
             "+trainer.limit_test_batches=1", "callbacks.test_figures=null", "logger=none"]
    pretrain = run_job(compose_cfg(tmp_path / "pre", "experiment=pretrain_digits", "model=resnet18", *quick,
                                   f"publish={tmp_path / 'published'}"))
    assert pretrain["status"] == "ok" and pretrain["data"]["input_shape"] == [3, 8, 8]
    weights = tmp_path / "pre" / "checkpoints" / "last.ckpt"
    advice = run_job(compose_cfg(tmp_path / "advise", "model=resnet18", f"model.weights={weights}", "data=digits_m",
                                 "data.samples_per_class=10", "mode=advise", *quick))
    auto = advice["finetune_detail"]["auto"]  # measured on the checkpoint's weights
    assert len(auto["shift"]["per_block"]) == 5 and None not in auto["shift"]["per_block"].values()
    assert auto["probe_acc"] is not None and auto["cell"]["domain"] in {"similar", "different"}


def test_auto_races_by_cost_on_labelled_data_and_never_reads_the_test_split(tmp_path, source_weights, monkeypatch, caplog):
    from experiments.datamodules.base import ClassificationDataModule

    caplog.set_level("INFO", logger="experiments")
    def no_test_split(self):
        raise AssertionError("finetune=auto's race read the test split")

    monkeypatch.setattr(ClassificationDataModule, "test_dataloader", no_test_split)
    common = [*TINY, *TARGET, f"model.weights={source_weights}", "mode=advise", "finetune=auto",
              "trainer.max_epochs=30"]  # 60 steps
    record = run_job(compose_cfg(tmp_path / "full", *common, "finetune.similar_small=full",
                                 "finetune.neighbours.full=[classifier_only,partial]"))
    auto = record["finetune_detail"]["auto"]
    race = auto["race"]
    frozen = [t for t in race["trials"] if t["rung"] == 0 and t["seed"] == 0]
    backbone = [t for t in race["trials"] if t["rung"] > 0]
    assert auto["prior"] == "full" and [t["strategy"] for t in frozen] == ["classifier_only"]
    # the frozen candidate trains the run's whole schedule first, and none of it is backbone training
    assert race["trials"][0]["strategy"] == "classifier_only"
    assert frozen[0]["steps"] == 60 and frozen[0]["backbone_steps"] == 0
    # the backbone candidates share the budget (half the prior's 60 steps); the frozen one costs none of it
    assert {t["strategy"] for t in backbone} == {"full", "partial"} and 2 in {t["rung"] for t in backbone}
    assert race["backbone_steps"] == sum(t["steps"] for t in backbone) <= race["budget_steps"] == 30
    assert race["frozen_seconds"] + race["backbone_seconds"] == pytest.approx(race["seconds"], abs=0.05)
    finals = {t["strategy"]: t["score"] for t in race["trials"] if t["rung"] in (0, 2) and t["seed"] == 0}
    assert race["winner"] == auto["strategy"] == record["finetune"] and race["winner"] in finals
    assert "metrics" not in record and all(0 <= t["score"] <= 1 for t in race["trials"])
    assert auto["reason"].startswith("the race")
    assert "finetune=auto prior: full" in caplog.text and "race winner" in caplog.text

    # a frozen prior (the similar/small cell) costs one feature extraction of these 60 images: its
    # challengers' budget is a fraction of that, too little for a trial, so only the prior trains
    cheap = run_job(compose_cfg(tmp_path / "cheap", *common))["finetune_detail"]["auto"]
    assert cheap["prior"] == "classifier_only" == cheap["strategy"] and cheap["race"]["trials"] == []
    assert "did not race" in cheap["race"]["notes"][-1] and cheap["race"]["budget_steps"] < 2


def test_auto_keys_of_the_chosen_strategy_come_from_its_yaml(tmp_path):
    from omegaconf import OmegaConf

    from experiments.config.compose import CONF

    for name in ("classifier_only", "partial", "lp_ft", "full", "scratch", "gradual"):
        strategy = strategy_from_config(name, {})
        assert strategy.name == name
        yaml = OmegaConf.load(CONF / "finetune" / f"{name}.yaml")
        assert all(getattr(strategy, k) == v for k, v in yaml.items() if not k.startswith("_"))
    changed = tmp_path / "finetune"
    changed.mkdir()  # a strategy of the user's own, found through hydra.searchpath
    (changed / "slow_partial.yaml").write_text((CONF / "finetune" / "partial.yaml").read_text().replace("backbone_lr_mult: 0.1", "backbone_lr_mult: 0.02"))
    assert strategy_from_config("slow_partial", {"n_blocks": 2}, [f"file://{tmp_path}"]).backbone_lr_mult == 0.02


USER_STRATEGY = '''
from dataclasses import dataclass

from experiments.finetune.strategies import FinetuneStrategy


@dataclass
class HeadThenPartial(FinetuneStrategy):
    """The head alone for head_epochs, then the head and the last n_blocks blocks."""

    name: str = "head_then_partial"
    head_epochs: int = 1
    n_blocks: int = 1

    def trainable_depth(self, epoch: int) -> int:
        return 0 if epoch < self.head_epochs else self.n_blocks
'''

USER_STRATEGY_YAML = '''_target_: my_strategies.HeadThenPartial
name: head_then_partial
head_epochs: 1
n_blocks: 1
backbone_lr_mult: 0.1
layer_decay: null
train_bn: false
cache_features: auto
'''


@pytest.mark.slow
def test_a_strategy_added_through_the_searchpath_is_a_candidate_of_auto(tmp_path, source_weights, monkeypatch):
    """One class and one yaml outside the repository: trainable by name, raced and chosen by auto."""
    from experiments.pipeline.context import Job
    from experiments.pipeline.tasks import advise

    (tmp_path / "my_strategies.py").write_text(USER_STRATEGY)
    (tmp_path / "conf" / "finetune").mkdir(parents=True)
    (tmp_path / "conf" / "finetune" / "head_then_partial.yaml").write_text(USER_STRATEGY_YAML)
    monkeypatch.syspath_prepend(str(tmp_path))
    searchpath = (f"file://{tmp_path / 'conf'}",)
    common = [*TINY, *TARGET, f"model.weights={source_weights}", "mode=advise", "finetune=auto",
              f"hydra.searchpath=[{searchpath[0]}]"]

    raced = compose_cfg(tmp_path / "raced", *common, "trainer.max_epochs=30", "finetune.similar_small=full",
                        "finetune.neighbours.full=[head_then_partial,bitfit]")
    validate(raced)  # a neighbour of the user's own passes the early check
    race = advise(raced, Job(tmp_path / "raced", searchpath=searchpath)).record["finetune_detail"]["auto"]["race"]
    # the user's strategy and a parameter-level one race beside the prior
    first = [t for t in race["trials"] if t["rung"] == 1]
    assert [t["strategy"] for t in first] == ["full", "head_then_partial", "bitfit"]
    assert {"head_epochs": 1, "n_blocks": 1}.items() <= first[1]["keys"].items()

    chosen = compose_cfg(tmp_path / "chosen", *common, "finetune.similar_small=head_then_partial", "finetune.confirm=false")
    outcome = advise(chosen, Job(tmp_path / "chosen", searchpath=searchpath))
    assert outcome.record["finetune"] == "head_then_partial"
    assert type(outcome.parts.strategy).__name__ == "HeadThenPartial"  # built from the user's yaml
    with pytest.raises(ConfigError, match="finetune=head_then_partial has no finetune/head_then_partial.yaml"):
        advise(compose_cfg(tmp_path / "unseen", *common, "finetune.similar_small=head_then_partial",
                           "finetune.confirm=false"), Job(tmp_path / "unseen"))  # without the searchpath
