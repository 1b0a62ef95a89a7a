"""DAVIS J&F: region similarity J (mask IoU) and boundary F-measure F.

Definitions of the DAVIS 2017 evaluation (davis2017-evaluation, as also used by TrackEval):

- J: IoU of predicted and ground-truth masks; 1 when both are empty.
- F: the boundary pixels of each mask (a pixel whose value differs from its right, lower or
  lower-right neighbour; on the last row only the right neighbour counts, on the last
  column only the lower one, and the bottom-right pixel is never a boundary) are matched
  with a tolerance of ceil(0.008 * image diagonal) pixels (dilation by a disk of that
  radius); precision = predicted boundary pixels near a ground-truth boundary / predicted
  boundary pixels, recall the other way round, F = 2PR / (P + R). Empty boundaries: both
  empty gives F = 1, only one empty gives F = 0.
- Per object: J-Mean, F-Mean = means over frames; J-Recall, F-Recall = fraction of frames
  above 0.5. Sequence values are means over ground-truth objects; J&F = (J-Mean + F-Mean) / 2.

Predicted ids are matched to ground-truth ids either by identity (semi-supervised DAVIS,
where predictions keep the given ids) or, for trackers with their own ids, one-to-one by
the Hungarian algorithm on the mean J over the sequence (TrackEval's choice). A ground-truth
object without a matched prediction is scored against an empty mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pycocotools import mask as mask_utils
from scipy.ndimage import binary_dilation
from scipy.optimize import linear_sum_assignment

from metaseg_ros.eval.frames import FrameObjects

BOUNDARY_THRESHOLD = 0.008


def region_similarity(predicted: np.ndarray, ground_truth: np.ndarray) -> float:
    """J: IoU of two (H, W) boolean masks, 1 when both are empty."""
    predicted = np.asarray(predicted, dtype=bool)
    ground_truth = np.asarray(ground_truth, dtype=bool)
    union = np.count_nonzero(predicted | ground_truth)
    if union == 0:
        return 1.0
    return np.count_nonzero(predicted & ground_truth) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a (H, W) boolean mask (see the module docstring)."""
    mask = np.asarray(mask, dtype=bool)
    right = np.zeros_like(mask)
    below = np.zeros_like(mask)
    below_right = np.zeros_like(mask)
    right[:, :-1] = mask[:, 1:]
    below[:-1, :] = mask[1:, :]
    below_right[:-1, :-1] = mask[1:, 1:]
    boundary = (mask != right) | (mask != below) | (mask != below_right)
    boundary[-1, :] = mask[-1, :] != right[-1, :]
    boundary[:, -1] = mask[:, -1] != below[:, -1]
    boundary[-1, -1] = False
    return boundary


def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def boundary_tolerance(height: int, width: int, bound_th: float = BOUNDARY_THRESHOLD) -> int:
    """Tolerance in pixels: bound_th itself when >= 1, else ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return math.ceil(bound_th * math.hypot(height, width))


def boundary_f_measure(predicted: np.ndarray, ground_truth: np.ndarray,
                       bound_th: float = BOUNDARY_THRESHOLD) -> float:
    """F: boundary F-measure of two (H, W) boolean masks (see the module docstring)."""
    predicted_boundary = boundary_map(predicted)
    truth_boundary = boundary_map(ground_truth)
    num_predicted = np.count_nonzero(predicted_boundary)
    num_truth = np.count_nonzero(truth_boundary)
    if num_predicted == 0 and num_truth == 0:
        return 1.0
    if num_predicted == 0 or num_truth == 0:
        return 0.0
    radius = boundary_tolerance(*predicted_boundary.shape, bound_th=bound_th)
    disk = _disk(radius)
    predicted_near = binary_dilation(predicted_boundary, structure=disk) if radius else \
        predicted_boundary
    truth_near = binary_dilation(truth_boundary, structure=disk) if radius else truth_boundary
    precision = np.count_nonzero(predicted_boundary & truth_near) / num_predicted
    recall = np.count_nonzero(truth_boundary & predicted_near) / num_truth
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True, eq=False)
class JAndF:
    """DAVIS scores of one sequence; per_object maps gt id -> (J per frame, F per frame)."""

    j_mean: float
    j_recall: float
    f_mean: float
    f_recall: float
    per_object: dict[int, tuple[np.ndarray, np.ndarray]]

    @property
    def j_and_f(self) -> float:
        """(J-Mean + F-Mean) / 2."""
        return (self.j_mean + self.f_mean) / 2


def _object_masks(frames: Sequence[FrameObjects], shape: tuple[int, int]
                  ) -> dict[int, list[np.ndarray | None]]:
    """id -> per-frame decoded mask (None where the id is absent)."""
    result: dict[int, list[np.ndarray | None]] = {}
    for index, frame in enumerate(frames):
        if len(frame) and frame.masks is None:
            raise ValueError("J&F needs masks")
        for k, object_id in enumerate(frame.ids.tolist()):
            decoded = mask_utils.decode(frame.masks[k]).astype(bool)  # type: ignore[index]
            if decoded.shape != shape:
                raise ValueError(f"mask of size {decoded.shape}, expected {shape}")
            result.setdefault(object_id, [None] * len(frames))[index] = decoded
    return result


def davis_j_and_f(ground_truth: Sequence[FrameObjects], predictions: Sequence[FrameObjects],
                  image_size: tuple[int, int], match: Literal["identity", "hungarian"] =
                  "hungarian", skip_first_last: bool = False,
                  bound_th: float = BOUNDARY_THRESHOLD) -> JAndF:
    """J&F of one sequence. image_size: (height, width).

    skip_first_last drops the first and last frames, as the DAVIS semi-supervised benchmark
    does (its first frame is given).
    """
    if len(ground_truth) != len(predictions):
        raise ValueError(f"ground truth has {len(ground_truth)} frames, "
                         f"prediction {len(predictions)}")
    frames = list(range(len(ground_truth)))
    if skip_first_last:
        frames = frames[1:-1]
    gt_objects = _object_masks(ground_truth, image_size)
    pred_objects = _object_masks(predictions, image_size)
    empty = np.zeros(image_size, dtype=bool)

    def pick(masks: list[np.ndarray | None] | None, frame: int) -> np.ndarray:
        if masks is None or masks[frame] is None:
            return empty
        return masks[frame]  # type: ignore[return-value]

    gt_ids = sorted(gt_objects)
    pred_ids = sorted(pred_objects)
    if not gt_ids:
        raise ValueError("J&F needs at least one ground-truth object")
    assigned: dict[int, int | None]
    if match == "identity":
        assigned = {gt_id: gt_id if gt_id in pred_objects else None for gt_id in gt_ids}
    elif match == "hungarian":
        assigned = dict.fromkeys(gt_ids)
        if pred_ids:
            mean_j = np.array([[np.mean([region_similarity(pick(pred_objects[p], f),
                                                           pick(gt_objects[g], f))
                                         for f in frames]) for p in pred_ids]
                               for g in gt_ids])
            rows, cols = linear_sum_assignment(-mean_j)
            assigned.update({gt_ids[r]: pred_ids[c] for r, c in zip(rows, cols, strict=True)})
    else:
        raise ValueError(f"unknown match {match!r}: use 'identity' or 'hungarian'")

    per_object = {}
    for gt_id in gt_ids:
        pred_masks = pred_objects.get(assigned[gt_id]) if assigned[gt_id] is not None else None
        j_values = np.array([region_similarity(pick(pred_masks, f), pick(gt_objects[gt_id], f))
                             for f in frames])
        f_values = np.array([boundary_f_measure(pick(pred_masks, f), pick(gt_objects[gt_id], f),
                                                bound_th) for f in frames])
        per_object[gt_id] = (j_values, f_values)
    eps = np.finfo(np.float64).eps
    return JAndF(
        j_mean=float(np.mean([v[0].mean() for v in per_object.values()])),
        j_recall=float(np.mean([(v[0] > 0.5 + eps).mean() for v in per_object.values()])),
        f_mean=float(np.mean([v[1].mean() for v in per_object.values()])),
        f_recall=float(np.mean([(v[1] > 0.5 + eps).mean() for v in per_object.values()])),
        per_object=per_object)
