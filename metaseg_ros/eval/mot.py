"""CLEAR-MOT and identity metrics (MOTA, MOTP, IDF1, ID switches, ...) through motmetrics.

The matching and the metric definitions are motmetrics' own (version 1.4.0): this module
only turns `FrameObjects` sequences into its per-frame distance matrices (1 - IoU, pairs
below the IoU threshold not allowed) and reads its summary. Box IoU uses
`motmetrics.distances.iou_matrix` (run with the numpy 2 stand-in, motmetrics_compat), mask
IoU uses pycocotools. With boxes and threshold 0.5 this reproduces motmetrics'
MOTChallenge numbers on its TUD-Campus / TUD-Stadtmitte data exactly (test_eval_mot.py).

MOTP here is motmetrics' distance form: mean (1 - IoU) over matches (lower is better).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.eval.motmetrics_compat import import_motmetrics, numpy_asfarray
from metaseg_ros.eval.similarity import SimilarityKind, mask_iou

_SUMMARY_FIELDS = {
    "mota": "mota", "motp": "motp", "idf1": "idf1", "idp": "idp", "idr": "idr",
    "precision": "precision", "recall": "recall", "id_switches": "num_switches",
    "false_positives": "num_false_positives", "misses": "num_misses",
    "fragmentations": "num_fragmentations", "num_objects": "num_objects",
    "num_predictions": "num_predictions", "num_unique_objects": "num_unique_objects",
    "mostly_tracked": "mostly_tracked", "partially_tracked": "partially_tracked",
    "mostly_lost": "mostly_lost",
}
_INTEGER_FIELDS = {"id_switches", "false_positives", "misses", "fragmentations",
                   "num_objects", "num_predictions", "num_unique_objects", "mostly_tracked",
                   "partially_tracked", "mostly_lost"}


@dataclass(frozen=True)
class MotMetrics:
    """motmetrics' MOTChallenge summary of one sequence (or several combined).

    mota, idf1, idp, idr, precision, recall: ratios (higher is better; MOTA can be < 0);
    motp: mean 1 - IoU of the matches (lower is better); counts are integers.
    """

    mota: float
    motp: float
    idf1: float
    idp: float
    idr: float
    precision: float
    recall: float
    id_switches: int
    false_positives: int
    misses: int
    fragmentations: int
    num_objects: int
    num_predictions: int
    num_unique_objects: int
    mostly_tracked: int
    partially_tracked: int
    mostly_lost: int


def _distances(gt: FrameObjects, pred: FrameObjects, kind: SimilarityKind,
               iou_threshold: float) -> np.ndarray:
    if not len(gt) or not len(pred):
        return np.empty((len(gt), len(pred)))
    if kind == "box":
        if gt.boxes is None or pred.boxes is None:
            raise ValueError("box similarity needs boxes in both ground truth and prediction")
        mm = import_motmetrics()
        with numpy_asfarray():
            return mm.distances.iou_matrix(gt.boxes, pred.boxes, max_iou=1.0 - iou_threshold)
    if kind == "mask":
        if gt.masks is None or pred.masks is None:
            raise ValueError("mask similarity needs masks in both ground truth and prediction")
        distance = 1.0 - mask_iou(gt.masks, pred.masks)
        return np.where(distance > 1.0 - iou_threshold, np.nan, distance)
    raise ValueError(f"unknown similarity {kind!r}: use 'box' or 'mask'")


def mot_accumulator(gt: Sequence[FrameObjects], pred: Sequence[FrameObjects],
                    similarity: SimilarityKind = "box", iou_threshold: float = 0.5) -> Any:
    """A filled `motmetrics.MOTAccumulator` for one sequence (frame ids 0..T-1)."""
    if len(gt) != len(pred):
        raise ValueError(f"ground truth has {len(gt)} frames, prediction {len(pred)}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    mm = import_motmetrics()
    accumulator = mm.MOTAccumulator(auto_id=False)
    for frame_id, (gt_frame, pred_frame) in enumerate(zip(gt, pred, strict=True)):
        if not len(gt_frame) and not len(pred_frame):
            continue
        accumulator.update(gt_frame.ids, pred_frame.ids,
                           _distances(gt_frame, pred_frame, similarity, iou_threshold),
                           frameid=frame_id)
    return accumulator


def _summarize(accumulators: list[Any], names: list[str]) -> MotMetrics:
    mm = import_motmetrics()
    handler = mm.metrics.create()
    metrics = list(_SUMMARY_FIELDS.values())
    if len(accumulators) == 1:
        row = handler.compute(accumulators[0], metrics=metrics, name=names[0]).iloc[0]
    else:
        summary = handler.compute_many(accumulators, metrics=metrics, names=names,
                                       generate_overall=True)
        row = summary.loc["OVERALL"]
    values = {}
    for field, column in _SUMMARY_FIELDS.items():
        value = row[column]
        values[field] = int(value) if field in _INTEGER_FIELDS else float(value)
    return MotMetrics(**values)


def mot_metrics(gt: Sequence[FrameObjects], pred: Sequence[FrameObjects],
                similarity: SimilarityKind = "box", iou_threshold: float = 0.5) -> MotMetrics:
    """MOTA, IDF1, ID switches, ... of one sequence (see the module docstring)."""
    return _summarize([mot_accumulator(gt, pred, similarity, iou_threshold)], ["sequence"])


def mot_metrics_combined(sequences: Sequence[tuple[Sequence[FrameObjects],
                                                   Sequence[FrameObjects]]],
                         similarity: SimilarityKind = "box",
                         iou_threshold: float = 0.5) -> MotMetrics:
    """Metrics over several (ground truth, prediction) sequences, counted together
    (motmetrics' OVERALL row)."""
    if not sequences:
        raise ValueError("no sequences")
    accumulators = [mot_accumulator(g, p, similarity, iou_threshold) for g, p in sequences]
    if len(accumulators) == 1:
        return _summarize(accumulators, ["sequence"])
    return _summarize(accumulators, [f"sequence{i}" for i in range(len(accumulators))])
