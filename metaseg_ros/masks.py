"""Lossless run-length encoding of binary masks, as carried by InstanceMask.mask_rle.

Convention (identical to COCO's uncompressed RLE, so pycocotools reads it directly):
pixels in column-major order (down the first column, then the next), runs alternate
background / object starting with background (the first run may be 0), and the runs
sum to height * width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metaseg_ros.results import BoundingBox


def encode_rle(mask: np.ndarray, bbox: BoundingBox | None = None) -> np.ndarray:
    """Encode a (H, W) boolean mask as uint32 run lengths (column-major, background first).

    bbox: a box holding every pixel of the mask (TrackedInstance.bbox): only the box is
    read, the runs are the same (a 60-pixel-wide object in a 512x512 frame: ~8x less work).
    """
    if mask.ndim != 2:
        raise ValueError(f"encode_rle expects a 2-D mask, got shape {mask.shape}")
    height, width = mask.shape
    total = height * width
    if total == 0:
        return np.zeros(0, dtype=np.uint32)
    first_column, top, end_column, bottom = 0, 0, width, height
    if bbox is not None:
        first_column, top, end_column, bottom = bbox.clipped(height, width)
    box = np.asarray(mask[top:bottom, first_column:end_column], dtype=bool)
    if box.size == 0:
        return np.array([total], dtype=np.uint32)
    # The box with one background row above and below it; the pixels between the box's
    # columns are background, so the run boundaries are where a column changes from one
    # row to the next, at the pixel index of the change's lower pixel. Found row-major (no
    # transposing copy) and sorted into column-major order (there are few).
    box_height = bottom - top
    padded = np.zeros((box_height + 2, box.shape[1]), dtype=bool)
    padded[1:-1] = box
    rows, columns = np.divmod(np.flatnonzero(padded[1:] != padded[:-1]), box.shape[1])
    boundaries = np.sort((first_column + columns) * height + top + rows)
    # An object touching the bottom of one column and the top of the next (a box of whole
    # columns) ends and starts at the same pixel: the run goes on, both boundaries drop.
    same = boundaries[1:] == boundaries[:-1]
    if same.any():
        keep = np.ones(boundaries.size, dtype=bool)
        keep[1:] &= ~same
        keep[:-1] &= ~same
        boundaries = boundaries[keep]
    if boundaries.size and boundaries[-1] == total:  # the object reaches the last pixel
        boundaries = boundaries[:-1]
    return np.diff(boundaries, prepend=0, append=total).astype(np.uint32)


def decode_rle(counts: Sequence[int] | np.ndarray, height: int, width: int) -> np.ndarray:
    """Decode run lengths (see module docstring) into a C-contiguous (H, W) bool mask."""
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs.size and runs.min() < 0):
        raise ValueError("RLE counts must be a 1-D sequence of non-negative integers")
    if int(runs.sum()) != height * width:
        raise ValueError(
            f"RLE counts sum to {int(runs.sum())}, expected height*width = {height * width}")
    values = (np.arange(runs.size) % 2).astype(bool)
    flat = np.repeat(values, runs)
    return np.ascontiguousarray(flat.reshape(width, height).T)


def to_coco_rle(counts: Sequence[int] | np.ndarray, height: int, width: int) -> dict[str, Any]:
    """Compressed COCO RLE (pycocotools' format) of the same mask, for COCO tooling."""
    from pycocotools import mask as mask_utils

    uncompressed = {"size": [int(height), int(width)], "counts": [int(c) for c in counts]}
    return mask_utils.frPyObjects(uncompressed, int(height), int(width))
