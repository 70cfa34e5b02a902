"""Fine-tuning at the parameter level: LoRA (peft), BitFit, norm tuning, surgical blocks, no weight
decay on 1-D parameters; one plan that groups, freezing, norm layers, the record and the cache read."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import compose_cfg, resumed_and_uninterrupted, run_job

from experiments.checkpoints import read_checkpoint
from experiments.errors import ConfigError, FinetuneError

LR = 0.01


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A 'pretrained' resnet18 state dict with non-trivial BatchNorm statistics."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    net = torchvision.models.resnet18()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    torch.save(net.state_dict(), path)
    return path, {k: v.clone() for k, v in net.state_dict().items()}


def train_resnet(tmp_path, weights, *overrides, epochs=2):
    cfg = compose_cfg(tmp_path, "model=resnet18", f"model.weights={weights}", "scheduler=none", f"optimizer.lr={LR}",
                      f"trainer.max_epochs={epochs}", "+trainer.limit_train_batches=3", "logger=none",
                      "callbacks.test_figures=null", *overrides)
    record = run_job(cfg)
    state = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]  # frozen tensors restored
    return record, state


def backbone(state: dict) -> dict:
    return {k[len("model.backbone."):]: v for k, v in state.items() if k.startswith("model.backbone.")}


def test_lora_trains_only_adapters_and_the_head_and_the_base_stays_bit_identical(tmp_path, weights_file):
    path, before = weights_file
    record, state = train_resnet(tmp_path, path, "finetune=lora", "finetune.rank=4")
    after = backbone(state)
    adapters = {k: v for k, v in after.items() if ".lora_" in k}
    base = {k.replace(".base_layer", ""): v for k, v in after.items() if ".lora_" not in k}
    assert adapters and set(base) == set(before) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(v, before[k]) for k, v in base.items())  # weights, BN affine and statistics
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in adapters.items() if "lora_B" in k)  # B moved from 0
    assert not torch.equal(state["model.head.weight"], torch.zeros_like(state["model.head.weight"]))
    detail = record["finetune_detail"]
    assert set(detail["trainable_by_kind"]) == {"head", "adapter"}
    assert record["params"]["trainable"] == sum(v.numel() for v in adapters.values()) + 512 * 10 + 10
    assert detail["feature_cache"]["used"] is False and "adapters" in detail["feature_cache"]["reason"]
    lrs = {g["name"]: g["lr_at_end"] for g in detail["lr_groups"]}
    assert lrs["head"] == lrs["block4/adapter"] == LR  # the adapters learn at the head's rate


def test_bitfit_trains_biases_and_the_head_while_batchnorm_statistics_stay(tmp_path, weights_file):
    path, before = weights_file
    record, state = train_resnet(tmp_path, path, "finetune=bitfit")
    after = backbone(state)
    moved = {k for k, v in after.items() if not torch.equal(v, before[k])}
    assert moved and all(k.endswith(".bias") for k in moved)  # BN shifts (resnet convs have no bias)
    assert all(torch.equal(after[k], before[k]) for k in after if "running_" in k)  # held in eval mode
    assert all(torch.equal(after[k], before[k]) for k in after if k.endswith(".weight"))
    kinds = record["finetune_detail"]["trainable_by_kind"]
    assert set(kinds) == {"head", "norm"}  # a norm layer's bias counts under norm (and is a bias)
    blocks = record["finetune_detail"]["blocks"]
    assert not any(b["trainable_at_end"] for b in blocks) and all(b["trainable_params_at_end"] > 0 for b in blocks)


def test_norm_tuning_trains_the_affine_parameters_of_norm_layers_only(tmp_path, weights_file):
    path, before = weights_file
    _, state = train_resnet(tmp_path, path, "finetune=norm", epochs=1)
    after = backbone(state)
    moved = {k for k, v in after.items() if not torch.equal(v, before[k])}
    assert moved and all(k.split(".")[-2].startswith("bn") or "downsample.1" in k for k in moved)
    assert not any("running_" in k for k in moved) and not any("conv" in k for k in moved)


def test_surgical_partial_trains_the_first_block_only(tmp_path, weights_file):
    path, before = weights_file
    record, state = train_resnet(tmp_path, path, "finetune=partial", "finetune.blocks=[0]", epochs=1)
    after = backbone(state)
    moved = {k.split(".")[0] for k, v in after.items() if not torch.equal(v, before[k])}
    first = record["finetune_detail"]["blocks"][0]
    assert moved and moved <= {"conv1", "bn1"} and first["trainable_at_end"]
    assert [b["trainable_at_end"] for b in record["finetune_detail"]["blocks"][1:]] == [False] * 4
    with pytest.raises(SystemExit):
        train_resnet(tmp_path / "bad", path, "finetune=partial", "finetune.blocks=[7]", epochs=1)


def test_no_decay_groups_hold_every_1d_parameter_and_the_switch_turns_it_off(tmp_path):
    from experiments.pipeline.build import build_components

    parts = build_components(compose_cfg(tmp_path, "model=small_resnet", "finetune=full"))
    groups = parts.module.optimizer_groups()
    no_decay = [p for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]]
    decay = [p for g in groups if "weight_decay" not in g for p in g["params"]]
    assert no_decay and all(p.ndim <= 1 for p in no_decay) and all(p.ndim > 1 for p in decay)
    assert len(no_decay) + len(decay) == len(list(parts.model.parameters()))
    optimizer = parts.module.optimizer_factory(groups)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.01}  # AdamW's decay on the rest
    plain = build_components(compose_cfg(tmp_path, "model=small_resnet", "finetune=full", "module.no_decay_1d=false"))
    assert not any("weight_decay" in g for g in plain.module.optimizer_groups())
    with pytest.raises(ConfigError, match="module.no_decay_1d='yes' is invalid"):
        from experiments.config.rules import validate

        validate(compose_cfg(tmp_path, "module.no_decay_1d=yes"))


def test_lora_bad_keys_are_refused_before_torch_and_a_target_that_matches_nothing_names_the_fix(tmp_path):
    from experiments.config.rules import validate
    from experiments.pipeline.build import build_components

    with pytest.raises(ConfigError, match=r"finetune.rank=0 is invalid: expected an integer >= 1"):
        validate(compose_cfg(tmp_path, "finetune=lora", "finetune.rank=0"))
    with pytest.raises(FinetuneError, match=r"finetune.target_modules=\['nothing_here'\]"):
        build_components(compose_cfg(tmp_path, "finetune=lora", "finetune.target_modules=[nothing_here]"))


def test_default_lora_targets_follow_the_family(tmp_path):
    from experiments.models.adapters import default_targets
    from experiments.pipeline.build import build_components

    resnet = build_components(compose_cfg(tmp_path, "model=resnet18", "model.pretrained=false", "finetune=lora")).model
    names = dict(resnet.backbone.named_modules())
    assert "layer1.0.conv1" in default_targets_of(resnet) or any(".lora_A" in n for n in names)
    effnet = build_components(compose_cfg(tmp_path, "model=timm_efficientnet_b0", "model.pretrained=false",
                                          "finetune=full")).model
    targets = default_targets(effnet)
    modules = dict(effnet.backbone.named_modules())
    assert targets and all(modules[t].groups == 1 for t in targets if isinstance(modules[t], torch.nn.Conv2d))
    assert all(tuple(modules[t].kernel_size) == (1, 1) for t in targets if isinstance(modules[t], torch.nn.Conv2d))


def default_targets_of(model) -> list[str]:
    """The adapted layers' names of a model that already carries adapters."""
    from experiments.models.adapters import adapted_layers

    return adapted_layers(model.backbone)


def test_lora_checkpoint_tests_predicts_exports_merged_and_loads_as_weights(tmp_path):
    """Everything after training works on a LoRA run: mode=test reproduces its metrics, the ONNX
    export is a plain model equal to the adapted one, and model.weights= of the checkpoint starts
    a plain run from the merged weights."""
    common = ["model=small_cnn", "trainer.max_epochs=2", "+trainer.limit_train_batches=3", "logger=none",
              "callbacks.test_figures=null"]
    from omegaconf import OmegaConf

    lora = ["finetune=lora", "finetune.rank=2"]
    run_cfg = compose_cfg(tmp_path / "run", *common, *lora)
    trained = run_job(run_cfg)
    (tmp_path / "run" / ".hydra").mkdir()
    OmegaConf.save(run_cfg, tmp_path / "run" / ".hydra" / "config.yaml")  # as python run.py leaves it
    ckpt = trained["best_checkpoint"]
    tested = run_job(compose_cfg(tmp_path / "test", *common, "mode=test", f"ckpt_path={ckpt}"))
    assert tested["metrics"]["test/acc"] == pytest.approx(trained["metrics"]["test/acc"])
    predicted = run_job(compose_cfg(tmp_path / "predict", *common, "mode=predict", f"ckpt_path={ckpt}"))
    assert predicted["num_predictions"] > 0 and predicted["finetune"] == "lora"
    exported = run_job(compose_cfg(tmp_path / "export", *common, "mode=export", f"ckpt_path={ckpt}"))["export"]
    assert exported["merged_adapters"] > 0 and exported["max_logit_difference"] <= exported["tolerance"]
    import onnx

    graph = onnx.load(exported["path"]).graph
    assert not [n for n in graph.initializer if "lora" in n.name.lower()]  # merged: no adapter left
    warm = run_job(compose_cfg(tmp_path / "warm", *common, "finetune=full", f"model.weights={ckpt}",
                               "trainer.max_epochs=1"))
    assert warm["status"] == "ok" and warm["weights"].startswith("file:")


NEW_STRATEGY = '''
from dataclasses import dataclass

from experiments.finetune.strategies import FinetuneStrategy


@dataclass
class LastNorms(FinetuneStrategy):
    """The head and the norm layers of the last block."""

    name: str = "last_norms"

    def trains(self, kinds, block, n_blocks, epoch):
        return "norm" in kinds and block == n_blocks - 1
'''

NEW_STRATEGY_YAML = '''_target_: my_plans.LastNorms
name: last_norms
backbone_lr_mult: 1.0
layer_decay: null
train_bn: false
cache_features: auto
'''


def test_a_new_parameter_level_strategy_is_one_class_and_one_yaml(tmp_path, monkeypatch):
    (tmp_path / "my_plans.py").write_text(NEW_STRATEGY)
    (tmp_path / "conf" / "finetune").mkdir(parents=True)
    (tmp_path / "conf" / "finetune" / "last_norms.yaml").write_text(NEW_STRATEGY_YAML)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose_cfg(tmp_path / "run", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "finetune=last_norms",
                      "model=small_resnet", "logger=none", "callbacks.test_figures=null", "+trainer.limit_train_batches=2")
    record = run_job(cfg)
    detail = record["finetune_detail"]
    trained = [b["trainable_params_at_end"] for b in detail["blocks"]]
    assert trained[:-1] == [0] * (len(trained) - 1) and trained[-1] > 0
    assert set(detail["trainable_by_kind"]) == {"head", "norm"}
    assert detail["feature_cache"]["used"] is False  # the backbone's norm layers train: not cacheable


@pytest.mark.slow
def test_a_resumed_lora_run_ends_with_the_uninterrupted_runs_adapters(tmp_path, weights_file):
    """Resume rebuilds the adapted model from the config, so the checkpoint's adapters, optimizer
    state and loops land where they were: the same weights as a run that was never stopped."""
    path, _ = weights_file
    common = ["model=resnet18", f"model.weights={path}", "finetune=lora", "finetune.rank=2", "logger=none",
              "trainer.max_epochs=2", "trainer.deterministic=true", "+trainer.limit_train_batches=3",
              "callbacks.test_figures=null"]
    a, b = resumed_and_uninterrupted(tmp_path, common, steps_per_epoch=3)
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    raw = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(".lora_A." in k for k in raw["state_dict"])
    assert not any(".base_layer." in k for k in raw["state_dict"])  # the frozen base: in the frozen file


def test_the_checkpoint_of_a_lora_run_holds_the_adapters_and_head_and_is_small(tmp_path, weights_file):
    """Without the frozen base (written once per run) a LoRA checkpoint of resnet18 is a few % of a
    full fine-tuning's."""
    path, _ = weights_file
    sizes = {}
    for name, overrides in {"full": ["finetune=full"], "lora": ["finetune=lora", "finetune.rank=2"]}.items():
        train_resnet(tmp_path / name, path, *overrides, epochs=1)
        sizes[name] = (tmp_path / name / "checkpoints" / "last.ckpt").stat().st_size
    assert sizes["lora"] <= 0.05 * sizes["full"], sizes


def test_lora_without_peft_installed_names_the_extra_before_torch(tmp_path, monkeypatch):
    import experiments.config.rules as rules

    monkeypatch.setattr(rules, "_importable", lambda module: module != "peft")  # as on a machine without it
    with pytest.raises(ConfigError, match=r'finetune=lora needs peft, which is not installed: pip install -e "\.\[adapters\]"'):
        rules.validate(compose_cfg(tmp_path, "finetune=lora"))
    rules.validate(compose_cfg(tmp_path, "finetune=bitfit"))  # the other strategies need no peft
