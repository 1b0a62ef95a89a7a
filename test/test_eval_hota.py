"""HOTA against hand-computed cases (TrackEval's definition)."""

from __future__ import annotations

import math

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
    with pytest.raises(ValueError):
        combine_hota([])


def test_mask_similarity() -> None:
    square = np.zeros((16, 16), bool)
    square[4:12, 4:12] = True
    gt = [FrameObjects.from_masks([1], [square])] * 2
    pred = [FrameObjects.from_masks([9], [np.roll(square, 2, axis=0)])] * 2  # IoU 48/80
    result = hota_metrics(gt, pred, similarity="mask")
    assert result.loca_alpha[0] == pytest.approx(0.6)
    assert result.hota == pytest.approx(12 / 19)  # alphas 0.05 .. 0.60 match
