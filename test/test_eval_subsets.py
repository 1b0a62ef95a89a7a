"""Video AP and J&F restricted to a subset of the frames (metaseg_ros.eval.subsets)."""

from __future__ import annotations

import numpy as np
import pytest

from metaseg_ros.eval import FrameObjects, davis_j_and_f
from metaseg_ros.eval.subsets import j_and_f_on_frames, video_ap_on_frames

pytestmark = [
    pytest.mark.torch_free,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept"),
]


def box(top: int, left: int, side: int = 8, size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def sequences() -> tuple[list[FrameObjects], list[FrameObjects]]:
    """Object 1 (class 0) at the same place in 4 frames; object 2 (class 1) only in frame 3.
    The prediction (track 7) is exact in frames 0-1 and elsewhere in frames 2-3; nothing
    predicts object 2."""
    gt, pred = [], []
    for t in range(4):
        ids, masks, classes = [1], [box(4, 4)], [0]
        if t == 3:
            ids, masks, classes = [1, 2], [box(4, 4), box(20, 20)], [0, 1]
        gt.append(FrameObjects.from_masks(ids, masks, class_ids=classes))
        guess = box(4, 4) if t < 2 else box(4, 20)
        pred.append(FrameObjects.from_masks([7], [guess], scores=[0.9], class_ids=[0]))
    return gt, pred


def test_video_ap_on_frames_scores_only_the_chosen_frames() -> None:
    gt, pred = sequences()
    good = video_ap_on_frames([gt], [pred], [[0, 1]], num_classes=2)
    bad = video_ap_on_frames([gt], [pred], [[2]], num_classes=2)
    assert good is not None and bad is not None
    assert good.ap == pytest.approx(1.0) and good.ap50 == pytest.approx(1.0)
    assert bad.ap == pytest.approx(0.0)
    whole = video_ap_on_frames([gt], [pred], [range(4)], num_classes=2)
    assert whole is not None and whole.ap50 == 0.0  # video IoU with object 1: 2/6 < 0.5
    assert video_ap_on_frames([gt], [pred], [[]], num_classes=2) is None
    with pytest.raises(ValueError):
        video_ap_on_frames([gt], [pred[:3]], [[0]], num_classes=2)


def test_j_and_f_on_frames_uses_the_whole_video_assignment() -> None:
    gt, pred = sequences()
    result = davis_j_and_f(gt, pred, (32, 32), match="hungarian")
    score = j_and_f_on_frames(result, gt, [0, 1])
    assert score is not None and score[1] == pytest.approx(1.0) and score[2] == 1.0
    score = j_and_f_on_frames(result, gt, [2])  # only object 1 is visible there
    assert score is not None and score[1] == 0.0 and score[0] == 0.0
    score = j_and_f_on_frames(result, gt, [3])  # object 2 counts too (missed: 0)
    assert score is not None and score[1] == 0.0
    score = j_and_f_on_frames(result, gt, [0, 3])  # object 1: 0.5, object 2: 0.5
    assert score is not None and score[1] == pytest.approx(0.5)
