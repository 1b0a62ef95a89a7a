"""What the viewers are sent: mask outlines traced and simplified, labels as segments that
redraw the font's pixels exactly, and label images folded into 16 bits by the documented
rule (metaseg_ros/outlines.py, metaseg_ros/visualization.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from metaseg_ros.image_codec import label_to_image_fields
from metaseg_ros.outlines import (
    outline_polygons,
    polygon_segments,
    simplify,
    text_bitmap,
    text_segments,
    trace_boundary,
)
from metaseg_ros.results import BoundingBox, TrackedInstance
from metaseg_ros.visualization import fold_track_id, label_image

pytestmark = pytest.mark.torch_free


def fill(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixels inside a polygon of pixel centres, outline included (Pillow)."""
    image = Image.new("1", (shape[1], shape[0]), 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in polygon.tolist()], fill=1, outline=1)
    return np.asarray(image, dtype=bool)


def boundary_pixels(mask: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour outside: the 8-connected outer contour of a blob."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def blob(shape=(90, 120), seed=0) -> np.ndarray:
    """A smooth random blob (no holes), as segmentation masks usually are."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    angle = np.arctan2(yy - shape[0] / 2, xx - shape[1] / 2)
    radius = 25 + 6 * np.sin(3 * angle + rng.uniform(0, 6)) + 4 * np.cos(5 * angle)
    return np.hypot(yy - shape[0] / 2, xx - shape[1] / 2) < radius


def test_traced_boundary_is_every_outer_boundary_pixel_in_order() -> None:
    mask = blob()
    traced = trace_boundary(mask)
    expected = {(int(r), int(c)) for r, c in zip(*np.nonzero(boundary_pixels(mask)),
                                                 strict=True)}
    assert set(map(tuple, traced.tolist())) == expected
    steps = np.abs(np.diff(np.concatenate([traced, traced[:1]]), axis=0)).max(axis=1)
    assert steps.max() == 1  # 8-connected, closed


def test_simplified_outline_encloses_the_mask_closely() -> None:
    for seed in range(4):
        mask = blob(seed=seed)
        (polygon,) = outline_polygons(mask, BoundingBox.from_mask(mask))
        assert len(polygon) < len(trace_boundary(mask)) / 3  # simplified
        filled = fill(polygon, mask.shape)
        iou = (filled & mask).sum() / (filled | mask).sum()
        assert iou > 0.97, iou


def test_several_parts_small_ones_skipped_and_the_box_offset_applied() -> None:
    mask = np.zeros((60, 80), bool)
    mask[10:30, 40:70] = True
    mask[40:50, 5:15] = True
    mask[55, 70] = True  # a single pixel: not outlined
    polygons = outline_polygons(mask, BoundingBox.from_mask(mask))
    assert len(polygons) == 2
    assert sorted(map(tuple, polygons[0].tolist())) == [(40, 10), (40, 29), (69, 10), (69, 29)]
    assert sorted(map(tuple, polygons[1].tolist())) == [(5, 40), (5, 49), (14, 40), (14, 49)]
    segments = polygon_segments(polygons[0])
    assert segments.shape == (4, 2, 2) and (segments[-1, 1] == segments[0, 0]).all()


def test_simplify_keeps_corners_and_drops_collinear_points() -> None:
    square = np.array([[0, 0], [5, 0], [10, 0], [10, 5], [10, 10], [5, 10], [0, 10], [0, 5]])
    assert sorted(map(tuple, simplify(square).tolist())) == [(0, 0), (0, 10), (10, 0), (10, 10)]


@pytest.mark.parametrize("text", ["#1 person", "#65536 traffic light", "#4294967295 car"])
@pytest.mark.parametrize("scale", [1, 2, 3])
def test_text_segments_redraw_the_font_pixels_exactly(text, scale) -> None:
    bitmap = text_bitmap(text)
    assert bitmap.any()
    segments = text_segments(text, 0.0, 0.0, scale)
    drawn = np.zeros((bitmap.shape[0] * scale, bitmap.shape[1] * scale), bool)
    for (x0, y), (x1, _) in segments.tolist():
        row = int(y - scale / 2)
        drawn[row: row + scale, int(x0): int(x1)] = True
    expected = np.kron(bitmap, np.ones((scale, scale), bool))
    np.testing.assert_array_equal(drawn, expected)


def test_label_ids_fold_into_16_bits_by_the_documented_rule() -> None:
    assert [fold_track_id(i) for i in (1, 2, 65535, 65536, 65537, 2**32 - 1)] == \
        [1, 2, 65535, 1, 2, (2**32 - 2) % 65535 + 1]
    assert fold_track_id(2**31, "32SC1") == 1 and fold_track_id(12, "32SC1") == 12
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    instance = TrackedInstance(track_id=65540, class_id=0, class_name="person", score=0.9,
                               mask=mask, bbox=BoundingBox.from_mask(mask), age=1, hits=1)
    labels16 = label_image([instance], 4, 6, "16UC1")
    fields = label_to_image_fields(labels16)
    assert fields["encoding"] == "16UC1" and fields["step"] == 12
    decoded = np.frombuffer(fields["data"], "<u2").reshape(4, 6)
    np.testing.assert_array_equal(decoded, np.where(mask, 5, 0))
    labels32 = label_image([instance], 4, 6, "32SC1")
    fields = label_to_image_fields(labels32)
    assert fields["encoding"] == "32SC1"
    np.testing.assert_array_equal(np.frombuffer(fields["data"], "<i4").reshape(4, 6),
                                  np.where(mask, 65540, 0))
    with pytest.raises(ValueError, match="label encoding"):
        label_image([instance], 4, 6, "8UC1")
