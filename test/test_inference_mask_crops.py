"""Mask logits computed inside boxes (inference/mask_crops.py) against the two resizes of
masks_to_frame over the whole frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaseg_ros.inference.mask_crops import (
    MERGE_SLACK,
    _merge_overlapping,
    candidate_mask,
    frame_map,
)
from metaseg_ros.inference.preprocess import Letterbox, masks_to_frame

NETWORK = (256, 256)
LOW = (64, 64)
# Pixels whose logit is this close to the threshold may be decided either way by two
# float paths (the combined weights round differently from two resizes).
NEAR_TIE = 1e-4


def blobs(centres: list[tuple[float, float, float]], seed: int = 0) -> np.ndarray:
    """(64, 64) low-res logits: positive discs (row, col, radius) on a negative background,
    with noise."""
    ys, xs = np.mgrid[0:LOW[0], 0:LOW[1]].astype(np.float32)
    logits = np.full(LOW, -4.0, dtype=np.float32)
    for cy, cx, radius in centres:
        logits = np.maximum(logits, 3.0 * (1.0 - np.hypot(ys - cy, xs - cx) / radius))
    noise = np.random.default_rng(seed).normal(0.0, 0.2, LOW).astype(np.float32)
    return logits + noise


def whole_frame(logits: np.ndarray, letterbox: Letterbox) -> np.ndarray:
    return masks_to_frame(torch.from_numpy(logits)[None], letterbox)[0].numpy()


@pytest.mark.parametrize("frame", [(480, 640), (720, 1280), (256, 256), (90, 70)])
def test_crops_equal_the_whole_frame_resize(frame):
    letterbox = Letterbox.fit(*frame, NETWORK)
    mapping = frame_map(letterbox, *LOW)
    logits = np.random.default_rng(1).normal(0.0, 3.0, LOW).astype(np.float32)
    expected = whole_frame(logits, letterbox)
    height, width = frame
    for box in [(0, height, 0, width), (height // 3, height // 2 + 1, width // 4, width - 1),
                (height - 1, height, 0, 1)]:
        got = mapping.crop(logits, box)
        np.testing.assert_allclose(got, expected[box[0]:box[1], box[2]:box[3]], atol=1e-5)


@pytest.mark.parametrize("frame, count", [((480, 640), 3), ((720, 1280), 3), ((300, 400), 2)])
def test_separate_blobs_get_separate_boxes_that_hold_the_whole_mask(frame, count):
    """Three blobs, three boxes; on a small frame two of them lie close enough to share one
    (MERGE_SLACK)."""
    letterbox = Letterbox.fit(*frame, NETWORK)
    mapping = frame_map(letterbox, *LOW)
    logits = blobs([(8, 8, 4), (40, 50, 6), (10, 45, 2.5)])
    boxes = mapping.support_boxes(logits, 0.0)
    assert len(boxes) == count
    covered = np.zeros(frame, dtype=int)
    for y0, y1, x0, x1 in boxes:
        covered[y0:y1, x0:x1] += 1
    assert covered.max() == 1  # disjoint
    expected = whole_frame(logits, letterbox) > 0.0
    assert expected.sum() > 0 and (covered[expected] == 1).all()  # every mask pixel inside
    union = (min(b[0] for b in boxes), max(b[1] for b in boxes),
             min(b[2] for b in boxes), max(b[3] for b in boxes))
    assert covered.sum() < 0.5 * (union[1] - union[0]) * (union[3] - union[2])


@pytest.mark.parametrize("frame", [(480, 640), (720, 1280), (300, 400)])
def test_candidate_mask_equals_the_thresholded_whole_frame(frame):
    letterbox = Letterbox.fit(*frame, NETWORK)
    mapping = frame_map(letterbox, *LOW)
    logits = blobs([(8, 8, 4), (40, 50, 6), (10, 45, 2.5), (60, 5, 3)], seed=2)
    found = candidate_mask(mapping, logits, 0.0)
    expected_logits = whole_frame(logits, letterbox)
    expected = expected_logits > 0.0
    clear = np.abs(expected_logits) > NEAR_TIE
    got = np.zeros(frame, dtype=bool)
    probability = np.zeros(frame, dtype=np.float32)
    assert len(found.parts) > 1  # the blobs lie far apart: one part each, no empty frame
    for part in found.parts:
        y0, y1, x0, x1 = part.box
        assert not got[y0:y1, x0:x1].any()  # the parts' boxes are disjoint
        got[y0:y1, x0:x1] = part.mask
        probability[y0:y1, x0:x1] = part.probability
        assert part.mask[0].any() and part.mask[-1].any()  # each part's box is tight
        assert part.mask[:, 0].any() and part.mask[:, -1].any()
    np.testing.assert_array_equal(got[clear], expected[clear])
    y0, y1, x0, x1 = found.box
    rows, cols = np.flatnonzero(expected.any(axis=1)), np.flatnonzero(expected.any(axis=0))
    assert abs(y0 - rows[0]) <= 1 and abs(y1 - rows[-1] - 1) <= 1
    assert abs(x0 - cols[0]) <= 1 and abs(x1 - cols[-1] - 1) <= 1
    assert found.area == got.sum()
    inside = 1.0 / (1.0 + np.exp(-expected_logits.astype(np.float64)))
    assert found.probability_sum == pytest.approx(inside[got].sum(), rel=1e-5)
    np.testing.assert_allclose(probability[got], inside[got], rtol=1e-4)


def test_no_candidate_mask_where_nothing_exceeds_the_threshold():
    letterbox = Letterbox.fit(480, 640, NETWORK)
    assert candidate_mask(frame_map(letterbox, *LOW), blobs([]), 0.0) is None


def test_boxes_that_overlap_or_lie_close_are_merged():
    far = [(0, 100, 0, 100), (0, 100, 300, 400)]  # a union would add 20,000 pixels
    assert _merge_overlapping(far) == far
    assert _merge_overlapping([(0, 100, 0, 100), (50, 150, 50, 150), (140, 160, 140, 160)]) \
        == [(0, 160, 0, 160)]
    small = [(0, 10, 0, 10), (0, 10, 20, 30)]  # 100 extra pixels: cheaper as one box
    assert MERGE_SLACK > 100 and _merge_overlapping(small) == [(0, 10, 0, 30)]


def test_merging_resumes_at_the_grown_box_with_the_same_result_as_restarting():
    """The merge order of _merge_overlapping (first joining pair each time, resumed at the
    grown box) gives what restarting from the first pair after every merge gives."""

    def restarting(boxes):
        merged = list(boxes)
        changed = True
        while changed:
            changed = False
            for i in range(len(merged)):
                for j in range(i + 1, len(merged)):
                    a, b = merged[i], merged[j]
                    union = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))
                    overlap = a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]
                    extra = ((union[1] - union[0]) * (union[3] - union[2])
                             - (a[1] - a[0]) * (a[3] - a[2]) - (b[1] - b[0]) * (b[3] - b[2]))
                    if overlap or extra < MERGE_SLACK:
                        merged[i] = union
                        del merged[j]
                        changed = True
                        break
                if changed:
                    break
        return merged

    rng = np.random.default_rng(0)
    merges = 0
    for _ in range(300):
        boxes = []
        for _ in range(int(rng.integers(1, 14))):
            y, x = (int(v) for v in rng.integers(0, 700, 2))
            h, w = (int(v) for v in rng.integers(5, 160, 2))
            boxes.append((y, y + h, x, x + w))
        expected = restarting(boxes)
        assert _merge_overlapping(boxes) == expected
        merges += len(boxes) - len(expected)
    assert merges > 300  # the cases merged boxes, often


def test_groups_of_a_stack_are_those_of_each_map_alone():
    """One labelling for K maps never joins groups across maps: each map's groups equal
    those found for it alone (blobs at the same place in neighbouring maps included)."""
    letterbox = Letterbox.fit(720, 1280, NETWORK)
    mapping = frame_map(letterbox, *LOW)
    stack = np.stack([blobs([(8, 8, 4), (40, 50, 6)], seed=3), blobs([(8, 9, 4)], seed=4),
                      blobs([], seed=5), blobs([(30, 30, 3), (10, 45, 2.5)], seed=6)])
    together = mapping.group_boxes(stack, 0.0)
    alone = [mapping.group_boxes(one[None], 0.0)[0] for one in stack]
    assert together == alone
    assert [len(groups) > 0 for groups in together] == [True, True, False, True]


def test_blas_runs_on_one_thread_inside_the_post_processing_block():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from metaseg_ros.inference.mask_crops import single_threaded_blas

    np.ones((2, 2)) @ np.ones((2, 2))  # NumPy's BLAS is loaded
    before = {p["filepath"]: p["num_threads"] for p in threadpoolctl.threadpool_info()
              if p["user_api"] == "blas"}
    assert before
    with single_threaded_blas():
        inside = [p["num_threads"] for p in threadpoolctl.threadpool_info()
                  if p["user_api"] == "blas"]
    after = {p["filepath"]: p["num_threads"] for p in threadpoolctl.threadpool_info()
             if p["user_api"] == "blas"}
    assert inside and all(n == 1 for n in inside)
    assert after == before  # restored on leaving


def test_sigmoid_equals_pytorchs_without_overflow():
    from metaseg_ros.inference.mask_crops import sigmoid

    logits = np.concatenate([np.linspace(-30.0, 30.0, 10001, dtype=np.float32),
                             np.array([-1e30, 1e30, -np.inf, np.inf], dtype=np.float32)])
    with np.errstate(all="raise"):
        got = sigmoid(logits)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, torch.sigmoid(torch.from_numpy(logits)).numpy(), rtol=0,
                               atol=1e-6)
    assert got[-4] == 0.0 and got[-3] == 1.0 and got[-2] == 0.0 and got[-1] == 1.0
