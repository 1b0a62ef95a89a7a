"""Mask outlines and text as line segments, for image markers (numpy, scipy, Pillow; no ROS).

    outline_polygons(mask, bbox)  the outer boundary of each sizeable connected part of a mask,
                                  traced (Moore neighbours, 8-connected) and simplified
                                  (Douglas-Peucker): closed polygons of pixel centres (x, y)
    text_segments(text, x, y)     the text drawn with Pillow's built-in bitmap font, each run
                                  of lit pixels of a row one horizontal segment: drawn with
                                  line width `scale` they cover exactly the font's pixels

Viewers that show visualization_msgs/ImageMarker draw lines, not text, so labels travel as
segments too (ros/markers.py puts both into one LINE_LIST marker per frame).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from metaseg_ros.results import BoundingBox

# Clockwise ring of the 8 neighbours (dy, dx) in image coordinates (y down), from west.
_RING = ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1))
_RING_INDEX = {offset: index for index, offset in enumerate(_RING)}
MAX_PARTS = 8           # outlines per mask (its largest connected parts)
MIN_PART_PIXELS = 9     # parts smaller than this are not outlined
SIMPLIFY_PIXELS = 1.0   # largest distance of a dropped boundary pixel from the polygon


def trace_boundary(part: np.ndarray) -> np.ndarray:
    """(K, 2) (row, col) of the outer boundary of one 8-connected part, clockwise, from its
    first pixel in raster order (Moore-neighbour tracing, stopped when a state repeats)."""
    padded = np.pad(part, 1)
    rows, cols = np.nonzero(padded)
    start = (int(rows[0]), int(cols[0]))
    current, back = start, (start[0], start[1] - 1)  # west of the first pixel is outside
    boundary = [start]
    seen = {(current, back)}
    while True:
        base = _RING_INDEX[(back[0] - current[0], back[1] - current[1])]
        previous, found = back, None
        for step in range(1, 9):
            dy, dx = _RING[(base + step) % 8]
            candidate = (current[0] + dy, current[1] + dx)
            if padded[candidate]:
                found = candidate
                break
            previous = candidate
        if found is None:  # a single pixel
            break
        current, back = found, previous
        if (current, back) in seen:
            break
        seen.add((current, back))
        boundary.append(current)
    if len(boundary) > 1 and boundary[-1] == start:
        boundary.pop()
    return np.array(boundary, dtype=np.int64) - 1


def simplify(points: np.ndarray, tolerance: float = SIMPLIFY_PIXELS) -> np.ndarray:
    """The closed polygon `points` (K, 2) with the points dropped that lie within
    `tolerance` of the polygon through the others (Douglas-Peucker)."""
    if len(points) < 4:
        return points
    # Split the ring at the point farthest from the first; simplify both halves.
    far = int(np.argmax(((points - points[0]) ** 2).sum(axis=1)))
    ring = np.concatenate([points, points[:1]])
    keep = np.zeros(len(ring), bool)
    keep[[0, far, len(ring) - 1]] = True
    stack = [(0, far), (far, len(ring) - 1)]
    while stack:
        first, last = stack.pop()
        if last - first < 2:
            continue
        a, b = ring[first].astype(float), ring[last].astype(float)
        middle = ring[first + 1:last].astype(float)
        direction = b - a
        length = np.hypot(*direction)
        if length == 0:
            distance = np.hypot(*(middle - a).T)
        else:
            distance = np.abs(direction[0] * (middle[:, 1] - a[1])
                              - direction[1] * (middle[:, 0] - a[0])) / length
        index = int(np.argmax(distance))
        if distance[index] > tolerance:
            split = first + 1 + index
            keep[split] = True
            stack += [(first, split), (split, last)]
    return ring[keep][:-1]


def outline_polygons(mask: np.ndarray, bbox: BoundingBox) -> list[np.ndarray]:
    """Closed polygons (K, 2) of pixel centres (x, y) around the largest parts of a mask
    (read inside its box); holes are not outlined."""
    x0, y0, x1, y1 = bbox.clipped(*mask.shape[:2])
    labels, count = ndimage.label(mask[y0:y1, x0:x1], structure=np.ones((3, 3), int))
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = [int(k) for k in np.argsort(-sizes, kind="stable")[:MAX_PARTS]
             if sizes[k] >= MIN_PART_PIXELS]
    polygons = []
    for k in order:
        boundary = trace_boundary(labels == k + 1)
        xy = boundary[:, ::-1] + np.array([x0, y0])
        polygons.append(simplify(xy))
    return polygons


def polygon_segments(polygon: np.ndarray) -> np.ndarray:
    """(K, 2, 2) segments of a closed polygon (K, 2): each point to the next, last to first."""
    return np.stack([polygon, np.roll(polygon, -1, axis=0)], axis=1).astype(np.float64)


@lru_cache(maxsize=1)
def _bitmap_font():
    from PIL import ImageFont

    loader = getattr(ImageFont, "load_default_imagefont", None)  # Pillow >= 10.1
    return loader() if loader is not None else ImageFont.load_default()


def text_bitmap(text: str) -> np.ndarray:
    """(h, w) bool pixels of `text` in Pillow's built-in bitmap font."""
    from PIL import Image, ImageDraw

    font = _bitmap_font()
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("1", (max(right - left, 1), max(bottom - top, 1)), 0)
    ImageDraw.Draw(image).text((-left, -top), text, fill=1, font=font)
    return np.asarray(image, dtype=bool)


def text_segments(text: str, x: float, y: float, scale: float = 1.0) -> np.ndarray:
    """(S, 2, 2) horizontal segments drawing `text` with its top-left corner at (x, y),
    `scale` image pixels per font pixel (draw them with line width `scale`)."""
    bitmap = text_bitmap(text)
    padded = np.pad(bitmap, ((0, 0), (1, 1)))
    changes = np.diff(padded.astype(np.int8), axis=1)
    starts_r, starts_c = np.nonzero(changes == 1)
    ends_c = np.nonzero(changes == -1)[1]  # same row-major order as the starts
    row = y + (starts_r + 0.5) * scale
    return np.stack([np.stack([x + starts_c * scale, row], axis=1),
                     np.stack([x + ends_c * scale, row], axis=1)], axis=1).astype(np.float64)
