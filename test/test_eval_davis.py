"""DAVIS J&F against hand-computed boundaries and scores."""

from __future__ import annotations

import numpy as np
import pytest

from metaseg_ros.eval import FrameObjects, boundary_f_measure, davis_j_and_f, region_similarity
from metaseg_ros.eval.davis import boundary_map, boundary_tolerance

# pycocotools 2.0.11's decode warns about numpy 2's copy keyword (its code, not ours).
pytestmark = [
    pytest.mark.torch_free,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept"),
]


def square(top: int, left: int, side: int = 2, size: int = 10) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_boundary_map_by_hand() -> None:
    """A 2x2 square: pixels differing from their right, lower or lower-right neighbour."""
    expected = np.array([[1, 1, 1, 0, 0],
                         [1, 0, 1, 0, 0],
                         [1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(square(1, 1, size=5)), expected)


def test_boundary_map_image_edges() -> None:
    """Last row: right neighbour only; last column: lower neighbour only; corner never."""
    full = np.ones((4, 4), bool)
    assert not boundary_map(full).any()
    mask = np.zeros((3, 3), bool)
    mask[2, 1] = True  # on the last row
    mask[0, 2] = True  # on the last column
    # (0,1), (1,0), (1,1): a neighbour differs; (0,2): differs from the pixel below;
    # (2,0), (2,1): differ from the pixel to the right; (1,2) equals the pixel below.
    expected = np.array([[0, 1, 1],
                         [1, 1, 0],
                         [1, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_tolerance() -> None:
    assert boundary_tolerance(480, 854) == 8  # DAVIS 480p: ceil(0.008 * 979.7)
    assert boundary_tolerance(10, 10) == 1
    assert boundary_tolerance(10, 10, bound_th=3) == 3


def test_f_measure_by_hand() -> None:
    """10x10 image (tolerance 1 px). Ground truth: 2x2 square; prediction: the same square 3
    px to the right. Of the 8 boundary pixels of each, 3 lie within 1 px of the other's
    boundary (the facing columns): P = R = 3/8, F = 3/8."""
    gt, pred = square(1, 1), square(1, 4)
    assert boundary_f_measure(pred, gt) == pytest.approx(3 / 8)
    assert boundary_f_measure(pred, gt, bound_th=3) == pytest.approx(1.0)
    assert boundary_f_measure(gt, gt) == 1.0
    assert boundary_f_measure(square(1, 7), gt) == 0.0  # too far: no boundary pixel close


def test_empty_masks() -> None:
    empty = np.zeros((10, 10), bool)
    assert region_similarity(empty, empty) == 1.0
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(empty, square(1, 1)) == 0.0
    assert boundary_f_measure(square(1, 1), empty) == 0.0
    assert region_similarity(square(1, 1), square(1, 2)) == pytest.approx(2 / 6)


def frames_of(*frames: dict[int, np.ndarray]) -> list[FrameObjects]:
    return [FrameObjects.from_masks(list(f), list(f.values())) for f in frames]


def test_sequence_matching() -> None:
    a, b = square(0, 0, 3), square(5, 5, 3)
    gt = frames_of({1: a, 2: b}, {1: a, 2: b}, {1: a})
    pred = frames_of({20: a, 10: b}, {20: a, 10: b}, {20: a})
    matched = davis_j_and_f(gt, pred, (10, 10), match="hungarian")
    assert (matched.j_mean, matched.f_mean, matched.j_and_f) == (1.0, 1.0, 1.0)
    assert matched.j_recall == 1.0 and matched.f_recall == 1.0
    # Identity matching: no prediction carries ids 1 or 2, so both objects are scored
    # against empty masks: J = 0 where present, 1 in the frame where object 2 is absent.
    unmatched = davis_j_and_f(gt, pred, (10, 10), match="identity")
    np.testing.assert_array_equal(unmatched.per_object[2][0], [0.0, 0.0, 1.0])
    assert unmatched.j_mean == pytest.approx((0.0 + 1 / 3) / 2)
    # First and last frames dropped (DAVIS semi-supervised protocol).
    middle = davis_j_and_f(gt, pred, (10, 10), match="identity", skip_first_last=True)
    assert middle.j_mean == 0.0 and len(middle.per_object[1][0]) == 1


def test_partial_overlap_scores() -> None:
    gt = frames_of({1: square(1, 1)}, {1: square(1, 1)})
    pred = frames_of({4: square(1, 1)}, {4: square(1, 4)})
    result = davis_j_and_f(gt, pred, (10, 10))
    np.testing.assert_allclose(result.per_object[1][0], [1.0, 0.0])
    np.testing.assert_allclose(result.per_object[1][1], [1.0, 3 / 8])
    assert result.j_and_f == pytest.approx((0.5 + (1 + 3 / 8) / 2) / 2)
    with pytest.raises(ValueError, match=r"mask of size \(10, 10\), expected \(12, 10\)"):
        davis_j_and_f(gt, pred, (12, 10))
