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
    # Whole columns: in column-major order they are one contiguous part of the sequence.
    # Only the box is read (transposed); the rest of its columns is known background.
    columns = np.zeros((max(end_column - first_column, 0), height), dtype=bool)
    columns[:, top:bottom] = np.asarray(mask[top:bottom, first_column:end_column], dtype=bool).T
    part = columns.ravel()
    if part.size == 0:
        return np.array([total], dtype=np.uint32)
    start, end = first_column * height, first_column * height + part.size
    # Run boundaries: where the part changes, and where it meets the background around it.
    boundaries = [[0]]
    if part[0] and start > 0:
        boundaries.append([start])
    boundaries.append(np.flatnonzero(part[1:] != part[:-1]) + 1 + start)
    if part[-1] and end < total:
        boundaries.append([end])
    boundaries.append([total])
    runs = np.diff(np.concatenate(boundaries))
    if part[0] and start == 0:  # the first pixel is the object's: an empty background run
        runs = np.concatenate(([0], runs))
    return runs.astype(np.uint32)


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
