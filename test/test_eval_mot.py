"""MOT metrics: motmetrics' published TUD numbers, hand-computed cases, the numpy 2 shim."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from metaseg_ros.eval import FrameObjects, load_mot_challenge, mot_metrics, mot_metrics_combined
from metaseg_ros.eval.motmetrics_compat import import_motmetrics, numpy_asfarray

pytestmark = pytest.mark.torch_free

DATA = Path(import_motmetrics().__file__).parent / "data"

# motmetrics 1.4.0's own test (tests/test_metrics.py::test_motchallenge_files): IDF1, IDP,
# IDR, recall, precision, unique objects, MT, PT, ML, FP, FN, ID switches, fragmentations,
# MOTA, MOTP of its MOTChallenge data.
PUBLISHED = {
    "TUD-Campus": (0.557659, 0.729730, 0.451253, 0.582173, 0.941441, 8, 1, 6, 1, 13, 150, 7,
                   7, 0.526462, 0.277201),
    "TUD-Stadtmitte": (0.644619, 0.819760, 0.531142, 0.608997, 0.939920, 10, 5, 4, 1, 45, 452,
                       7, 6, 0.564014, 0.345904),
    "OVERALL": (0.624296, 0.799176, 0.512211, 0.602640, 0.940268, 18, 6, 10, 2, 58, 602, 14,
                13, 0.555116, 0.330177),
}
ORDER = ("idf1", "idp", "idr", "recall", "precision", "num_unique_objects", "mostly_tracked",
         "partially_tracked", "mostly_lost", "false_positives", "misses", "id_switches",
         "fragmentations", "mota", "motp")


def tud(name: str) -> tuple[list[FrameObjects], list[FrameObjects]]:
    gt = load_mot_challenge(DATA / name / "gt.txt")
    return gt, load_mot_challenge(DATA / name / "test.txt", num_frames=len(gt))


def check_published(result, expected: tuple) -> None:
    for field, value in zip(ORDER, expected, strict=True):
        got = getattr(result, field)
        if isinstance(value, int):
            assert got == value, field
        else:
            assert got == pytest.approx(value, abs=5e-7), field


@pytest.mark.parametrize("name", ["TUD-Campus", "TUD-Stadtmitte"])
def test_tud_reproduces_motmetrics_published_numbers(name: str) -> None:
    check_published(mot_metrics(*tud(name)), PUBLISHED[name])


def test_tud_combined_reproduces_overall_row() -> None:
    check_published(mot_metrics_combined([tud("TUD-Campus"), tud("TUD-Stadtmitte")]),
                    PUBLISHED["OVERALL"])


@pytest.mark.filterwarnings("ignore:Operation with tuple is deprecated")
def test_tud_equals_motmetrics_own_pipeline() -> None:
    """Our loader + distances against motmetrics' loader + compare_to_groundtruth."""
    mm = import_motmetrics()
    gt_table = mm.io.loadtxt(str(DATA / "TUD-Campus" / "gt.txt"))
    test_table = mm.io.loadtxt(str(DATA / "TUD-Campus" / "test.txt"))
    with numpy_asfarray():
        accumulator = mm.utils.compare_to_groundtruth(gt_table, test_table, "iou", distth=0.5)
    reference = mm.metrics.create().compute(accumulator, metrics=["mota", "idf1", "motp"])
    ours = mot_metrics(*tud("TUD-Campus"))
    # Same counts; the ratios may be formed in another order (last-bit differences).
    assert ours.mota == pytest.approx(reference["mota"].iloc[0], abs=1e-12)
    assert ours.idf1 == pytest.approx(reference["idf1"].iloc[0], abs=1e-12)
    assert ours.motp == pytest.approx(reference["motp"].iloc[0], abs=1e-12)


def boxes_frame(ids: list[int], xs: list[float]) -> FrameObjects:
    return FrameObjects(ids=np.array(ids), boxes=np.array([[x, 0, 10, 10] for x in xs]))


def test_hand_computed_switch_and_false_positive() -> None:
    """Two objects over 4 frames; the tracker swaps ids in frame 3 and adds one FP.

    GT detections 8. Matches: all 8 (IoU 1); ID switches: 2 (both objects in frame 3);
    FP: 1; FN: 0 -> MOTA = 1 - (0 + 1 + 2) / 8 = 0.625.
    IDF1: each object carries one id in frames 1-2 and the other in frames 3-4, so the best
    one-to-one id mapping explains 2 + 2 detections: IDTP = 4, IDFP = 9 - 4 = 5,
    IDFN = 8 - 4 = 4, IDF1 = 2 * 4 / (2 * 4 + 5 + 4) = 8 / 17.
    """
    gt = [boxes_frame([1, 2], [0, 50]) for _ in range(4)]
    pred = [boxes_frame([10, 20], [0, 50]), boxes_frame([10, 20], [0, 50]),
            boxes_frame([20, 10, 30], [0, 50, 100]), boxes_frame([20, 10], [0, 50])]
    result = mot_metrics(gt, pred)
    assert (result.num_objects, result.false_positives, result.misses) == (8, 1, 0)
    assert result.id_switches == 2
    assert result.mota == pytest.approx(0.625)
    assert result.idf1 == pytest.approx(8 / 17)


def test_iou_threshold_turns_matches_into_misses() -> None:
    """A box shifted by 4 px (IoU 6/14 = 0.43) matches at threshold 0.4, not at 0.5."""
    gt = [boxes_frame([1], [0])]
    pred = [boxes_frame([7], [4])]
    assert mot_metrics(gt, pred, iou_threshold=0.4).mota == pytest.approx(1.0)
    strict = mot_metrics(gt, pred, iou_threshold=0.5)
    assert (strict.misses, strict.false_positives, strict.mota) == (1, 1, -1.0)


def test_mask_similarity() -> None:
    square = np.zeros((20, 20), bool)
    square[2:10, 2:10] = True
    shifted = np.roll(square, 3, axis=1)  # IoU = 40 / 88 < 0.5
    slightly = np.roll(square, 1, axis=1)  # IoU = 56 / 72 > 0.5
    gt = [FrameObjects.from_masks([1], [square])] * 2
    pred = [FrameObjects.from_masks([5], [slightly]), FrameObjects.from_masks([5], [shifted])]
    result = mot_metrics(gt, pred, similarity="mask")
    assert (result.misses, result.false_positives, result.id_switches) == (1, 1, 0)
    assert result.motp == pytest.approx(1 - 56 / 72)
    with pytest.raises(ValueError, match="mask similarity needs masks"):
        mot_metrics(gt, [dataclasses.replace(p, masks=None) for p in pred], similarity="mask")
    with pytest.raises(ValueError, match="ground truth has 2 frames, prediction 1"):
        mot_metrics(gt, pred[:1])


def test_asfarray_stand_in_is_scoped() -> None:
    had = hasattr(np, "asfarray")
    with numpy_asfarray():
        assert np.asfarray([1, 2]).dtype == np.float64
        with numpy_asfarray():
            assert np.asfarray([1], dtype=np.float32).dtype == np.float32
        assert hasattr(np, "asfarray")
    assert hasattr(np, "asfarray") == had
    mot_metrics(*tud("TUD-Campus"))
    assert hasattr(np, "asfarray") == had


def test_frame_objects_validation() -> None:
    with pytest.raises(ValueError, match="unique"):
        FrameObjects(ids=np.array([1, 1]))
    with pytest.raises(ValueError, match="1 boxes for 2 ids"):
        FrameObjects(ids=np.array([1, 2]), boxes=np.zeros((1, 4)))
    frames = load_mot_challenge(DATA / "TUD-Campus" / "gt.txt")
    assert len(frames) == 71 and len(frames[0]) == 6
    np.testing.assert_allclose(frames[0].boxes[0], [399, 182, 121, 229])
