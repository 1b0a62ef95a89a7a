"""Memory on/off A/B helpers: the memoryless wrapper and the split scores (hand-made cases)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.eval.memory_ab import (
    MemorylessSegmenter,
    Run,
    SplitScores,
    degraded_frames,
    difference_cells,
    hold_last_good,
    mean_differences,
    score_differences,
    split_scores,
)
from metaseg_ros.results import FrameDetections


class CountingSegmenter:
    """Returns empty detections and counts its steps and resets."""

    def __init__(self) -> None:
        self.steps = 0
        self.resets = 0
        self.calls: list[str] = []

    @property
    def class_names(self) -> Sequence[str]:
        return ("a", "b")

    def step(self, image: np.ndarray) -> FrameDetections:
        self.steps += 1
        self.calls.append("step")
        return FrameDetections(image.shape[0], image.shape[1], ())

    def reset(self) -> None:
        self.resets += 1
        self.calls.append("reset")


def test_memoryless_segmenter_resets_before_every_frame_and_caches_repeats() -> None:
    frames = [np.full((8, 8, 3), v, dtype=np.uint8) for v in (1, 2, 1, 3)]
    inner = CountingSegmenter()
    plain = MemorylessSegmenter(inner)
    for frame in frames:
        plain.step(frame)
    assert inner.calls == ["reset", "step"] * 4
    cached_inner = CountingSegmenter()
    cached = MemorylessSegmenter(cached_inner, cache=True)
    outputs = [cached.step(frame) for frame in frames]
    assert cached_inner.steps == 3 and outputs[2] is outputs[0]
    assert cached.class_names == ("a", "b")


def _square(top: int, left: int) -> np.ndarray:
    mask = np.zeros((32, 32), dtype=bool)
    mask[top:top + 10, left:left + 10] = True
    return mask


def _video(drop: Sequence[int] = ()) -> tuple[list[FrameObjects], list[FrameObjects]]:
    """Two objects over 6 frames; the prediction is exact except on the frames in `drop`,
    where it misses both objects."""
    gt, pred = [], []
    for t in range(6):
        masks = [_square(2, 2 + t), _square(18, 20 - t)]
        gt.append(FrameObjects.from_masks([1, 2], masks, class_ids=[0, 1]))
        if t in drop:
            pred.append(FrameObjects.from_masks([], [], scores=[], class_ids=[]))
        else:
            pred.append(FrameObjects.from_masks([7, 8], masks, scores=[0.9, 0.8],
                                                class_ids=[0, 1]))
    return gt, pred


def test_split_scores_of_exact_predictions_are_perfect() -> None:
    run = Run()
    gt, pred = _video()
    run.add(gt, pred, ("", "", "blur", "", "", "noise"), (32, 32))
    scores = split_scores(run, num_classes=2)
    assert scores.video_ap == pytest.approx(1.0) and scores.ap50 == pytest.approx(1.0)
    assert scores.j_and_f == pytest.approx(1.0)
    assert scores.j_and_f_degraded == pytest.approx(1.0)
    assert scores.degraded_frames == 2
    assert scores.idf1 == pytest.approx(1.0) and scores.id_switches == 0


def test_missing_degraded_frames_score_zero_there_and_lower_the_whole_video() -> None:
    run = Run()
    gt, pred = _video(drop=(2, 5))
    run.add(gt, pred, ("", "", "blur", "", "", "noise"), (32, 32))
    scores = split_scores(run, num_classes=2)
    assert scores.j_and_f_degraded == 0.0
    assert scores.j_and_f == pytest.approx(4 / 6)  # J = F = 1 on 4 of 6 frames, 0 on 2
    assert scores.video_ap < 0.9
    assert degraded_frames(run.tags) == [[2, 5]]


def test_untagged_videos_have_no_degraded_frames() -> None:
    run = Run()
    gt, pred = _video()
    run.add(gt, pred, (), (32, 32))
    assert run.tags == [("",) * 6]
    scores = split_scores(run, num_classes=2)
    assert scores.degraded_frames == 0 and np.isnan(scores.j_and_f_degraded)


def scores(ap: float, degraded_j_and_f: float, switches: int) -> SplitScores:
    return SplitScores(ap, ap, 0.5, degraded_j_and_f, 3, 0.5, switches)


def test_block_differences_average_the_scores_and_total_the_id_switches() -> None:
    blocks = [score_differences(scores(0.30, 0.50, 4), scores(0.20, 0.40, 6)),
              score_differences(scores(0.25, 0.45, 3), scores(0.25, 0.40, 2))]
    assert blocks[0]["id_switches"] == -2 and blocks[1]["id_switches"] == 1
    mean = mean_differences(blocks)
    assert mean["video_ap"] == pytest.approx(0.05)
    assert mean["j_and_f_degraded"] == pytest.approx(0.075)
    assert mean["id_switches"] == -1 and isinstance(mean["id_switches"], int)
    cells = difference_cells(mean)
    assert cells[0] == "+0.050" and cells[3] == "+0.075" and cells[-1] == "-1"


def test_a_block_without_degraded_frames_makes_their_mean_unknown() -> None:
    clean = score_differences(scores(0.3, float("nan"), 1), scores(0.3, float("nan"), 1))
    degraded = score_differences(scores(0.3, 0.5, 1), scores(0.3, 0.4, 1))
    assert difference_cells(mean_differences([clean, degraded]))[3] == "-"
    with pytest.raises(ValueError, match="no blocks"):
        mean_differences([])


def test_hold_last_good_stands_in_the_last_undamaged_frame_for_each_damaged_one() -> None:
    frames = [np.full((2, 2, 3), value, dtype=np.uint8) for value in range(6)]
    tags = ("blur", "", "dropout", "occluder", "dark+occluder", "")
    held = hold_last_good(frames, tags)
    # No good frame before the first: kept. A scene event alone is not damage.
    assert [int(frame[0, 0, 0]) for frame in held] == [0, 1, 1, 3, 3, 5]
    with pytest.raises(ValueError):
        hold_last_good(frames, tags[:-1])
