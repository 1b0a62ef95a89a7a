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


def encode_rle(mask: np.ndarray) -> np.ndarray:
    """Encode a (H, W) boolean mask as uint32 run lengths (column-major, background first)."""
    if mask.ndim != 2:
        raise ValueError(f"encode_rle expects a 2-D mask, got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(0, dtype=np.uint32)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size])))
    if flat[0]:
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
