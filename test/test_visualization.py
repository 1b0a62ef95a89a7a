"""Label images and overlays read each mask inside its box: the same pixels as whole masks."""

from __future__ import annotations

import numpy as np
import pytest
from shapes import random_tracked_frame

from metaseg_ros.visualization import label_image, render_overlay, track_color

pytestmark = pytest.mark.torch_free


def whole_mask_labels(instances, height: int, width: int) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.int32)
    for instance in sorted(instances, key=lambda inst: inst.score):
        labels[instance.mask] = instance.track_id
    return labels


def whole_mask_tint(rgb: np.ndarray, instances, alpha: float = 0.5) -> np.ndarray:
    """Tint and outline over whole masks (4-neighbourhood, outside the frame = background)."""
    canvas = rgb.astype(np.float32)
    for instance in instances:
        mask = instance.mask
        padded = np.pad(mask, 1)
        interior = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
                    & padded[1:-1, :-2] & padded[1:-1, 2:])
        color = np.array(track_color(instance.track_id), dtype=np.float32)
        canvas[mask] = (1.0 - alpha) * canvas[mask] + alpha * color
        canvas[mask & ~interior] = color
    return canvas.astype(np.uint8)


def test_label_image_equals_whole_masks() -> None:
    for seed in range(3):
        frame = random_tracked_frame(seed, 120, 160, 12)  # objects cut by the frame's edges
        np.testing.assert_array_equal(label_image(frame.instances, 120, 160),
                                      whole_mask_labels(frame.instances, 120, 160))


def test_overlay_tints_and_outlines_as_over_whole_masks() -> None:
    frame = random_tracked_frame(4, 120, 160, 12)
    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    overlay = render_overlay(rgb, frame.instances)
    expected = whole_mask_tint(rgb, frame.instances)
    # Labels are drawn over the tinted image afterwards: compare away from their text boxes.
    untouched = np.ones((120, 160), bool)
    for instance in frame.instances:
        y = max(instance.bbox.y - 16, 0)
        untouched[max(y - 2, 0):y + 20, max(instance.bbox.x - 2, 0):] = False
    assert untouched.mean() > 0.2
    np.testing.assert_array_equal(overlay[untouched], expected[untouched])
