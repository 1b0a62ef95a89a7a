"""Backbones returning four feature maps at strides 4, 8, 16, 32 (attribute ``channels``)."""

from __future__ import annotations

from torch import nn

from metaseg_ros.model.backbones.efficientnet_lite import EfficientNetLite0
from metaseg_ros.model.backbones.resnet import ResNet
from metaseg_ros.model.backbones.swin import SwinTransformer
from metaseg_ros.model.config import BackboneConfig

__all__ = ["EfficientNetLite0", "ResNet", "SwinTransformer", "build_backbone"]


def build_backbone(config: BackboneConfig) -> nn.Module:
    """Instantiate the backbone described by config (random weights)."""
    if config.kind == "resnet":
        return ResNet(config.depth)
    if config.kind == "swin":
        return SwinTransformer(config.embed_dim, tuple(config.depths), tuple(config.num_heads),
                               config.window_size, config.mlp_ratio, config.patch_size)
    if config.kind == "efficientnet_lite0":
        return EfficientNetLite0()
    raise ValueError(f"unknown backbone kind {config.kind!r}")
