"""What a pipeline runs: model and backend, post-processing, tracker (no torch here).

Each field is declared once with its description and range (`metaseg_ros.settings`); the
node's parameter table, its live reconfiguration and the builder read them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from metaseg_ros.settings import (
    BACKEND_CHOICES,
    DEVICES,
    MODEL_CONFIGS,
    PRECISIONS,
    check_settings,
    setting,
)
from metaseg_ros.tracking.config import TrackerConfig

TRACKER_PREFIX = "tracker."


@dataclass(frozen=True)
class ModelSettings:
    """Which network runs, with which weights, on which backend and device."""

    model_config: str = setting(
        "tiny", "MetaSegmenter architecture when no checkpoint is given", choices=MODEL_CONFIGS)
    checkpoint: str = setting(
        "", "Path of a metaseg checkpoint (.safetensors with its .json) or of an export made "
        "by metaseg-export (.onnx, .pt2, .ep: run on the matching backend); '' = the weights "
        "shipped with the package, random weights if none")
    backend: str = setting(
        "auto", "Inference backend; auto = the fastest of the candidates measured on this "
        "machine at first start, with outputs checked against eager (CPU: eager, onnxruntime; "
        "CUDA: eager, cudagraph, compiled, tensorrt when installed); the decision is cached in "
        "$METASEG_CACHE_DIR with the exports", choices=BACKEND_CHOICES)
    device: str = setting(
        "cpu", "Torch device of the eager, cudagraph, compiled, exported and tensorrt backends",
        choices=DEVICES)
    precision: str = setting(
        "float32", "Arithmetic of the eager, cudagraph and compiled backends: float16/bfloat16 "
        "run the network under autocast (GPU tensor cores); int8 (opt-in, CPU): onnxruntime "
        "with the linear layers in int8, faster, outputs no longer float32's (docs/benchmarks.md)",
        choices=PRECISIONS)
    num_threads: int = setting(
        0, "CPU threads for inference (0 = library default)", minimum=0, maximum=256)
    fallback_backend: str = setting(
        "eager", "When the backend fails while running (CUDA out of memory, an ONNX Runtime "
        "or TensorRT error): 'eager' runs on eager PyTorch from then on, on the same device, "
        "else on the CPU (the model's memory starts empty once); 'none' drops the frames",
        choices=("eager", "none"))
    segmenter: str = setting(
        "", "Advanced: 'module:factory' returning an object with the Segmenter interface "
        "(metaseg_ros.results.Segmenter) instead of MetaSegmenter")

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class PostprocessSettings:
    """Thresholds of instance selection (every one can change while the node runs)."""

    score_threshold: float = setting(
        0.5, "Minimum instance score (class prob x mask quality)", minimum=0.0, maximum=1.0,
        live=True)
    mask_threshold: float = setting(
        0.5, "Probability above which a pixel belongs to a mask", minimum=0.01, maximum=0.99,
        live=True)
    max_instances: int = setting(
        20, "At most this many instances per frame (highest scores)", minimum=1, maximum=1000,
        live=True)
    resolve_overlaps: bool = setting(
        True, "Give each pixel to at most one instance (the most confident)", live=True)
    # 0.5 was chosen on a validation split of the synthetic generator (docs/benchmarks.md);
    # Mask2Former's panoptic inference drops such instances the same way.
    min_kept_fraction: float = setting(
        0.5, "With resolve_overlaps: drop an instance left with less than this fraction of "
        "its own mask (duplicates of a more confident one; 0 keeps every instance with a "
        "pixel left)", minimum=0.0, maximum=1.0, live=True)

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class PipelineSettings:
    """Everything a PerceptionPipeline is built from."""

    model: ModelSettings = field(default_factory=ModelSettings)
    postprocess: PostprocessSettings = field(default_factory=PostprocessSettings)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> PipelineSettings:
        """Settings from the node's flat parameters: model and post-processing fields by
        their own names, tracker fields as 'tracker.<field>'; others are ignored."""
        tracker = {key.removeprefix(TRACKER_PREFIX): value for key, value in params.items()
                   if key.startswith(TRACKER_PREFIX)}
        return cls(ModelSettings(**_known(ModelSettings, params)),
                   PostprocessSettings(**_known(PostprocessSettings, params)),
                   TrackerConfig(**tracker))


def _known(cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    return {spec.name: params[spec.name] for spec in fields(cls) if spec.name in params}
