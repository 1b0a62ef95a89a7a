"""Tracker settings (exposed by the ROS node as `tracker.<field>` parameters)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

EMBEDDING_MATCH_MODES = ("mean", "best")


@dataclass(frozen=True)
class TrackerConfig:
    """Association, lifecycle and class-vote settings of `Tracker`.

    Association: for each (detection, track) pair a similarity in [0, 1] is the weighted
    mean of three terms, `embedding_weight` * cosine(query embedding, the track's embedding
    bank) + `iou_weight` * mask IoU with the track's last mask + `class_weight` *
    Bhattacharyya coefficient of the class distributions; pairs below `min_similarity` are
    never matched; the rest are matched by the Hungarian algorithm.

    Lifecycle: a detection no track takes starts a tentative track if its score is at least
    `birth_score` and it is not a duplicate (more than `duplicate_overlap` of its mask inside
    the mask of a detection already matched or born this frame); a tentative track detected
    in `confirm_hits` consecutive frames becomes confirmed and gets its track id; a tentative
    track missed once is dropped. A confirmed track missed in a frame becomes lost, is
    re-identified if matched within `max_lost` frames, and is deleted when unseen for more
    than `max_lost` frames. Established (confirmed or lost) tracks are matched before
    tentative ones.
    """

    max_lost: int = 30
    """Frames a confirmed track survives unseen (re-identified if it reappears within them)."""
    confirm_hits: int = 2
    """Consecutive detected frames before a new track is confirmed and published (1 = at once)."""
    birth_score: float = 0.5
    """Minimum detection score to start a new track."""
    min_score: float = 0.3
    """Detections below this score are ignored (between it and birth_score they only
    continue existing tracks)."""
    min_similarity: float = 0.5
    """Gate: a detection and a track are never matched below this combined similarity."""
    embedding_weight: float = 0.6
    """Weight of the query-embedding cosine similarity."""
    iou_weight: float = 0.3
    """Weight of the mask IoU with the track's last mask."""
    class_weight: float = 0.1
    """Weight of the class-distribution agreement."""
    query_slot_weight: float = 0.0
    """Weight of query-slot continuity: 1 when the detection comes from the decoder query
    that produced the track's last detection (the model's memory lets queries keep their
    object from frame to frame), else 0."""
    embedding_bank_size: int = 10
    """Embeddings of the last N matched detections kept per track."""
    embedding_match: str = "mean"
    """'mean': cosine with the mean of the bank; 'best': the best cosine over the bank."""
    class_ema: float = 0.3
    """Weight of the newest frame in the exponential moving average of class probabilities."""
    duplicate_overlap: float = 0.7
    """An unmatched detection with more than this fraction of its mask inside the mask of a
    detection matched (or born, with a higher score) this frame is a duplicate and starts no
    track (1.0 turns the check off)."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.type == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"TrackerConfig.{spec.name} must be an int, got {value!r}")
            elif spec.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"TrackerConfig.{spec.name} must be a number, got {value!r}")
                if not math.isfinite(value):
                    raise ValueError(f"TrackerConfig.{spec.name} must be finite, got {value!r}")
                object.__setattr__(self, spec.name, float(value))
        self._check_range("max_lost", 0, 1_000_000)
        self._check_range("confirm_hits", 1, 1000)
        self._check_range("embedding_bank_size", 1, 1000)
        for name in ("birth_score", "min_score", "min_similarity", "duplicate_overlap",
                     "embedding_weight", "iou_weight", "class_weight", "query_slot_weight"):
            self._check_range(name, 0.0, 1.0)
        if not 0.0 < self.class_ema <= 1.0:
            raise ValueError(f"TrackerConfig.class_ema must be in (0, 1], got {self.class_ema}")
        if self.birth_score < self.min_score:
            raise ValueError(f"TrackerConfig.birth_score ({self.birth_score}) must be >= "
                             f"min_score ({self.min_score})")
        if self.embedding_weight + self.iou_weight + self.class_weight <= 0.0:
            raise ValueError("TrackerConfig: embedding_weight + iou_weight + class_weight "
                             "must be > 0")
        if self.embedding_match not in EMBEDDING_MATCH_MODES:
            raise ValueError(f"TrackerConfig.embedding_match must be one of "
                             f"{EMBEDDING_MATCH_MODES}, got {self.embedding_match!r}")

    def _check_range(self, name: str, low: float, high: float) -> None:
        value = getattr(self, name)
        if not low <= value <= high:
            raise ValueError(f"TrackerConfig.{name} must be in [{low}, {high}], got {value}")
