"""IoU between the objects of two frames: boxes (numpy) or masks (pycocotools)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pycocotools import mask as mask_utils

from metaseg_ros.eval.frames import FrameObjects

SimilarityKind = Literal["box", "mask"]


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(N, M) IoU of [x, y, w, h] boxes; 0 where a box has no area."""
    a = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    bottom = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    intersection = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = np.clip(a[:, 2], 0, None) * np.clip(a[:, 3], 0, None)
    area_b = np.clip(b[:, 2], 0, None) * np.clip(b[:, 3], 0, None)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def mask_iou(first: tuple, second: tuple) -> np.ndarray:
    """(N, M) IoU of compressed COCO RLE masks (pycocotools, no crowd handling)."""
    if not first or not second:
        return np.zeros((len(first), len(second)))
    return np.asarray(mask_utils.iou(list(first), list(second), [0] * len(second)),
                      dtype=np.float64).reshape(len(first), len(second))


def frame_iou(gt: FrameObjects, pred: FrameObjects, kind: SimilarityKind) -> np.ndarray:
    """(len(gt), len(pred)) IoU between ground-truth and predicted objects of one frame."""
    if kind == "box":
        if gt.boxes is None or pred.boxes is None:
            raise ValueError("box similarity needs boxes in both ground truth and prediction")
        return box_iou(gt.boxes, pred.boxes)
    if kind == "mask":
        if gt.masks is None or pred.masks is None:
            raise ValueError("mask similarity needs masks in both ground truth and prediction")
        return mask_iou(gt.masks, pred.masks)
    raise ValueError(f"unknown similarity {kind!r}: use 'box' or 'mask'")
