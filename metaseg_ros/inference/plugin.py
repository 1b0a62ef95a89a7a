"""A pipeline around a segmenter plugin ('package.module:factory'), without torch.

The `segmenter` setting replaces MetaSegmenter by any object with the Segmenter interface
(metaseg_ros.results.Segmenter). Building such a pipeline needs neither torch nor a
backend, so the node can run one where torch is not installed (the Python 3.10 lane
tests the node this way); inference/builder.py builds MetaSegmenter pipelines and uses
this module for plugins.
"""

from __future__ import annotations

import importlib

from metaseg_ros.inference.pipeline import PerceptionPipeline, PipelineInfo
from metaseg_ros.inference.settings import PipelineSettings
from metaseg_ros.results import Segmenter
from metaseg_ros.tracking import Tracker, TrackIds


def load_segmenter_plugin(spec: str) -> Segmenter:
    """The Segmenter a 'package.module:factory' spec makes."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"segmenter must look like 'package.module:factory', got '{spec}'")
    segmenter = getattr(importlib.import_module(module_name), attribute)()
    if not isinstance(segmenter, Segmenter):
        raise TypeError(f"{spec} did not return a Segmenter (class_names, step(image), reset())")
    return segmenter


def plugin_pipeline(settings: PipelineSettings, first_track_id: int = 1,
                    ids: TrackIds | None = None) -> PerceptionPipeline:
    """The plugin named by settings.model.segmenter with the configured tracker (ids: an id
    counter shared with other cameras' trackers)."""
    if not settings.model.segmenter:
        raise ValueError("plugin_pipeline needs settings.model.segmenter")
    segmenter = load_segmenter_plugin(settings.model.segmenter)
    tracker = Tracker(settings.tracker, class_names=segmenter.class_names,
                      first_track_id=first_track_id, ids=ids)
    info = PipelineInfo(description=f"plugin {settings.model.segmenter}")
    return PerceptionPipeline(segmenter, tracker, info, set_postprocess=None)
