"""Scoring tracked predictions against ground truth, video by video, with every metric the
package reports (one implementation for `metaseg-eval`, `metaseg-replay` and the demo):

- YouTube-VIS video AP / AR (tracks grouped by id, video IoU), also per class;
- MOTA / IDF1 / ID switches / false positives / misses with mask IoU (motmetrics);
- HOTA / DetA / AssA with mask IoU;
- DAVIS J&F with Hungarian assignment of predicted tracks to ground-truth objects.

A video is a list of ground-truth FrameObjects and one of predicted FrameObjects (masks as
COCO RLE, class ids indexing the model's classes) for the same frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from metaseg_ros.eval.davis import davis_j_and_f
from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.eval.hota import combine_hota, hota_metrics
from metaseg_ros.eval.mot import mot_metrics_combined
from metaseg_ros.eval.vis import VideoTrack, tracks_from_frames, video_ap


@dataclass
class ScoredVideo:
    """Ground truth and predictions of the annotated frames of one video (same order)."""

    ground_truth: list[FrameObjects] = field(default_factory=list)
    predictions: list[FrameObjects] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)

    def add(self, ground_truth: FrameObjects, prediction: FrameObjects,
            image_size: tuple[int, int]) -> None:
        """One annotated frame."""
        self.ground_truth.append(ground_truth)
        self.predictions.append(prediction)
        self.image_size = image_size


@dataclass(frozen=True)
class Scores:
    """Accuracy over a set of videos (ratios in [0, 1]; -1 where undefined)."""

    video_ap: float
    video_ap50: float
    video_ap75: float
    video_ar1: float
    video_ar10: float
    idf1: float
    mota: float
    id_switches: int
    false_positives: int
    misses: int
    hota: float
    det_a: float
    ass_a: float
    j_and_f: float
    j_mean: float
    f_mean: float


def _category_shift(tracks: Sequence[VideoTrack]) -> list[VideoTrack]:
    """Category ids 1..C (class id + 1), as YouTube-VIS numbers its categories."""
    return [VideoTrack(t.track_id, t.category_id + 1, t.masks, t.score, t.iscrowd)
            for t in tracks]


def _tracks(videos: Sequence[ScoredVideo]) -> tuple[list[list[VideoTrack]],
                                                    list[list[VideoTrack]]]:
    return ([_category_shift(tracks_from_frames(v.ground_truth)) for v in videos],
            [_category_shift(tracks_from_frames(v.predictions)) for v in videos])


def score_videos(videos: Sequence[ScoredVideo], num_classes: int) -> Scores:
    """Every metric over the videos (AP over the model's `num_classes` classes)."""
    gt_videos, pred_videos = _tracks(videos)
    vis = video_ap(gt_videos, pred_videos, category_ids=list(range(1, num_classes + 1)))
    mot = mot_metrics_combined([(v.ground_truth, v.predictions) for v in videos],
                               similarity="mask")
    hota = combine_hota([hota_metrics(v.ground_truth, v.predictions, similarity="mask")
                         for v in videos])
    j_and_fs = [davis_j_and_f(v.ground_truth, v.predictions, v.image_size, match="hungarian")
                for v in videos if any(len(f) for f in v.ground_truth)]

    def mean(name: str) -> float:
        return float(np.mean([getattr(r, name) for r in j_and_fs])) if j_and_fs else -1.0

    return Scores(
        video_ap=vis.ap, video_ap50=vis.ap50, video_ap75=vis.ap75, video_ar1=vis.ar1,
        video_ar10=vis.ar10, idf1=mot.idf1, mota=mot.mota, id_switches=mot.id_switches,
        false_positives=mot.false_positives, misses=mot.misses, hota=float(hota.hota),
        det_a=float(hota.deta), ass_a=float(hota.assa), j_and_f=mean("j_and_f"),
        j_mean=mean("j_mean"), f_mean=mean("f_mean"))


def per_class_ap(videos: Sequence[ScoredVideo], class_names: Sequence[str]
                 ) -> dict[str, float]:
    """Video mask AP of each class that has ground truth (COCO's AP@[.5:.95] per category)."""
    gt_videos, pred_videos = _tracks(videos)
    present = sorted({t.category_id for video in gt_videos for t in video})
    return {class_names[c - 1]: video_ap(gt_videos, pred_videos, category_ids=[c]).ap
            for c in present}
