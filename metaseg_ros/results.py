"""Plain data passed between the segmenter, the tracker and their users (node, replay, eval).

No ROS and no torch here: these are numpy-backed, immutable records.

    image (H, W, 3) uint8 RGB
      -> Segmenter.step()       -> FrameDetections   (instances of one frame, no identity)
      -> Tracker.update()       -> TrackedInstance[] (persistent track ids)
      -> PerceptionPipeline.step() returns TrackedFrame
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class BoundingBox:
    """Axis-aligned pixel box: top-left corner (x, y) and size, in source-image pixels."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> BoundingBox:
        """Tight box around the True pixels of a (H, W) mask; all zeros for an empty mask."""
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return cls(0, 0, 0, 0)
        cols = np.flatnonzero(mask.any(axis=0))
        return cls(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
                   int(rows[-1] - rows[0] + 1))

    def clipped(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The box inside a height x width image as half-open (x0, y0, x1, y1), with
        x0 <= x1 and y0 <= y1 (empty where the box lies outside the image)."""
        x0, y0 = min(max(self.x, 0), width), min(max(self.y, 0), height)
        return (x0, y0, max(min(self.x + self.width, width), x0),
                max(min(self.y + self.height, height), y0))


@dataclass(frozen=True, slots=True, eq=False)
class Detection:
    """One instance segmented in one frame, before tracking.

    mask: (H, W) bool at the source image's resolution.
    embedding: (D,) float32 query embedding of the decoder query that produced it
        (used by the tracker for association).
    class_probs: (C,) float32 class probabilities over the model's classes, the
        no-object class excluded (used by the tracker's class vote).
    query_index: the decoder query slot that produced it (-1 when not applicable).
    bbox: the tight box of the mask (post-processing computes it), so that consumers read
        only that part of the mask; None when the producer does not know it. Pixels outside
        it are ignored, and a box that is not tight is passed on as it is.
    """

    class_id: int
    score: float
    mask: np.ndarray
    embedding: np.ndarray
    class_probs: np.ndarray
    query_index: int = -1
    bbox: BoundingBox | None = None


@dataclass(frozen=True, slots=True, eq=False)
class FrameDetections:
    """All instances segmented in one frame of size height x width.

    memory_fill: past frames in the segmenter's temporal memory when this frame was
    segmented (-1 when the segmenter keeps no such memory or does not say).
    """

    height: int
    width: int
    detections: tuple[Detection, ...]
    memory_fill: int = -1


@dataclass(frozen=True, slots=True)
class InstanceGeometry:
    """An instance's 3-D from depth, in the camera's optical frame (x right, y down, z
    forward), in metres (metaseg_ros/geometry.py computes it).

    position: robust centre, None when too few valid depth pixels lie inside the mask;
    extent_min, extent_max: corners of the percentile box (None with position);
    depth_pixels: valid depth pixels inside the mask, at the depth image's resolution.
    """

    position: tuple[float, float, float] | None
    extent_min: tuple[float, float, float] | None
    extent_max: tuple[float, float, float] | None
    depth_pixels: int

    @property
    def valid(self) -> bool:
        """Whether the instance has a 3-D position."""
        return self.position is not None


@dataclass(frozen=True, slots=True, eq=False)
class TrackedInstance:
    """An instance with a persistent identity, as published to planners.

    track_id: uint32, monotonic, never reused while the process lives; 0 is reserved.
    bbox: the tight box of the mask; message encoding and label images read the mask only
        inside it.
    age: frames since the track was born, this one included; hits: frames it was seen.
    geometry: 3-D from a depth image matched to the frame (None: no depth for this frame).
    """

    track_id: int
    class_id: int
    class_name: str
    score: float
    mask: np.ndarray
    bbox: BoundingBox
    age: int
    hits: int
    geometry: InstanceGeometry | None = None


@dataclass(frozen=True, slots=True, eq=False)
class TrackedFrame:
    """The result of one pipeline step: tracked instances, per-stage timings (ms), the
    tracks alive after it (tentative and lost ones included) and the frames in the model's
    memory (FrameDetections.memory_fill); -1 when unknown."""

    height: int
    width: int
    instances: tuple[TrackedInstance, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
    live_tracks: int = -1
    memory_fill: int = -1


@runtime_checkable
class Segmenter(Protocol):
    """What produces per-frame instances from RGB frames while keeping temporal state."""

    @property
    def class_names(self) -> Sequence[str]:
        """Names of the model's classes, indexed by class_id."""
        ...

    def step(self, image: np.ndarray) -> FrameDetections:
        """Segment one (H, W, 3) uint8 RGB frame, updating the temporal memory."""
        ...

    def reset(self) -> None:
        """Forget all temporal state (start of a new video)."""
        ...
