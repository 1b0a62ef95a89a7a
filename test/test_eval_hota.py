"""HOTA against hand-computed cases and against TrackEval itself (the `trackeval` package) on
motmetrics' TUD data and on the synthetic tracking scenes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from metaseg_ros.eval import FrameObjects, combine_hota, hota_from_similarities, hota_metrics
from metaseg_ros.eval.hota import ALPHAS

pytestmark = pytest.mark.torch_free


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_alphas_are_trackevals() -> None:
    assert ALPHAS.size == 19
    np.testing.assert_allclose(ALPHAS, np.linspace(0.05, 0.95, 19))


def test_perfect_tracking() -> None:
    frames = [FrameObjects(ids=ids(1, 2), boxes=np.array([[0, 0, 10, 10], [20, 0, 10, 10]]))
              for _ in range(3)]
    result = hota_metrics(frames, frames)
    assert (result.hota, result.deta, result.assa, result.loca) == (1.0, 1.0, 1.0, 1.0)
    np.testing.assert_array_equal(result.tp, np.full(19, 6.0))


def test_split_identity_halves_association() -> None:
    """One object, 4 frames; predicted as id 7 then id 8. DetA = 1; for each id pair
    A = TPA / (4 + 2 - TPA) = 2 / 4, AssA = 0.5, HOTA = sqrt(0.5); AssRe 0.5, AssPr 1."""
    result = hota_from_similarities([ids(1)] * 4, [ids(7), ids(7), ids(8), ids(8)],
                                    [np.ones((1, 1))] * 4)
    assert result.deta == pytest.approx(1.0)
    assert result.assa == pytest.approx(0.5)
    assert result.hota == pytest.approx(math.sqrt(0.5))
    assert (result.assre, result.asspr) == (pytest.approx(0.5), pytest.approx(1.0))


def test_localisation_threshold() -> None:
    """Perfect association at similarity 0.5: true positives for the 10 alphas <= 0.5
    only, so HOTA = 10/19; LocA is 0.5 there and 1 (TrackEval's empty value) elsewhere."""
    result = hota_from_similarities([ids(1, 2)] * 3, [ids(3, 4)] * 3,
                                    [np.diag([0.5, 0.5])] * 3)
    np.testing.assert_array_equal(result.tp, [6.0] * 10 + [0.0] * 9)
    assert result.hota == pytest.approx(10 / 19)
    assert result.loca == pytest.approx((10 * 0.5 + 9 * 1.0) / 19)


def test_false_positives_lower_detection_only() -> None:
    """Each of 2 frames: the object is found (id 5) and a phantom (id 6) is added.
    DetA = 2 / (2 + 0 + 2) = 0.5, AssA = 1, HOTA = sqrt(0.5)."""
    result = hota_from_similarities([ids(1)] * 2, [ids(5, 6)] * 2,
                                    [np.array([[1.0, 0.0]])] * 2)
    assert result.deta == pytest.approx(0.5)
    assert result.assa == pytest.approx(1.0)
    assert result.hota == pytest.approx(math.sqrt(0.5))
    assert result.detpr == pytest.approx(0.5) and result.detre == pytest.approx(1.0)


def test_global_alignment_breaks_ties() -> None:
    """One object over 3 frames is predicted as id A (similarities 1, 0.63, 1); in frame 2
    a duplicate id B overlaps it as much (0.63). HOTA's alignment score prefers A
    (2.5 / 3.5 vs 0.5 / 3.5), so for alpha <= 0.60 (12 alphas): TP 3, FP 1, DetA 3/4,
    AssA 1; for alpha >= 0.65 (7 alphas) frame 2's match is dropped: TP 2, FN 1, FP 2,
    DetA 2/5, A = 2 / (3 + 3 - 2) -> AssA 1/2."""
    result = hota_from_similarities(
        [ids(1)] * 3, [ids(10), ids(10, 11), ids(10)],
        [np.array([[1.0]]), np.array([[0.63, 0.63]]), np.array([[1.0]])])
    expected = (12 * math.sqrt(0.75 * 1.0) + 7 * math.sqrt(0.4 * 0.5)) / 19
    assert result.hota == pytest.approx(expected)
    np.testing.assert_allclose(result.assa_alpha, [1.0] * 12 + [0.5] * 7)


def test_empty_sequences() -> None:
    result = hota_from_similarities([ids(1)] * 2, [ids()] * 2, [np.zeros((1, 0))] * 2)
    assert result.hota == 0.0 and result.fn[0] == 2 and result.loca == 1.0
    result = hota_from_similarities([ids()] * 2, [ids(3)] * 2, [np.zeros((0, 1))] * 2)
    assert result.hota == 0.0 and result.fp[0] == 2


def test_ids_are_labels_only() -> None:
    rng = np.random.default_rng(3)
    gt_ids = [ids(1, 2, 3)] * 5
    pred_ids = [ids(*rng.permutation([4, 5, 6]).tolist()) for _ in range(5)]
    sims = [rng.uniform(0, 1, (3, 3)) for _ in range(5)]
    a = hota_from_similarities(gt_ids, pred_ids, sims)
    relabelled = hota_from_similarities([g * 100 + 7 for g in gt_ids],
                                        [1000 - p for p in pred_ids], sims)
    assert a.hota == pytest.approx(relabelled.hota)
    assert a.assa == pytest.approx(relabelled.assa)


def test_combine_sequences() -> None:
    one = hota_from_similarities([ids(1)] * 4, [ids(7), ids(7), ids(8), ids(8)],
                                 [np.ones((1, 1))] * 4)
    combined = combine_hota([one, one])
    assert combined.hota == pytest.approx(one.hota)
    np.testing.assert_array_equal(combined.tp, 2 * one.tp)
    with pytest.raises(ValueError, match="no results to combine"):
        combine_hota([])


def test_mask_similarity() -> None:
    square = np.zeros((16, 16), bool)
    square[4:12, 4:12] = True
    gt = [FrameObjects.from_masks([1], [square])] * 2
    pred = [FrameObjects.from_masks([9], [np.roll(square, 2, axis=0)])] * 2  # IoU 48/80
    result = hota_metrics(gt, pred, similarity="mask")
    assert result.loca_alpha[0] == pytest.approx(0.6)
    assert result.hota == pytest.approx(12 / 19)  # alphas 0.05 .. 0.60 match


# -- against TrackEval (the `trackeval` package), on real and synthetic tracking output ----


def assert_same_as_trackeval(ours, reference: dict) -> None:
    """Our HotaMetrics against TrackEval's result dictionary, alpha by alpha. Both ran on
    the same similarity matrices with the same operations: the counts must be equal and the
    ratios equal up to the order of summation."""
    np.testing.assert_array_equal(ours.tp, reference["HOTA_TP"])
    np.testing.assert_array_equal(ours.fn, reference["HOTA_FN"])
    np.testing.assert_array_equal(ours.fp, reference["HOTA_FP"])
    for name, field in (("hota_alpha", "HOTA"), ("deta_alpha", "DetA"), ("assa_alpha", "AssA"),
                        ("loca_alpha", "LocA"), ("detre_alpha", "DetRe"),
                        ("detpr_alpha", "DetPr"), ("assre_alpha", "AssRe"),
                        ("asspr_alpha", "AssPr")):
        np.testing.assert_allclose(getattr(ours, name), reference[field], rtol=0, atol=1e-12,
                                   err_msg=name)
    assert ours.hota == pytest.approx(float(np.mean(reference["HOTA"])), abs=1e-12)


def mot_challenge_frames(path, num_frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-frame ids and [x, y, w, h] boxes of a MOTChallenge file, read by motmetrics."""
    from metaseg_ros.eval.motmetrics_compat import import_motmetrics

    table = import_motmetrics().io.loadtxt(str(path))
    frame_ids, boxes = [], []
    for frame in range(1, num_frames + 1):
        rows = table.loc[frame] if frame in table.index.get_level_values(0) else table.iloc[:0]
        frame_ids.append(np.asarray(rows.index, dtype=np.int64))
        boxes.append(rows[["X", "Y", "Width", "Height"]].to_numpy(np.float64))
    return frame_ids, boxes


@pytest.mark.filterwarnings("ignore:Operation with tuple is deprecated")  # motmetrics' loader
def test_tud_equals_trackeval() -> None:
    """motmetrics' TUD-Campus and TUD-Stadtmitte data (real tracker output, boxes): our box
    IoU equals TrackEval's (to 1e-12), and our HOTA, DetA, AssA, LocA, DetRe, DetPr, AssRe,
    AssPr equal TrackEval's on TrackEval's similarities, per sequence and combined. (The two
    parts together are the whole computation: on the similarities themselves two
    implementations may differ in the last bit, which no threshold test should rest on.)"""
    pytest.importorskip("trackeval")
    from metric_reference import trackeval_hota, trackeval_hota_combined
    from trackeval.datasets._base_dataset import _BaseDataset

    from metaseg_ros.eval import load_mot_challenge
    from metaseg_ros.eval.motmetrics_compat import import_motmetrics
    from metaseg_ros.eval.similarity import frame_iou

    data = Path(import_motmetrics().__file__).parent / "data"
    ours_all, references = [], []
    for name in ("TUD-Campus", "TUD-Stadtmitte"):
        gt = load_mot_challenge(data / name / "gt.txt")
        pred = load_mot_challenge(data / name / "test.txt", num_frames=len(gt))
        gt_ids, gt_boxes = mot_challenge_frames(data / name / "gt.txt", len(gt))
        pred_ids, pred_boxes = mot_challenge_frames(data / name / "test.txt", len(gt))
        sims = [_BaseDataset._calculate_box_ious(g, p, box_format="xywh")
                for g, p in zip(gt_boxes, pred_boxes, strict=True)]
        for t, (g, p) in enumerate(zip(gt, pred, strict=True)):
            assert g.ids.tolist() == gt_ids[t].tolist() and p.ids.tolist() == pred_ids[t].tolist()
            np.testing.assert_allclose(frame_iou(g, p, "box"), sims[t], rtol=0, atol=1e-12)
        ours = hota_from_similarities(gt_ids, pred_ids, sims)
        reference = trackeval_hota(gt_ids, pred_ids, sims)
        assert_same_as_trackeval(ours, reference)
        assert 0.2 < ours.hota < 0.8 and ours.fp.sum() > 0 and ours.fn.sum() > 0
        ours_all.append(ours)
        references.append(reference)
    assert_same_as_trackeval(combine_hota(ours_all), trackeval_hota_combined(references))


def test_synthetic_tracking_equals_trackeval() -> None:
    """The synthetic tracking scenes (crossing, occlusion, re-entry, crowd) under high
    detector noise, tracked by our tracker: our HOTA and its parts from masks equal
    TrackEval's, per scene and combined. Mask IoU is one division of two pixel counts, so
    ours (pycocotools) and the one counted here with numpy are identical, not just close."""
    pytest.importorskip("trackeval")
    from metric_reference import decode_frame, similarities, trackeval_hota, trackeval_hota_combined

    from metaseg_ros.classes import DEFAULT_CLASSES
    from metaseg_ros.data.synthetic_detections import (
        NOISE_LEVELS,
        SCENE_KINDS,
        make_scene,
        simulate,
    )
    from metaseg_ros.eval.similarity import frame_iou
    from metaseg_ros.tracking import Tracker, TrackerConfig

    ours_all, references = [], []
    for index, kind in enumerate(SCENE_KINDS):
        sequence = simulate(make_scene(kind, seed=index, num_frames=40, gap=10),
                            NOISE_LEVELS["high"], seed=index)
        tracker = Tracker(TrackerConfig(), DEFAULT_CLASSES)
        pred = [FrameObjects.from_tracked(tracker.update(f)) for f in sequence.detections]
        gt_frames = [decode_frame(f) for f in sequence.ground_truth]
        pred_frames = [decode_frame(f) for f in pred]
        sims = similarities(gt_frames, pred_frames)
        for g, p, s in zip(sequence.ground_truth, pred, sims, strict=True):
            np.testing.assert_array_equal(frame_iou(g, p, "mask"), s)
        ours = hota_metrics(sequence.ground_truth, pred, similarity="mask")
        reference = trackeval_hota([f.ids for f in gt_frames], [f.ids for f in pred_frames],
                                   sims)
        assert_same_as_trackeval(ours, reference)
        assert 0.1 < ours.hota < 0.95, kind  # neither empty nor perfect
        ours_all.append(ours)
        references.append(reference)
    assert_same_as_trackeval(combine_hota(ours_all), trackeval_hota_combined(references))
