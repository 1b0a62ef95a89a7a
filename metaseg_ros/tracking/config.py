"""Tracker settings (exposed by the ROS node as `tracker.<field>` parameters; each field's
description and range are declared once, with `setting`)."""

from __future__ import annotations

from dataclasses import dataclass

from metaseg_ros.settings import check_settings, setting

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

    max_lost: int = setting(
        30, "Frames a confirmed track survives unseen (re-identified if it reappears within "
        "them).", minimum=0, maximum=1_000_000)
    confirm_hits: int = setting(
        2, "Consecutive detected frames before a new track is confirmed and published "
        "(1 = at once).", minimum=1, maximum=1000)
    birth_score: float = setting(
        0.5, "Minimum detection score to start a new track.", minimum=0.0, maximum=1.0)
    min_score: float = setting(
        0.3, "Detections below this score are ignored (between it and birth_score they only "
        "continue existing tracks).", minimum=0.0, maximum=1.0)
    min_similarity: float = setting(
        0.5, "Gate: a detection and a track are never matched below this combined "
        "similarity.", minimum=0.0, maximum=1.0)
    embedding_weight: float = setting(
        0.6, "Weight of the query-embedding cosine similarity.", minimum=0.0, maximum=1.0)
    iou_weight: float = setting(
        0.3, "Weight of the mask IoU with the track's last mask.", minimum=0.0, maximum=1.0)
    class_weight: float = setting(
        0.1, "Weight of the class-distribution agreement.", minimum=0.0, maximum=1.0)
    query_slot_weight: float = setting(
        0.0, "Weight of query-slot continuity: 1 when the detection comes from the decoder "
        "query that produced the track's last detection (the model's memory lets queries "
        "keep their object from frame to frame), else 0.", minimum=0.0, maximum=1.0)
    embedding_bank_size: int = setting(
        10, "Embeddings of the last N matched detections kept per track.",
        minimum=1, maximum=1000)
    embedding_match: str = setting(
        "mean", "'mean': cosine with the mean of the bank; 'best': the best cosine over the "
        "bank.", choices=EMBEDDING_MATCH_MODES)
    class_ema: float = setting(
        0.3, "Weight of the newest frame in the exponential moving average of class "
        "probabilities.", minimum=0.01, maximum=1.0)
    duplicate_overlap: float = setting(
        0.7, "An unmatched detection with more than this fraction of its mask inside the mask "
        "of a detection matched (or born, with a higher score) this frame is a duplicate and "
        "starts no track (1.0 turns the check off).", minimum=0.0, maximum=1.0)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.birth_score < self.min_score:
            raise ValueError(f"TrackerConfig.birth_score ({self.birth_score}) must be >= "
                             f"min_score ({self.min_score})")
        if self.embedding_weight + self.iou_weight + self.class_weight <= 0.0:
            raise ValueError("TrackerConfig: embedding_weight + iou_weight + class_weight "
                             "must be > 0")
