"""The per-frame perception pipeline shared by the ROS node and offline replay.

    rgb frame -> Segmenter.step() -> FrameDetections -> Tracker.update() -> TrackedFrame

The pipeline owns no ROS state; the node and the replay tool each feed it frames and
publish or record what it returns, so both run exactly the same code. It is also all the
node knows of what runs: its `info` (for logs and /diagnostics) and live post-processing.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.results import FrameDetections, Segmenter, TrackedFrame, TrackedInstance


class InstanceTracker(Protocol):
    """Assigns persistent track ids to per-frame detections."""

    @property
    def live_track_count(self) -> int:
        """Tracks alive now (tentative, confirmed and lost)."""
        ...

    @property
    def next_track_id(self) -> int:
        """The id the next confirmed track will get."""
        ...

    def update(self, frame: FrameDetections) -> tuple[TrackedInstance, ...]:
        """Associate this frame's detections with tracks; return the instances to publish."""
        ...

    def reset(self) -> None:
        """Drop all tracks (ids keep increasing afterwards)."""
        ...


@dataclass(frozen=True)
class PipelineInfo:
    """What runs, as the builder made it (for logs and /diagnostics).

    backend: the backend actually running ('' for a segmenter plugin); random_weights: no
    checkpoint was found, the masks mean nothing; fallback_reason: why the configured backend
    was replaced while running ('' while it runs).
    """

    description: str
    backend: str = ""
    precision: str = ""
    device: str = ""
    random_weights: bool = False
    fallback_reason: str = ""


class PerceptionPipeline:
    """Segmenter + tracker behind one `step(rgb) -> TrackedFrame` call.

    set_postprocess: how new post-processing settings reach the segmenter while running
    (None when the segmenter has no adjustable post-processing, e.g. a plugin).
    """

    def __init__(self, segmenter: Segmenter, tracker: InstanceTracker,
                 info: PipelineInfo | None = None,
                 set_postprocess: Callable[[PostprocessSettings], None] | None = None) -> None:
        self.segmenter = segmenter
        self.tracker = tracker
        self.info = info or PipelineInfo(description=type(segmenter).__name__)
        self._set_postprocess = set_postprocess
        self.resets: Counter[str] = Counter()

    @property
    def class_names(self) -> Sequence[str]:
        """Class names of the segmenter, indexed by class id."""
        return self.segmenter.class_names

    @property
    def adjustable_postprocess(self) -> bool:
        """Whether post-processing settings can change while running."""
        return self._set_postprocess is not None

    def set_postprocess(self, settings: PostprocessSettings) -> None:
        """Apply new post-processing settings from the next frame on."""
        if self._set_postprocess is None:
            raise RuntimeError("this segmenter has no adjustable post-processing")
        self._set_postprocess(settings)

    def step(self, rgb: np.ndarray) -> TrackedFrame:
        """Segment and track one (H, W, 3) uint8 RGB frame."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        start = time.perf_counter()
        detections = self.segmenter.step(rgb)
        return self.track(detections, (time.perf_counter() - start) * 1e3)

    def track(self, detections: FrameDetections, segment_ms: float) -> TrackedFrame:
        """Track one frame's detections, segmented by `step` or with other cameras' frames
        in one batch (inference/cameras.py) in `segment_ms`."""
        start = time.perf_counter()
        instances = self.tracker.update(detections)
        return TrackedFrame(
            height=detections.height, width=detections.width, instances=instances,
            timings_ms={"segment": segment_ms, "track": (time.perf_counter() - start) * 1e3},
            live_tracks=self.tracker.live_track_count, memory_fill=detections.memory_fill)

    def reset(self, cause: str = "requested") -> None:
        """Forget the model's temporal memory and all tracks; counted by cause."""
        self.segmenter.reset()
        self.tracker.reset()
        self.resets[cause] += 1

    def backend_fell_back(self, backend: str, reason: str) -> None:
        """Record that the segmenter now runs on `backend` because `reason` (its memory
        restarted; the tracks continue)."""
        self.info = dataclasses.replace(self.info, backend=backend, fallback_reason=reason)
        self.resets["backend_fallback"] += 1
