"""Deterministic test content: instance masks and tracked frames made of ellipses."""

from __future__ import annotations

import numpy as np

from metaseg_ros.results import BoundingBox, TrackedFrame, TrackedInstance


def ellipse_mask(height: int, width: int, center: tuple[float, float],
                 axes: tuple[float, float], angle: float = 0.0) -> np.ndarray:
    """(H, W) bool mask of a filled, rotated ellipse (center x, y; semi-axes a, b)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xs - center[0], ys - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1.0


def random_tracked_frame(seed: int, height: int = 512, width: int = 512,
                         count: int = 20) -> TrackedFrame:
    """`count` tracked instances of varied sizes (some touching the border, some tiny)."""
    rng = np.random.default_rng(seed)
    instances = []
    for index in range(count):
        axes = (float(rng.uniform(4, 90)), float(rng.uniform(4, 90)))
        center = (float(rng.uniform(-20, width + 20)), float(rng.uniform(-20, height + 20)))
        mask = ellipse_mask(height, width, center, axes, float(rng.uniform(0, np.pi)))
        # ragged edge: masks from a network are not smooth ellipses
        mask &= rng.random((height, width)) > 0.02
        instances.append(TrackedInstance(
            track_id=1000 + index * 7, class_id=index % 20, class_name=f"class_{index % 20}",
            score=float(rng.uniform(0.3, 1.0)), mask=mask, bbox=BoundingBox.from_mask(mask),
            age=index + 3, hits=index + 1))
    return TrackedFrame(height=height, width=width, instances=tuple(instances))
