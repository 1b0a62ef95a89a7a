"""The per-frame perception pipeline shared by the ROS node and offline replay.

    rgb frame -> Segmenter.step() -> FrameDetections -> Tracker.update() -> TrackedFrame

The pipeline owns no ROS state; the node and the replay tool each feed it frames and
publish or record what it returns, so both run exactly the same code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from metaseg_ros.results import FrameDetections, Segmenter, TrackedFrame, TrackedInstance


class InstanceTracker(Protocol):
    """Assigns persistent track ids to per-frame detections."""

    def update(self, frame: FrameDetections) -> tuple[TrackedInstance, ...]:
        """Associate this frame's detections with tracks; return the instances to publish."""
        ...

    def reset(self) -> None:
        """Drop all tracks (ids keep increasing afterwards)."""
        ...


class PerceptionPipeline:
    """Segmenter + tracker behind one `step(rgb) -> TrackedFrame` call."""

    def __init__(self, segmenter: Segmenter, tracker: InstanceTracker) -> None:
        self.segmenter = segmenter
        self.tracker = tracker

    @property
    def class_names(self) -> Sequence[str]:
        """Class names of the segmenter, indexed by class id."""
        return self.segmenter.class_names

    def step(self, rgb: np.ndarray) -> TrackedFrame:
        """Segment and track one (H, W, 3) uint8 RGB frame."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        start = time.perf_counter()
        detections = self.segmenter.step(rgb)
        segmented = time.perf_counter()
        instances = self.tracker.update(detections)
        tracked = time.perf_counter()
        return TrackedFrame(
            height=detections.height, width=detections.width, instances=instances,
            timings_ms={"segment": (segmented - start) * 1e3, "track": (tracked - segmented) * 1e3})

    def reset(self) -> None:
        """Forget the model's temporal memory and all tracks."""
        self.segmenter.reset()
        self.tracker.reset()
