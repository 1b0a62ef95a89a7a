"""One track's state: its lifecycle state, the mutable record the Tracker keeps per track,
and the read-only snapshot it shows callers."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import numpy as np

from metaseg_ros.tracking.mask_summary import MaskSummary


class TrackState(enum.Enum):
    """Lifecycle state of a track."""

    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class TrackSnapshot:
    """Read-only view of one live track (diagnostics).

    track_id is 0 while the track is tentative. lost_frames: consecutive frames unseen.
    query_index: decoder query slot of the latest matched detection (-1 if unknown).
    """

    track_id: int
    state: TrackState
    class_id: int
    score: float
    age: int
    hits: int
    lost_frames: int
    query_index: int
    detected_this_frame: bool


class Track:
    """Mutable state of one track (owned by Tracker; callers see TrackSnapshot)."""

    __slots__ = ("age", "bank", "bank_sum", "class_id", "class_probs", "consecutive_hits",
                 "detection_index", "hits", "lost_frames", "query_index", "score", "state",
                 "summary", "track_id")

    def __init__(self, bank_size: int, embedding: np.ndarray, class_probs: np.ndarray,
                 summary: MaskSummary, score: float, query_index: int,
                 detection_index: int) -> None:
        self.track_id = 0
        self.state = TrackState.TENTATIVE
        self.age = 0
        self.hits = 1
        self.consecutive_hits = 1
        self.lost_frames = 0
        self.bank: deque[np.ndarray] = deque([embedding], maxlen=bank_size)
        self.bank_sum = embedding.astype(np.float64)
        self.class_probs = class_probs.copy()  # running vote, updated in place
        self.class_id = int(class_probs.argmax())
        self.summary = summary
        self.score = score
        self.query_index = query_index
        self.detection_index = detection_index  # into this frame's candidates, -1 if unseen

    def add_embedding(self, embedding: np.ndarray) -> None:
        if len(self.bank) == self.bank.maxlen:
            self.bank_sum -= self.bank[0]
        self.bank.append(embedding)
        self.bank_sum += embedding

    def vote(self, class_probs: np.ndarray, weight: float) -> None:
        """Exponential moving average of the class distribution; class = its argmax."""
        self.class_probs *= 1.0 - weight
        self.class_probs += weight * class_probs
        self.class_id = int(self.class_probs.argmax())
