"""Label images and debug overlays of tracked instances (numpy + Pillow, no ROS)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from metaseg_ros.results import BoundingBox, TrackedInstance

# Label image encodings: 16UC1 shows in Foxglove's and RViz's image panels (colour maps
# for 8/16-bit images), 32SC1 keeps more ids apart.
LABEL_ENCODINGS: tuple[str, ...] = ("16UC1", "32SC1")
_LABEL_LIMITS = {"16UC1": (65535, np.uint16), "32SC1": (2**31 - 1, np.int32)}


def fold_track_id(track_id: int, encoding: str = "16UC1") -> int:
    """The pixel value of a track id in a label image: ids 1..N as they are, larger ids
    folded back into 1..N, (id - 1) mod N + 1, with N = 65535 for 16UC1 and 2^31 - 1 for
    32SC1. 0 stays 'no instance'; two live tracks share a value only when their ids differ
    by a multiple of N."""
    limit = _LABEL_LIMITS[encoding][0]
    return (int(track_id) - 1) % limit + 1


def label_image(instances: Sequence[TrackedInstance], height: int, width: int,
                encoding: str = "32SC1") -> np.ndarray:
    """(H, W) image whose pixels hold the track id of their instance (0 = none): int32 for
    32SC1, uint16 for 16UC1, ids folded by fold_track_id.

    Where masks overlap, the higher-scoring instance wins. Each mask is read inside its box
    only (TrackedInstance.bbox holds every pixel of it).
    """
    if encoding not in _LABEL_LIMITS:
        raise ValueError(f"label encoding must be one of {LABEL_ENCODINGS}, got {encoding!r}")
    labels = np.zeros((height, width), dtype=_LABEL_LIMITS[encoding][1])
    for instance in sorted(instances, key=lambda inst: inst.score):
        rows, columns = _box_slices(instance.bbox, instance.mask.shape)
        labels[rows, columns][instance.mask[rows, columns]] = \
            fold_track_id(instance.track_id, encoding)
    return labels


def _box_slices(box: BoundingBox, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Row and column slices of a box inside an image of `shape` (H, W, ...)."""
    x0, y0, x1, y1 = box.clipped(shape[0], shape[1])
    return slice(y0, y1), slice(x0, x1)


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour for a track id (golden-ratio hue steps)."""
    hue = (track_id * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, 1.0)
    return int(red * 255), int(green * 255), int(blue * 255)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with at least one 4-neighbour outside it."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
                & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~interior


@lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def render_overlay(rgb: np.ndarray, instances: Sequence[TrackedInstance],
                   alpha: float = 0.5) -> np.ndarray:
    """RGB debug image: masks tinted by track colour, outlined, labelled "#id class score"."""
    from PIL import Image, ImageDraw

    canvas = rgb.astype(np.float32)
    for instance in instances:
        # Inside the instance's box only (it holds every pixel of the mask, so the outline
        # found there is the outline of the whole mask).
        rows, columns = _box_slices(instance.bbox, instance.mask.shape)
        mask, region = instance.mask[rows, columns], canvas[rows, columns]
        color = np.array(track_color(instance.track_id), dtype=np.float32)
        region[mask] = (1.0 - alpha) * region[mask] + alpha * color
        region[_boundary(mask)] = color
    image = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = _font()
    for instance in instances:
        text = f"#{instance.track_id} {instance.class_name} {instance.score:.2f}"
        x, y = instance.bbox.x, max(instance.bbox.y - 16, 0)
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
        draw.text((x, y), text, fill=track_color(instance.track_id), font=font)
    return np.asarray(image)
