"""Architecture configuration of MetaSegmenter: small frozen dataclasses, JSON round trip.

A config fully describes the network's shapes; weights live beside it in a
safetensors file (see checkpoint.py). Named presets:

    tiny     EfficientNet-Lite0, pixel decoder 96 channels with 2 encoder layers, decoder hidden
             128 with 6 layers: CPU tests and real-time CPU use (about 13 GFLOPs at 512x512)
    r50      ResNet-50, Mask2Former's COCO instance configuration (default for GPU)
    swin-t, swin-s, swin-b, swin-l
             Swin backbones as in Mask2Former's model zoo (B and L use 384-pretrained window 12)

The default class list is metaseg_ros.classes.DEFAULT_CLASSES (20 robotics-relevant classes,
documented in config/metaseg.yaml); converted COCO checkpoints carry the 80 COCO classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.settings import MODEL_CONFIGS

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
# EfficientNet-Lite was trained in TensorFlow with inputs scaled as (x - 127) / 128.
EFFICIENTNET_LITE_MEAN_255 = (127.0, 127.0, 127.0)
EFFICIENTNET_LITE_STD_255 = (128.0, 128.0, 128.0)

BACKBONE_KINDS = ("resnet", "swin", "efficientnet_lite0")


@dataclass(frozen=True)
class BackboneConfig:
    """Backbone giving feature maps at strides 4, 8, 16, 32.

    kind: "resnet" (torchvision parameter names), "swin" (original Swin names) or
        "efficientnet_lite0" (names of the efficientnet-lite-pytorch package).
    depth: ResNet depth (18, 34, 50 or 101).
    embed_dim, depths, num_heads, window_size, mlp_ratio, patch_size: Swin only.
    """

    kind: str = "resnet"
    depth: int = 50
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    patch_size: int = 4


@dataclass(frozen=True)
class PixelDecoderConfig:
    """Mask2Former's multi-scale deformable-attention pixel decoder (strides 8/16/32 + FPN to 4)."""

    conv_dim: int = 256
    mask_dim: int = 256
    encoder_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 1024
    num_points: int = 4


@dataclass(frozen=True)
class DecoderConfig:
    """Masked-attention transformer decoder (the layer count is MetaSegConfig.num_decoder_layers).

    video_pos_embedding: the checkpoint comes from Video Mask2Former, whose 3-D sine position
        embedding adds a time term; for a one-frame clip that term is a constant added to the
        keys' position embedding of every masked cross-attention.
    """

    num_heads: int = 8
    ffn_dim: int = 2048
    pre_norm: bool = False
    enforce_input_projection: bool = False
    video_pos_embedding: bool = False


@dataclass(frozen=True)
class MemoryConfig:
    """Space-time memory bank (the number of frames is MetaSegConfig.memory_frames).

    feature_dim: channels of the stored low-resolution pixel features (C_mem).
    pool_stride: image stride of the stored pixel features: 16 (the pixel decoder's stride-16
        level, 4x the keys of 32) or a multiple of 32 (its stride-32 level, average-pooled);
        64 stores an 8x8 map per frame for 512x512 input.
    num_heads: heads of the cross-frame attention.
    pixel_read: the stride-8 pixel features also read the stored pixel features before the
        mask features are made (model/pixel_memory.py); off in the shipped models.
    content_gate: every memory read's gate also depends on the token and what it read
        (MemoryAttention: per query, per pixel); off in the shipped models.
    keep_gate: the pixel read can also scale each pixel's own features, at stride 8 and in
        the FPN's stride-4 input (1 + tanh(MLP([LN(pixel), read])): a damaged row can give
        up what it carries); needs pixel_read; off in the shipped models.
    past_mask_features: the last frame's stride-4 mask features are kept (MemoryState.
        mask_features) and each pixel can take them instead of its own
        (model/mask_memory.py); off in the shipped models.
    past_mask_motion: the kept mask features are moved on by the flow between the last two
        frames before the blend (model/mask_motion.py; the flow is kept with them); needs
        past_mask_features; off in the shipped models.
    past_mask_frame_context: the carry's gate also sees the mean of its hidden features
        over the whole frame (a blurred or dark frame, not a smooth region); needs
        past_mask_features; off in the shipped models.
    """

    feature_dim: int = 256
    pool_stride: int = 64
    num_heads: int = 8
    pixel_read: bool = False
    content_gate: bool = False
    keep_gate: bool = False
    past_mask_features: bool = False
    past_mask_motion: bool = False
    past_mask_frame_context: bool = False


@dataclass(frozen=True)
class MetaSegConfig:
    """Everything needed to build a MetaSegmenter (weights excluded)."""

    name: str
    class_names: tuple[str, ...] = DEFAULT_CLASSES
    image_size: tuple[int, int] = (512, 512)
    num_queries: int = 100
    hidden_dim: int = 256
    num_decoder_layers: int = 9
    memory_frames: int = 4
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN_255
    pixel_std: tuple[float, float, float] = IMAGENET_STD_255
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def __post_init__(self) -> None:
        validate_config(self)

    @property
    def num_classes(self) -> int:
        """Number of object classes (the class head has one more output: no-object)."""
        return len(self.class_names)

    @property
    def memory_size(self) -> tuple[int, int]:
        """(h_mem, w_mem): spatial size of one stored frame's pixel features."""
        stride = self.memory.pool_stride
        return self.image_size[0] // stride, self.image_size[1] // stride

    @property
    def mask_size(self) -> tuple[int, int]:
        """(H/4, W/4): spatial size of the mask logits."""
        return self.image_size[0] // 4, self.image_size[1] // 4


def validate_config(config: MetaSegConfig) -> None:
    """Raise ValueError when a config cannot build a working network."""
    problems: list[str] = []
    if config.backbone.kind not in BACKBONE_KINDS:
        problems.append(f"backbone.kind {config.backbone.kind!r} not in {BACKBONE_KINDS}")
    if config.num_classes < 1:
        problems.append("class_names is empty")
    height, width = config.image_size
    stride = config.memory.pool_stride
    if stride != 16 and (stride % 32 != 0 or stride <= 0):
        problems.append(f"memory.pool_stride {stride} must be 16 or a positive multiple of 32")
    elif height % stride or width % stride:
        problems.append(f"image_size {config.image_size} must be divisible by pool_stride {stride}")
    if config.memory.keep_gate and not config.memory.pixel_read:
        problems.append("memory.keep_gate needs memory.pixel_read")
    if config.memory.past_mask_motion and not config.memory.past_mask_features:
        problems.append("memory.past_mask_motion needs memory.past_mask_features")
    if config.memory.past_mask_frame_context and not config.memory.past_mask_features:
        problems.append("memory.past_mask_frame_context needs memory.past_mask_features")
    if config.memory_frames < 1:
        problems.append("memory_frames must be >= 1")
    if config.num_decoder_layers < 1 or config.num_queries < 1:
        problems.append("num_decoder_layers and num_queries must be >= 1")
    for label, dim, heads in (
        ("hidden_dim", config.hidden_dim, config.decoder.num_heads),
        ("pixel_decoder.conv_dim", config.pixel_decoder.conv_dim, config.pixel_decoder.num_heads),
        ("hidden_dim (memory)", config.hidden_dim, config.memory.num_heads),
    ):
        if dim % heads:
            problems.append(f"{label} {dim} not divisible by {heads} heads")
    if config.pixel_decoder.conv_dim % 32:
        problems.append("pixel_decoder.conv_dim must be a multiple of 32 (GroupNorm(32))")
    if config.hidden_dim % 2:
        problems.append("hidden_dim must be even (sine position embedding)")
    if problems:
        raise ValueError(f"invalid MetaSegConfig {config.name!r}: " + "; ".join(problems))


def _preset(name: str) -> MetaSegConfig:
    if name == "tiny":
        return MetaSegConfig(
            name="tiny",
            hidden_dim=128,
            num_decoder_layers=6,
            pixel_mean=EFFICIENTNET_LITE_MEAN_255,
            pixel_std=EFFICIENTNET_LITE_STD_255,
            backbone=BackboneConfig(kind="efficientnet_lite0"),
            # A slimmer pixel decoder than Mask2Former's: its stride-4 convolution and the
            # deformable encoder over 5376 tokens dominate the cost at 512x512.
            pixel_decoder=PixelDecoderConfig(
                conv_dim=96, mask_dim=96, encoder_layers=2, num_heads=3, ffn_dim=384
            ),
            decoder=DecoderConfig(num_heads=4, ffn_dim=1024),
            memory=MemoryConfig(feature_dim=128, pool_stride=64, num_heads=4),
        )
    if name == "r50":
        return MetaSegConfig(name="r50", backbone=BackboneConfig(kind="resnet", depth=50))
    swin = {
        "swin-t": BackboneConfig("swin", embed_dim=96, depths=(2, 2, 6, 2),
                                 num_heads=(3, 6, 12, 24), window_size=7),
        "swin-s": BackboneConfig("swin", embed_dim=96, depths=(2, 2, 18, 2),
                                 num_heads=(3, 6, 12, 24), window_size=7),
        "swin-b": BackboneConfig("swin", embed_dim=128, depths=(2, 2, 18, 2),
                                 num_heads=(4, 8, 16, 32), window_size=12),
        "swin-l": BackboneConfig("swin", embed_dim=192, depths=(2, 2, 18, 2),
                                 num_heads=(6, 12, 24, 48), window_size=12),
    }
    if name in swin:
        # Mask2Former's Swin-L COCO instance model uses 200 queries.
        queries = 200 if name == "swin-l" else 100
        return MetaSegConfig(name=name, num_queries=queries, backbone=swin[name])
    raise ValueError(f"unknown config {name!r}; known: {', '.join(CONFIG_NAMES)}")


CONFIG_NAMES: tuple[str, ...] = MODEL_CONFIGS


def get_config(name: str, **overrides: Any) -> MetaSegConfig:
    """A named preset with field overrides.

    Nested configs may be overridden with a dataclass or with a dict of their fields, e.g.
    ``get_config("tiny", image_size=(128, 128), memory={"pool_stride": 32})``.
    """
    config = _preset(name)
    return replace_config(config, **overrides) if overrides else config


def replace_config(config: MetaSegConfig, **overrides: Any) -> MetaSegConfig:
    """Copy of config with overrides (nested configs accept dicts of their fields)."""
    nested_types = {f.name: type(getattr(config, f.name)) for f in fields(config)
                    if dataclasses.is_dataclass(getattr(config, f.name))}
    resolved: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in {f.name for f in fields(config)}:
            raise ValueError(f"MetaSegConfig has no field {key!r}")
        if key in nested_types and isinstance(value, dict):
            value = dataclasses.replace(getattr(config, key), **_tuples(value))
        elif isinstance(value, list):
            value = tuple(value)
        resolved[key] = value
    return dataclasses.replace(config, **resolved)


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def config_to_dict(config: MetaSegConfig) -> dict[str, Any]:
    """JSON-able dict (tuples become lists)."""
    return _jsonable(dataclasses.asdict(config))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def config_from_dict(data: dict[str, Any]) -> MetaSegConfig:
    """Inverse of config_to_dict; unknown keys raise ValueError."""
    nested = {"backbone": BackboneConfig, "pixel_decoder": PixelDecoderConfig,
              "decoder": DecoderConfig, "memory": MemoryConfig}
    known = {f.name for f in fields(MetaSegConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown MetaSegConfig keys: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in nested:
            cls = nested[key]
            sub_known = {f.name for f in fields(cls)}
            sub_unknown = set(value) - sub_known
            if sub_unknown:
                raise ValueError(f"unknown {key} keys: {sorted(sub_unknown)}")
            kwargs[key] = cls(**_tuples(value))
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return MetaSegConfig(**kwargs)
