"""Tracking metrics from the maintained reference implementations, for comparison with
metaseg_ros.eval: HOTA, DetA, AssA, LocA from TrackEval (the `trackeval` package), MOTA,
IDF1, ID switches, false positives and misses from motmetrics.

Nothing here goes through metaseg_ros.eval's similarity or accumulation code: mask IoU is
counted with numpy from the decoded masks, and TrackEval's data dictionary and motmetrics'
accumulators are filled here (only the numpy 2 stand-in that motmetrics 1.4.0 needs is
shared). Tests that use TrackEval call pytest.importorskip("trackeval") first.

`record_scored_videos` lets a test see what `metaseg-eval` scored, to check its printed
metrics with `check_metrics_document` and `check_against_references`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from metaseg_ros.eval.motmetrics_compat import import_motmetrics, numpy_asfarray

MOT_IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Frame:
    """The objects of one frame: ids (N,) and masks (N, H, W) bool."""

    ids: np.ndarray
    masks: np.ndarray


def decode_masks(rles: Sequence[dict]) -> np.ndarray:
    """COCO RLE masks as (N, H, W) bool."""
    with warnings.catch_warnings():  # pycocotools 2.0.11's array wrapper on numpy 2
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return np.stack([mask_utils.decode(rle).astype(bool) for rle in rles])


def decode_frame(frame_objects) -> Frame:
    """A metaseg_ros FrameObjects (COCO RLE masks) as plain ids and bool masks."""
    ids = np.asarray(frame_objects.ids, dtype=np.int64)
    if not len(ids):
        return Frame(ids, np.zeros((0, 1, 1), bool))
    return Frame(ids, decode_masks(frame_objects.masks))


def mask_iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(G, P) IoU of bool masks, counted pixel by pixel (0 where both are empty)."""
    if not len(gt) or not len(pred):
        return np.zeros((len(gt), len(pred)))
    g = gt.reshape(len(gt), -1).astype(np.int64)
    p = pred.reshape(len(pred), -1).astype(np.int64)
    inter = g @ p.T
    union = g.sum(1)[:, None] + p.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def similarities(gt: Sequence[Frame], pred: Sequence[Frame]) -> list[np.ndarray]:
    """Per-frame mask IoU matrices."""
    return [mask_iou_matrix(g.masks, p.masks) for g, p in zip(gt, pred, strict=True)]


def trackeval_hota(gt_ids: Sequence[np.ndarray], pred_ids: Sequence[np.ndarray],
                   sims: Sequence[np.ndarray]) -> dict:
    """TrackEval's HOTA result dictionary of one sequence (arrays over its 19 alphas)."""
    import trackeval

    none = [np.zeros(0, np.int64)]
    gt_all = np.unique(np.concatenate([np.asarray(i, np.int64) for i in gt_ids] + none))
    pred_all = np.unique(np.concatenate([np.asarray(i, np.int64) for i in pred_ids] + none))
    data = {
        # TrackEval wants ids numbered 0..n-1 over the sequence.
        "gt_ids": [np.searchsorted(gt_all, i).astype(int) for i in gt_ids],
        "tracker_ids": [np.searchsorted(pred_all, i).astype(int) for i in pred_ids],
        "similarity_scores": [np.asarray(s, np.float64) for s in sims],
        "num_gt_ids": len(gt_all), "num_tracker_ids": len(pred_all),
        "num_gt_dets": sum(len(i) for i in gt_ids),
        "num_tracker_dets": sum(len(i) for i in pred_ids),
        "num_timesteps": len(gt_ids),
    }
    return trackeval.metrics.HOTA().eval_sequence(data)


def trackeval_hota_combined(results: Sequence[dict]) -> dict:
    """TrackEval's combination of sequences (TP/FN/FP summed, association TP-weighted)."""
    import trackeval

    return trackeval.metrics.HOTA().combine_sequences(
        {f"sequence{i}": r for i, r in enumerate(results)})


def motmetrics_summary(sequences: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray],
                                                 Sequence[np.ndarray]]]) -> dict:
    """motmetrics' counts and ratios over sequences of (gt ids, pred ids, IoU matrices):
    matches need IoU >= 0.5, distance 1 - IoU; several sequences give the OVERALL row."""
    mm = import_motmetrics()
    accumulators = []
    for gt_ids, pred_ids, sims in sequences:
        accumulator = mm.MOTAccumulator(auto_id=False)
        for frame, (g, p, s) in enumerate(zip(gt_ids, pred_ids, sims, strict=True)):
            if len(g) or len(p):
                s = np.asarray(s, np.float64).reshape(len(g), len(p))
                distances = np.where(s >= MOT_IOU_THRESHOLD, 1.0 - s, np.nan)
                accumulator.update(list(g), list(p), distances, frameid=frame)
        accumulators.append(accumulator)
    metrics = ["mota", "idf1", "num_switches", "num_false_positives", "num_misses"]
    with numpy_asfarray():
        summary = mm.metrics.create().compute_many(
            accumulators, metrics=metrics, names=[f"s{i}" for i in range(len(accumulators))],
            generate_overall=len(accumulators) > 1)
    row = summary.iloc[-1]
    return {"mota": float(row["mota"]), "idf1": float(row["idf1"]),
            "id_switches": int(row["num_switches"]),
            "false_positives": int(row["num_false_positives"]),
            "misses": int(row["num_misses"])}


def reference_scores(videos: Sequence[tuple[Sequence[Frame], Sequence[Frame]]]) -> dict:
    """MOT counts and ratios (motmetrics) and HOTA, DetA, AssA, LocA (TrackEval) of videos
    given as (ground-truth frames, predicted frames), with mask IoU as the similarity."""
    per_video = [([f.ids for f in gt], [f.ids for f in pred], similarities(gt, pred))
                 for gt, pred in videos]
    hota = trackeval_hota_combined([trackeval_hota(*video) for video in per_video])
    scores = motmetrics_summary(per_video)
    scores.update(hota=float(np.mean(hota["HOTA"])), det_a=float(np.mean(hota["DetA"])),
                  ass_a=float(np.mean(hota["AssA"])), loc_a=float(np.mean(hota["LocA"])))
    return scores


RATIOS = ("video_ap", "video_ap50", "video_ap75", "video_ar1", "video_ar10", "idf1", "hota",
          "det_a", "ass_a", "j_and_f", "j_mean", "f_mean")
COUNTS = ("id_switches", "false_positives", "misses", "num_videos", "num_frames")


def check_metrics_document(metrics: dict) -> None:
    """Every metric present, with its type and range (ratios in [0, 1] or -1 if undefined)."""
    from metaseg_ros.eval.evaluate import EvaluationResult

    assert set(metrics) == {f.name for f in dataclasses.fields(EvaluationResult)}
    for name in RATIOS:
        assert metrics[name] == -1.0 or 0.0 <= metrics[name] <= 1.0, name
    for name in COUNTS:
        assert isinstance(metrics[name], int) and metrics[name] >= 0, name
    assert metrics["mota"] <= 1.0 and metrics["seconds_per_frame"] > 0.0


def check_against_references(metrics: dict, videos: Sequence) -> dict:
    """metaseg-eval's scores (its JSON `metrics`) against motmetrics and TrackEval, computed
    here from the ScoredVideos it scored (mask IoU counted with numpy). Returns them."""
    expected = reference_scores([([decode_frame(f) for f in v.ground_truth],
                                  [decode_frame(f) for f in v.predictions]) for v in videos])
    for name in ("id_switches", "false_positives", "misses"):
        assert metrics[name] == expected[name], name
    # Mask IoU here and in metaseg_ros.eval (pycocotools) is one division of the same two
    # pixel counts, correctly rounded: the similarities are identical, so no threshold or
    # assignment can differ; only sums may be formed in another order.
    for name in ("mota", "idf1", "hota", "det_a", "ass_a"):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-12), name
    return expected


def record_scored_videos(monkeypatch) -> list[list]:
    """Make metaseg-eval keep the ScoredVideos of each scoring (score_videos still scores)."""
    import metaseg_ros.eval.evaluate as evaluate_module

    scored: list[list] = []
    score_videos = evaluate_module.score_videos

    def recording(videos, num_classes):
        scored.append(list(videos))
        return score_videos(videos, num_classes)

    monkeypatch.setattr(evaluate_module, "score_videos", recording)
    return scored
