"""Model zoo: every shortcut builds, weights load from caches and files, offline fails fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from conftest import CONF, compose_cfg, run_cli, run_job
from safetensors.torch import save_file

from experiments.errors import ModelError, WeightsError
from experiments.models import timm_models, torchvision_models
from experiments.pipeline.build import model_from_config
from experiments.models.core import create_model
from experiments.models.custom import SmallCNN, build_custom

NEEDS_PARAMS = {"hub"}  # repo/entrypoint have no default
TEXT_MODELS = {"hf_text"}  # token-id inputs: tests/test_text.py
SHORTCUTS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem not in NEEDS_PARAMS | TEXT_MODELS)


def _input_for(model, channels=3, size=32):
    hw = model.preprocessing.min_size or (size, size)
    return torch.randn(2, model.preprocessing.in_chans or channels, *hw)


@pytest.mark.parametrize("option", SHORTCUTS)
def test_every_model_config_builds_and_gives_num_classes_logits(tmp_path, option):
    own_net = ["model.net._target_=experiments.models.custom.EncoderDecoderClassifier"] if option == "custom" else []
    cfg = compose_cfg(tmp_path, f"model={option}", *own_net, *(["model.pretrained=false"] if option != "efficientnet_lite0" else []))  # the packaged weights build offline
    channels = 1 if "custom" in cfg.model._target_ else 3
    model = model_from_config(cfg.model, 7, (channels, 8, 8) if channels == 1 else (3,))
    model.eval()
    x = torch.randn(2, channels, 8, 8) if channels == 1 else _input_for(model)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
    assert model.blocks, "every model exposes ordered blocks"
    assert model.num_features == model.head.in_features


def _resnet18_state(num_classes=1000, seed=0):
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=num_classes).state_dict()


def test_torchvision_pretrained_loads_from_a_filled_cache_offline(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("EXPERIMENTS_OFFLINE", "1")
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = _resnet18_state()
    torch.save(state, cache / Path(url).name)
    model = create_model(torchvision_models.build("resnet18", pretrained=True), 10)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.head.out_features == 10
    assert model.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    assert model.info.weights.startswith("torchvision:")


def test_torchvision_offline_empty_cache_fails_fast_with_every_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("EXPERIMENTS_OFFLINE", "1")  # a machine with network would download
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        create_model(torchvision_models.build("resnet18", pretrained=True), 10)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "model.weights" in message and "model.pretrained=false" in message and "resnet18" in message
    assert str(tmp_path) in message and "model=efficientnet_lite0" in message  # the cache, and the packaged model


def test_the_imagenet_options_default_to_their_weights_and_a_weights_file_downloads_nothing(tmp_path, monkeypatch):
    from experiments.pipeline.build import model_from_config

    assert compose_cfg(tmp_path, "model=resnet18").model.pretrained is True
    assert compose_cfg(tmp_path, "model=timm_resnet18").model.pretrained is True
    assert compose_cfg(tmp_path, "model=torchvision").model.pretrained is False  # any name: random init unless asked
    path = tmp_path / "r18.pth"
    torch.save(_resnet18_state(), path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("EXPERIMENTS_OFFLINE", "1")  # a download would fail: the file alone must do
    cfg = compose_cfg(tmp_path, "model=resnet18", f"model.weights={path}")
    model = model_from_config(cfg.model, 10, (3, 32, 32))
    assert torch.equal(model.backbone.state_dict()["conv1.weight"], _resnet18_state()["conv1.weight"])


def test_timm_offline_empty_cache_fails_fast(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("EXPERIMENTS_OFFLINE", "1")  # a machine with network would download
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        create_model(timm_models.build("resnet18.a1_in1k", num_classes=10, pretrained=True), 10)
    assert time.perf_counter() - start < 5
    assert "model.weights" in str(err.value) and "model.pretrained=false" in str(err.value)


def _fill_hf_cache(cache: Path, repo_id: str, files: dict[str, bytes | dict]) -> None:
    """Lay out files the way huggingface_hub's cache stores them (refs/main -> snapshot)."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0" * 40
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        path = snapshot / name
        if isinstance(content, dict):
            save_file(content, str(path))
        else:
            path.write_bytes(content)


def _timm_resnet18_state(num_classes=1000):
    import timm

    torch.manual_seed(1)
    return timm.create_model("resnet18", num_classes=num_classes).state_dict()


def test_timm_pretrained_and_hf_hub_names_load_from_a_filled_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("EXPERIMENTS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    state = _timm_resnet18_state()
    _fill_hf_cache(tmp_path, "timm/resnet18.a1_in1k", {"model.safetensors": state})
    model = create_model(timm_models.build("resnet18.a1_in1k", num_classes=10, pretrained=True), 10)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.preprocessing.mean is not None

    config = {"architecture": "resnet18", "num_classes": 1000, "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "classifier": "fc"}}
    _fill_hf_cache(tmp_path, "someone/tiny-resnet", {"config.json": json.dumps(config).encode(), "model.safetensors": state})
    model = create_model(timm_models.build("hf-hub:someone/tiny-resnet", num_classes=4, pretrained=True), 4)
    assert torch.equal(model.backbone.state_dict()["conv1.weight"], state["conv1.weight"])
    assert model.head.out_features == 4 and model.preprocessing.mean == (0.5, 0.5, 0.5)


def test_grey_scale_into_timm_uses_in_chans(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("EXPERIMENTS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    state = _timm_resnet18_state()
    _fill_hf_cache(tmp_path, "timm/resnet18.a1_in1k", {"model.safetensors": state})
    model = create_model(timm_models.build("resnet18.a1_in1k", num_classes=10, in_chans=1, pretrained=True), 10)
    conv = model.backbone.conv1.weight
    assert conv.shape[1] == 1
    assert torch.allclose(conv[:, 0], state["conv1.weight"].sum(dim=1))  # timm folds RGB filters


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_with_other_num_classes_keeps_backbone_and_renews_head(tmp_path, suffix):
    state = _resnet18_state(num_classes=1000)
    path = tmp_path / f"w{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = create_model(torchvision_models.build("resnet18"), 10, str(path))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.head.weight.shape == (10, 512)
    assert not torch.equal(model.head.weight, state["fc.weight"][:10])


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(SmallCNN(num_classes=10).state_dict(), path)
    with pytest.raises(WeightsError, match="does not"):
        create_model(torchvision_models.build("resnet18"), 10, str(path))


def test_pickled_code_is_never_loaded(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": SmallCNN(num_classes=10)}, path)  # a whole module: needs unpickling code
    with pytest.raises(WeightsError, match="tensors-only"):
        create_model(torchvision_models.build("resnet18"), 10, str(path))


def test_checkpoint_of_an_earlier_run_transfers_to_new_classes(tmp_path):
    record = run_job(compose_cfg(tmp_path / "run", "trainer.max_epochs=1"))
    ckpt = record["best_checkpoint"]
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model = create_model(build_custom(SmallCNN, num_classes=5, in_chans=1), 5, ckpt)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, saved["model.backbone." + key]), key
    assert model.head.out_features == 5


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ModelError, match="resnet18"):
        torchvision_models.build("resnet181")
    with pytest.raises(ModelError, match="convnext"):
        create_model(timm_models.build("convnxt_tiny", num_classes=10), 10)


def test_hub_local_repo_needs_trust(tmp_path):
    from experiments.models.hub_models import build

    (tmp_path / "hubconf.py").write_text(
        "import torch\n"
        "dependencies = ['torch']\n"
        "def tiny(pretrained=False, num_classes=3):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, num_classes))\n"
    )
    with pytest.raises(ModelError, match="model.trust_repo=true"):
        build(str(tmp_path), "tiny", source="local")
    model = create_model(build(str(tmp_path), "tiny", source="local", trust_repo=True), 5)
    assert model(torch.randn(2, 3, 2, 2)).shape == (2, 5)
    assert model.info.family == "hub"


def test_listing_filters_names():
    from experiments.models.listing import model_names

    names = model_names("timm", "*convnext*")
    assert names and all("convnext" in n for n in names)
    assert "resnet18" in model_names("torchvision", "resnet")


@pytest.mark.slow  # a subprocess (~10 s); the offline message itself is checked in-process above
def test_offline_cli_exits_nonzero_and_records_failure(tmp_path):
    result = run_cli(
        "model=resnet18", "model.pretrained=true", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}",
        env={"TORCH_HOME": str(tmp_path / "torch"), "EXPERIMENTS_OFFLINE": "1"},
    )
    assert result.returncode != 0
    assert "model.weights" in result.stderr and "model.pretrained=false" in result.stderr
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "failed" and "WeightsError" in record["error"]
