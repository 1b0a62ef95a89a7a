"""Per-frame objects (ground truth or predictions) as plain numpy data for the metrics.

A sequence is a list of `FrameObjects`, one per frame (frames without objects included),
the same length for ground truth and prediction. Masks are compressed COCO RLE dicts
(pycocotools' format: {'size': [H, W], 'counts': bytes}), so long videos stay small and
pycocotools computes mask IoU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from metaseg_ros.results import TrackedInstance

CocoRle = dict[str, Any]


def encode_masks(masks: Iterable[np.ndarray]) -> tuple[CocoRle, ...]:
    """Compressed COCO RLE of each (H, W) boolean mask."""
    return tuple(mask_utils.encode(np.asfortranarray(m, dtype=np.uint8)) for m in masks)


@dataclass(frozen=True, eq=False)
class FrameObjects:
    """The objects of one frame: ids plus boxes and/or masks (and optional scores, classes).

    ids: (N,) int64 object or track ids (unique within the frame).
    boxes: (N, 4) float64 [x, y, width, height] in pixels, or None.
    masks: N compressed COCO RLEs of the same image size, or None.
    scores: (N,) float64 confidences, or None (ground truth).
    class_ids: (N,) int64 class ids, or None.
    """

    ids: np.ndarray
    boxes: np.ndarray | None = None
    masks: tuple[CocoRle, ...] | None = None
    scores: np.ndarray | None = None
    class_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        object.__setattr__(self, "ids", ids)
        n = ids.size
        if np.unique(ids).size != n:
            raise ValueError(f"ids must be unique within a frame, got {ids.tolist()}")
        if self.boxes is not None:
            boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
            if boxes.shape[0] != n:
                raise ValueError(f"{boxes.shape[0]} boxes for {n} ids")
            object.__setattr__(self, "boxes", boxes)
        if self.masks is not None:
            masks = tuple(self.masks)
            if len(masks) != n:
                raise ValueError(f"{len(masks)} masks for {n} ids")
            object.__setattr__(self, "masks", masks)
        for name, dtype in (("scores", np.float64), ("class_ids", np.int64)):
            value = getattr(self, name)
            if value is not None:
                array = np.asarray(value, dtype=dtype).reshape(-1)
                if array.size != n:
                    raise ValueError(f"{array.size} {name} for {n} ids")
                object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return int(self.ids.size)

    @classmethod
    def empty(cls, with_boxes: bool = True, with_masks: bool = False) -> FrameObjects:
        """A frame without objects."""
        return cls(ids=np.zeros(0, dtype=np.int64),
                   boxes=np.zeros((0, 4)) if with_boxes else None,
                   masks=() if with_masks else None)

    @classmethod
    def from_masks(cls, ids: Sequence[int], masks: Sequence[np.ndarray],
                   scores: Sequence[float] | None = None,
                   class_ids: Sequence[int] | None = None) -> FrameObjects:
        """Objects from (H, W) boolean masks; boxes are the masks' tight boxes."""
        rles = encode_masks(masks)
        boxes = mask_utils.toBbox(list(rles)) if rles else np.zeros((0, 4))
        return cls(ids=np.asarray(ids), boxes=boxes, masks=rles, scores=scores,
                   class_ids=class_ids)

    @classmethod
    def from_tracked(cls, instances: Sequence[TrackedInstance],
                     with_masks: bool = True) -> FrameObjects:
        """Predictions from a tracker's output for one frame."""
        boxes = np.array([(i.bbox.x, i.bbox.y, i.bbox.width, i.bbox.height)
                          for i in instances], dtype=np.float64).reshape(-1, 4)
        return cls(ids=np.array([i.track_id for i in instances], dtype=np.int64), boxes=boxes,
                   masks=encode_masks(i.mask for i in instances) if with_masks else None,
                   scores=np.array([i.score for i in instances]),
                   class_ids=np.array([i.class_id for i in instances], dtype=np.int64))


def load_mot_challenge(path: str | Path, num_frames: int | None = None,
                       min_confidence: float = -np.inf) -> list[FrameObjects]:
    """Read a MOTChallenge 2D text file (frame, id, x, y, w, h, conf, ...; frames from 1).

    Returns one FrameObjects per frame 1..num_frames (default: the last frame in the file);
    rows with conf < min_confidence are skipped.
    """
    table = np.loadtxt(path, delimiter=",", ndmin=2)
    if table.size and table.shape[1] < 7:
        raise ValueError(f"{path}: expected at least 7 comma-separated columns")
    table = table[table[:, 6] >= min_confidence] if table.size else table
    frames = table[:, 0].astype(np.int64) if table.size else np.zeros(0, dtype=np.int64)
    last = int(frames.max()) if frames.size else 0
    count = last if num_frames is None else num_frames
    result = []
    for frame in range(1, count + 1):
        rows = table[frames == frame]
        result.append(FrameObjects(ids=rows[:, 1].astype(np.int64), boxes=rows[:, 2:6],
                                   scores=rows[:, 6]))
    return result
