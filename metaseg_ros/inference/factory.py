"""Building a PerceptionPipeline from settings (the node's parameters, replay's options)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metaseg_ros.inference.pipeline import PerceptionPipeline
from metaseg_ros.results import Segmenter


@dataclass(frozen=True)
class PipelineSettings:
    """What to run: model, backend, post-processing and tracker settings."""

    model_config: str = "tiny"
    checkpoint: str = ""
    backend: str = "eager"
    device: str = "cpu"
    precision: str = "float32"
    num_threads: int = 0
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    max_instances: int = 20
    resolve_overlaps: bool = True
    min_kept_fraction: float = 0.5
    segmenter: str = ""
    tracker: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> PipelineSettings:
        """Settings from a flat parameter mapping ('tracker.<field>' keys for the tracker)."""
        names = {f for f in cls.__dataclass_fields__ if f != "tracker"}
        tracker = {key.split(".", 1)[1]: value for key, value in params.items()
                   if key.startswith("tracker.")}
        return cls(**{key: params[key] for key in names if key in params}, tracker=tracker)


def load_segmenter_factory(spec: str) -> Callable[[], Segmenter]:
    """Resolve 'package.module:callable' to the callable."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"segmenter must look like 'package.module:factory', got '{spec}'")
    return getattr(importlib.import_module(module_name), attribute)


def create_segmenter(settings: PipelineSettings, log: Callable[[str], None] = print) -> Segmenter:
    """The segmenter the settings ask for: MetaSegmenter, or a 'module:factory' plugin."""
    if settings.segmenter:
        segmenter = load_segmenter_factory(settings.segmenter)()
        if not isinstance(segmenter, Segmenter):
            raise TypeError(f"{settings.segmenter} did not return a Segmenter "
                            "(class_names, step(image), reset())")
        return segmenter
    from metaseg_ros.inference.segmenter import MetaSegSegmenter

    return MetaSegSegmenter.from_settings(settings, log=log)


def create_pipeline(settings: PipelineSettings,
                    log: Callable[[str], None] = print) -> PerceptionPipeline:
    """Segmenter and tracker as configured, joined into one pipeline."""
    from metaseg_ros.tracking import Tracker, TrackerConfig

    segmenter = create_segmenter(settings, log=log)
    tracker = Tracker(TrackerConfig(**settings.tracker), class_names=segmenter.class_names)
    return PerceptionPipeline(segmenter, tracker)
