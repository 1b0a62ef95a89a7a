"""Our ResNet-50 equals transformers' ResNet-50 given the same weights, and its parameter
names are torchvision's (so public torchvision ResNet weights load unchanged)."""

from __future__ import annotations

import pytest
import torch

from metaseg_ros.model.backbones import ResNet
from metaseg_ros.model.convert.common import KeyMapper
from metaseg_ros.model.convert.hf import map_hf_resnet

transformers = pytest.importorskip("transformers")

# A sample of torchvision.models.resnet50().state_dict() names (without the fc head).
TORCHVISION_R50_KEYS = {
    "conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.0.bn3.bias",
    "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_mean",
    "layer2.3.conv2.weight", "layer3.5.bn2.num_batches_tracked", "layer4.0.downsample.1.weight",
    "layer4.2.conv3.weight",
}


def test_parameter_names_and_count_are_torchvision_resnet50():
    state = ResNet(50).state_dict()
    assert set(state) >= TORCHVISION_R50_KEYS
    # torchvision's resnet50 has 320 state-dict entries, 2 of them the fc head.
    assert len(state) == 318
    assert sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean",
               "running_var", "num_batches_tracked"))) == 25557032 - 2049000


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_resnet50_equals_transformers_resnet50(dtype):
    torch.manual_seed(0)
    reference = transformers.ResNetModel(transformers.ResNetConfig()).eval()  # ResNet-50
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in reference.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0, generator=generator)
            elif tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.05)
    mapper = KeyMapper(reference.state_dict(), ignore=[r"num_batches_tracked$"])
    map_hf_resnet(mapper, source_prefix="", target_prefix="")
    ours = ResNet(50).eval()
    result = ours.load_state_dict(mapper.target, strict=False)
    assert [k for k in result.missing_keys if not k.endswith("num_batches_tracked")] == []
    assert result.unexpected_keys == [] and mapper.leftovers()[1] == []
    reference.to(dtype)
    ours.to(dtype)
    images = torch.randn(2, 3, 96, 128, generator=generator, dtype=dtype)
    with torch.no_grad():
        expected = reference(images, output_hidden_states=True).hidden_states[1:]
        features = ours(images)
    for a, b in zip(features, expected, strict=True):
        assert a.shape == b.shape
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-5
