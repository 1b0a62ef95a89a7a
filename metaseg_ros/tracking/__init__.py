"""Persistent track identities across frames (no ROS).

`Tracker` assigns uint32 track ids to the per-frame instances of a `Segmenter`
(metaseg_ros.results); `TrackerConfig` holds its settings. See tracker.py for the
association and the track lifecycle.
"""

from metaseg_ros.tracking.assignment import Assignment, assign
from metaseg_ros.tracking.config import TrackerConfig
from metaseg_ros.tracking.ids import TrackIds
from metaseg_ros.tracking.mask_summary import (
    MaskSummary,
    pairwise_intersection,
    pairwise_iou,
    summarize_mask,
)
from metaseg_ros.tracking.track import TrackSnapshot, TrackState
from metaseg_ros.tracking.tracker import MAX_TRACK_ID, Tracker

__all__ = [
    "MAX_TRACK_ID",
    "Assignment",
    "MaskSummary",
    "TrackIds",
    "TrackSnapshot",
    "TrackState",
    "Tracker",
    "TrackerConfig",
    "assign",
    "pairwise_intersection",
    "pairwise_iou",
    "summarize_mask",
]
