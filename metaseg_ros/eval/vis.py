"""Video instance segmentation AP / AR as the YouTube-VIS API computes them.

The YouTube-VIS evaluation (a modified pycocotools, `ytvoseval.py`) is COCO's evaluation
with one change: a detection is a whole predicted track, and its IoU with a ground-truth
track is spatio-temporal, sum over frames of intersections / sum over frames of unions (a
frame where only one of the two has a mask adds that mask's area to the union). Object size
for the small / medium / large split is the mean mask area over the frames where the object
has a non-empty mask, with YouTube-VIS' ranges (128^2, 256^2).

So this module computes those video IoUs (pycocotools RLE areas and IoUs, frame by frame)
and hands them to pycocotools' own COCOeval for matching, 101-point interpolated precision
and the summary (AP@[.50:.05:.95], AP50, AP75, AR@1, AR@10, ...). Values are -1 where COCO
leaves them undefined (no ground truth in that setting).
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from metaseg_ros.eval.frames import CocoRle, FrameObjects

YTVIS_AREA_RANGES = ((0.0, 1e10), (0.0, 128.0**2), (128.0**2, 256.0**2), (256.0**2, 1e10))


@dataclass(frozen=True, eq=False)
class VideoTrack:
    """One object through a video: a mask per frame (None where absent) and its category.

    score: confidence of a predicted track (ignored for ground truth).
    iscrowd: ground-truth crowd region (matches count neither as TP nor FP).
    """

    track_id: int
    category_id: int
    masks: tuple[CocoRle | None, ...]
    score: float = 1.0
    iscrowd: bool = False

    @property
    def mean_area(self) -> float:
        """Mean mask area over the frames where the mask is non-empty (0 if none)."""
        areas = [float(mask_utils.area(m)) for m in self.masks if m is not None]
        areas = [a for a in areas if a > 0]
        return float(np.mean(areas)) if areas else 0.0


@dataclass(frozen=True)
class VisMetrics:
    """The YouTube-VIS summary (COCO's 12 numbers), -1 where undefined."""

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar1: float
    ar10: float
    ar100: float
    ar_small: float
    ar_medium: float
    ar_large: float


def video_iou_matrix(predicted: Sequence[VideoTrack], ground_truth: Sequence[VideoTrack]
                     ) -> np.ndarray:
    """(len(predicted), len(ground_truth)) spatio-temporal IoU: sum(I) / sum(U) over frames."""
    num_pred, num_gt = len(predicted), len(ground_truth)
    if not num_pred or not num_gt:
        return np.zeros((num_pred, num_gt))
    num_frames = len(ground_truth[0].masks)
    for track in [*predicted, *ground_truth]:
        if len(track.masks) != num_frames:
            raise ValueError(f"track {track.track_id} has {len(track.masks)} frames, "
                             f"expected {num_frames}")
    intersections = np.zeros((num_pred, num_gt))
    unions = np.zeros((num_pred, num_gt))
    for frame in range(num_frames):
        pred_rows = [i for i, t in enumerate(predicted) if t.masks[frame] is not None]
        gt_cols = [j for j, t in enumerate(ground_truth) if t.masks[frame] is not None]
        pred_masks = [predicted[i].masks[frame] for i in pred_rows]
        gt_masks = [ground_truth[j].masks[frame] for j in gt_cols]
        pred_area = np.zeros(num_pred)
        gt_area = np.zeros(num_gt)
        if pred_rows:
            pred_area[pred_rows] = mask_utils.area(pred_masks)
        if gt_cols:
            gt_area[gt_cols] = mask_utils.area(gt_masks)
        frame_intersection = np.zeros((num_pred, num_gt))
        if pred_rows and gt_cols:
            iou = np.asarray(mask_utils.iou(pred_masks, gt_masks, [0] * len(gt_masks)))
            iou = iou.reshape(len(pred_rows), len(gt_cols))
            area_sum = pred_area[pred_rows][:, None] + gt_area[gt_cols][None, :]
            # iou = I / (A + B - I)  =>  I = iou * (A + B) / (1 + iou); I is an integer count.
            frame_intersection[np.ix_(pred_rows, gt_cols)] = np.rint(iou * area_sum / (1 + iou))
        intersections += frame_intersection
        unions += pred_area[:, None] + gt_area[None, :] - frame_intersection
    return np.divide(intersections, unions, out=np.zeros_like(unions), where=unions > 0)


class _VideoCocoEval(COCOeval):
    """COCOeval whose 'images' are videos and whose IoU is the video IoU."""

    def __init__(self, gt: COCO, dt: COCO, ious: dict[int, np.ndarray],
                 gt_index: dict[int, int], dt_index: dict[int, int]) -> None:
        super().__init__(gt, dt, iouType="bbox")
        self.params.areaRng = [list(r) for r in YTVIS_AREA_RANGES]
        self._video_ious = ious
        self._gt_index = gt_index
        self._dt_index = dt_index

    def computeIoU(self, video_id: int, category_id: int) -> np.ndarray | list:  # noqa: N802
        """Video IoU (dt x gt) of one video and category, dt by descending score (COCO's
        order)."""
        p = self.params
        gts = self._gts[video_id, category_id] if p.useCats else [
            g for c in p.catIds for g in self._gts[video_id, c]]
        dts = self._dts[video_id, category_id] if p.useCats else [
            d for c in p.catIds for d in self._dts[video_id, c]]
        if not gts and not dts:
            return []
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        dts = [dts[i] for i in order][:p.maxDets[-1]]
        matrix = self._video_ious[video_id]
        rows = [self._dt_index[d["id"]] for d in dts]
        cols = [self._gt_index[g["id"]] for g in gts]
        return matrix[np.ix_(rows, cols)]


def _coco(videos: Sequence[Sequence[VideoTrack]], categories: list[int], first_id: int,
          with_scores: bool) -> tuple[COCO, dict[int, tuple[int, int]]]:
    annotations, where = [], {}
    next_id = first_id
    for video_id, tracks in enumerate(videos, start=1):
        for position, track in enumerate(tracks):
            annotation = {"id": next_id, "image_id": video_id, "category_id": track.category_id,
                          "iscrowd": int(track.iscrowd), "area": track.mean_area,
                          "bbox": [0, 0, 0, 0]}
            if with_scores:
                annotation["score"] = float(track.score)
            annotations.append(annotation)
            where[next_id] = (video_id, position)
            next_id += 1
    coco = COCO()
    coco.dataset = {"images": [{"id": i} for i in range(1, len(videos) + 1)],
                    "categories": [{"id": c} for c in categories], "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, where


def video_ap(ground_truth: Sequence[Sequence[VideoTrack]],
             predictions: Sequence[Sequence[VideoTrack]],
             category_ids: Sequence[int] | None = None) -> VisMetrics:
    """YouTube-VIS AP/AR over videos (one list of tracks per video, same video order)."""
    if len(ground_truth) != len(predictions):
        raise ValueError(f"{len(ground_truth)} ground-truth videos, {len(predictions)} predicted")
    categories = sorted(set(category_ids) if category_ids is not None else
                        {t.category_id for v in ground_truth for t in v}
                        | {t.category_id for v in predictions for t in v})
    gt_coco, gt_where = _coco(ground_truth, categories, 1, with_scores=False)
    dt_coco, dt_where = _coco(predictions, categories, 1, with_scores=True)
    ious = {video_id: video_iou_matrix(predictions[video_id - 1], ground_truth[video_id - 1])
            for video_id in range(1, len(ground_truth) + 1)}
    evaluator = _VideoCocoEval(gt_coco, dt_coco, ious,
                               {k: v[1] for k, v in gt_where.items()},
                               {k: v[1] for k, v in dt_where.items()})
    evaluator.params.catIds = categories
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return VisMetrics(*(float(v) for v in evaluator.stats))


def tracks_from_frames(frames: Sequence[FrameObjects]) -> list[VideoTrack]:
    """Group per-frame objects (with masks) into video tracks by id.

    category: the most frequent class id of the id's frames (ties: the smallest), 0 when the
    frames carry none; score: the mean of its per-frame scores (1 when there are none).
    """
    masks: dict[int, list[CocoRle | None]] = {}
    classes: dict[int, Counter[int]] = {}
    scores: dict[int, list[float]] = {}
    for index, frame in enumerate(frames):
        if len(frame) and frame.masks is None:
            raise ValueError("tracks_from_frames needs masks")
        for k, object_id in enumerate(frame.ids.tolist()):
            track = masks.setdefault(object_id, [None] * len(frames))
            track[index] = frame.masks[k]  # type: ignore[index]
            if frame.class_ids is not None:
                classes.setdefault(object_id, Counter())[int(frame.class_ids[k])] += 1
            if frame.scores is not None:
                scores.setdefault(object_id, []).append(float(frame.scores[k]))
    tracks = []
    for object_id in sorted(masks):
        counts = classes.get(object_id)
        category = min(counts, key=lambda c: (-counts[c], c)) if counts else 0
        score = float(np.mean(scores[object_id])) if object_id in scores else 1.0
        tracks.append(VideoTrack(object_id, category, tuple(masks[object_id]), score))
    return tracks
