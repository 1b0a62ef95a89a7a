"""Metrics on a subset of each video's frames (e.g. only the degraded ones).

- Video AP / AR on frame subsets: every video is cut down to the chosen frames, both its
  ground truth and its predictions, and scored as if it had only those frames (tracks by
  id, video IoU over the kept frames, track score and class from the kept frames). Videos
  with no chosen frame are left out.
- J&F on frame subsets: the assignment of predicted tracks to objects is made over the whole
  video (as `davis_j_and_f` does); J and F are then averaged over the chosen frames only,
  for the objects visible in at least one of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metaseg_ros.eval.davis import JAndF
from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.eval.vis import VideoTrack, VisMetrics, tracks_from_frames, video_ap


def _tracks(frames: Sequence[FrameObjects]) -> list[VideoTrack]:
    """Video tracks with category ids 1..C (class id + 1, as YouTube-VIS numbers them)."""
    return [VideoTrack(t.track_id, t.category_id + 1, t.masks, t.score, t.iscrowd)
            for t in tracks_from_frames(frames)]


def video_ap_on_frames(ground_truth: Sequence[Sequence[FrameObjects]],
                       predictions: Sequence[Sequence[FrameObjects]],
                       selections: Sequence[Sequence[int]], num_classes: int
                       ) -> VisMetrics | None:
    """YouTube-VIS AP/AR of videos cut down to selections[v] (frame indices of video v).

    Objects carry class ids 0..num_classes-1. None when no video has a chosen frame.
    """
    if not len(ground_truth) == len(predictions) == len(selections):
        raise ValueError("need one ground truth, prediction and selection per video")
    gt_videos, pred_videos = [], []
    for gt, pred, chosen in zip(ground_truth, predictions, selections, strict=True):
        if len(gt) != len(pred):
            raise ValueError(f"{len(gt)} ground-truth frames, {len(pred)} predicted")
        if len(chosen):
            gt_videos.append(_tracks([gt[t] for t in chosen]))
            pred_videos.append(_tracks([pred[t] for t in chosen]))
    if not gt_videos:
        return None
    return video_ap(gt_videos, pred_videos, category_ids=list(range(1, num_classes + 1)))


def j_and_f_on_frames(result: JAndF, ground_truth: Sequence[FrameObjects],
                      frames: Sequence[int]) -> tuple[float, float, float] | None:
    """(J&F, J-Mean, F-Mean) over the given frames of one sequence scored by
    `davis_j_and_f` (without skip_first_last), for the objects visible in at least one of
    them; None when there is none."""
    chosen = np.asarray(list(frames), dtype=np.int64)
    j_means, f_means = [], []
    for object_id, (j_values, f_values) in result.per_object.items():
        if len(j_values) != len(ground_truth):
            raise ValueError("per-object scores do not cover every frame")
        if any(object_id in ground_truth[t].ids for t in chosen.tolist()):
            j_means.append(float(j_values[chosen].mean()))
            f_means.append(float(f_values[chosen].mean()))
    if not j_means:
        return None
    j_mean, f_mean = float(np.mean(j_means)), float(np.mean(f_means))
    return (j_mean + f_mean) / 2, j_mean, f_mean
