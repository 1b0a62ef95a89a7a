"""Mask logits on the frame, computed only inside the box where a mask can be.

Undoing the letterbox (inference/preprocess.py: `masks_to_frame`) is two bilinear resizes,
the network's (h, w) mask grid to its input size then, the padding cropped, to the frame.
Both are linear and separable, so together they are one linear map per axis:

    frame logits (H, W) = rows (H, h) @ low-res logits (h, w) @ cols (W, w).T

with non-negative weights that sum to one per output row (bilinear weights are a convex
combination). A frame pixel can therefore exceed the mask threshold only where one of the
low-res cells it reads does: the box of those cells, mapped to the frame, holds the whole
mask, and the logits are computed there alone, reading only the cells that box needs. The
weights are PyTorch's own (read off F.interpolate), so the values equal the two resizes'
up to float rounding, ~2e-6 (tested against `masks_to_frame`).

The cells that can exceed the threshold often form several separate groups (a small
model's mask of one object can hold blobs far apart): each 8-connected group gets its own
box, boxes that overlap or lie close are merged, and only those boxes are computed instead
of one box around them all. A candidate's mask stays in those parts (each cut to its own
tight box): one array over their union would be mostly empty frame, allocated, searched and
compared for nothing (docs/benchmarks.md, issue 15's fourth round).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from metaseg_ros.inference.preprocess import Letterbox

# A cell counts as possibly inside when its logit is within this of the threshold, so that
# rounding in the combined weights cannot lose a pixel at the mask's edge.
SUPPORT_MARGIN = 1e-4
# 8-connected within each map of a (K, h, w) stack, never across maps.
EIGHT_CONNECTED_PER_MAP = np.zeros((3, 3, 3), dtype=bool)
EIGHT_CONNECTED_PER_MAP[1] = True
# Boxes whose union costs fewer extra pixels than this are computed as one: each box costs
# about as much fixed work (calls) as this many pixels.
MERGE_SLACK = 16384

Box = tuple[int, int, int, int]  # half-open (y0, y1, x0, x1) on the frame


def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 weights of a 1-D bilinear resize (align_corners=False),
    read off PyTorch itself: the resize of each unit vector is one column. So the weights are
    the very ones `masks_to_frame` uses (PyTorch computes source positions in float32, off by
    up to ~1e-5 pixel at large indices), not a re-derivation that would differ from them."""
    basis = torch.eye(in_size, dtype=torch.float32)[:, None, :, None]  # (in, 1, in, 1)
    columns = F.interpolate(basis, size=(out_size, 1), mode="bilinear", align_corners=False)
    return columns[:, 0, :, 0].T.double().numpy()


@dataclass(frozen=True, eq=False)
class AxisMap:
    """One axis of the combined resize: weights (out, in) float32 (NumPy), and for each output the
    first and last input it reads, for each input the first and last output reading it
    (padding cells, a suffix of the inputs, reach none: `reached` inputs do)."""

    weights: np.ndarray
    first_input: np.ndarray
    last_input: np.ndarray
    first_output: np.ndarray
    last_output: np.ndarray
    reached: int

    def output_span(self, start: int, stop: int) -> tuple[int, int] | None:
        """Half-open range of the outputs that read inputs start..stop-1; None if none do.
        (Bilinear reach is monotone: the first input's first output, the last reached
        input's last output.)"""
        stop = min(stop, self.reached)
        if stop <= start:
            return None
        return int(self.first_output[start]), int(self.last_output[stop - 1]) + 1

    @classmethod
    def combine(cls, low: int, network: int, resized: int, frame: int) -> AxisMap:
        """low -> network input (bilinear), crop to `resized`, resized -> frame (bilinear)."""
        weights = bilinear_weights(low, network)[:resized]
        if resized != frame:
            weights = bilinear_weights(resized, frame) @ weights
        nonzero = weights > 0
        reached = nonzero.any(axis=0)  # low-res cells in the padding reach no frame pixel
        count = int(reached.sum())
        first_output = np.where(reached, nonzero.argmax(axis=0), frame)
        last_output = np.where(reached, frame - 1 - nonzero[::-1].argmax(axis=0), -1)
        if not (reached[:count].all() and (np.diff(first_output[:count]) >= 0).all()
                and (np.diff(last_output[:count]) >= 0).all()):
            raise AssertionError("bilinear reach is not monotone")  # cannot happen
        return cls(np.ascontiguousarray(weights, dtype=np.float32),
                   nonzero.argmax(axis=1), low - 1 - nonzero[:, ::-1].argmax(axis=1),
                   first_output, last_output, count)


@dataclass(frozen=True, eq=False)
class FrameMap:
    """The combined resize of both axes for one letterbox and one low-res grid."""

    rows: AxisMap
    cols: AxisMap

    def support_boxes(self, logits: np.ndarray, threshold: float) -> list[Box]:
        """Disjoint frame boxes that together hold every pixel that can exceed `threshold`,
        from (h, w) low-res logits: one per 8-connected group of cells within
        SUPPORT_MARGIN of it (a frame pixel reads only cells next to each other), boxes that
        overlap merged; [] when none can."""
        return _merge_overlapping(self.group_boxes(logits[None], threshold)[0])

    def group_boxes(self, logits: np.ndarray, threshold: float) -> list[list[Box]]:
        """For each of (K, h, w) low-res logits, the frame box of each 8-connected group of
        cells that can exceed `threshold`, not merged yet (support_boxes merges them); one
        labelling for all K maps (its fixed cost is most of the work on 64x64 maps)."""
        possible = logits > threshold - SUPPORT_MARGIN
        boxes: list[list[Box]] = [[] for _ in range(len(logits))]
        if not possible.any():
            return boxes
        labels, _ = ndimage.label(possible, structure=EIGHT_CONNECTED_PER_MAP)
        for maps, rows, cols in ndimage.find_objects(labels):
            span_y = self.rows.output_span(rows.start, rows.stop)
            span_x = self.cols.output_span(cols.start, cols.stop)
            if span_y is not None and span_x is not None:  # not only padding cells
                boxes[maps.start].append((*span_y, *span_x))
        return boxes

    def crop(self, logits: np.ndarray, box: Box) -> np.ndarray:
        """Frame logits (float32) inside `box` from (h, w) low-res logits, reading only the
        cells the box needs: two small matrix products in NumPy (post-processing runs them
        inside single_threaded_blas(): threads cost more than they save at these sizes)."""
        y0, y1, x0, x1 = box
        r0, r1 = int(self.rows.first_input[y0]), int(self.rows.last_input[y1 - 1]) + 1
        c0, c1 = int(self.cols.first_input[x0]), int(self.cols.last_input[x1 - 1]) + 1
        cells = logits[r0:r1, c0:c1]
        rows, cols = self.rows.weights[y0:y1, r0:r1], self.cols.weights[x0:x1, c0:c1]
        # The larger product reads the low-res side it is taken over: the smaller one first.
        if r1 - r0 <= c1 - c0:
            return rows @ (cells @ cols.T)
        return (rows @ cells) @ cols.T


def _merge_overlapping(boxes: list[Box]) -> list[Box]:
    """The boxes with every pair that overlaps, or whose union adds fewer than MERGE_SLACK
    pixels to theirs, replaced by their union, until no such pair is left (each box costs
    fixed work: small boxes near each other are cheaper as one).

    Pairs are merged in order, the first joining pair (i < j) each time, into box i. After a
    merge only pairs with the grown box can newly join, so the search resumes there instead
    of from the first pair (the same merges as restarting, far fewer pair tests).
    """
    merged = list(boxes)
    i = 0  # no pair (a, b) with a < i joins
    while i < len(merged):
        j, union = _first_join(merged, i, range(i + 1, len(merged)))
        if union is None:
            i += 1
            continue
        merged[i] = union
        del merged[j]
        # Box i grew: the first joining pair is now (a, i) for the smallest such a < i,
        # and so on down; then the pairs of the last grown box with every later one.
        while True:
            a, union = _first_join(merged, i, range(i))
            if union is None:
                break
            merged[a] = union
            del merged[i]
            i = a
    return merged


def _first_join(boxes: list[Box], index: int, others: range) -> tuple[int, Box | None]:
    """The first of `others` whose box joins boxes[index], and their union; (-1, None) if
    none does."""
    for other in others:
        union = _joined(boxes[index], boxes[other])
        if union is not None:
            return other, union
    return -1, None


def _joined(a: Box, b: Box) -> Box | None:
    """The union of two boxes if they overlap or it adds fewer than MERGE_SLACK pixels to
    theirs; None otherwise. (Plain comparisons: called ~80 times a frame.)"""
    ay0, ay1, ax0, ax1 = a
    by0, by1, bx0, bx1 = b
    union = (ay0 if ay0 < by0 else by0, ay1 if ay1 > by1 else by1,
             ax0 if ax0 < bx0 else bx0, ax1 if ax1 > bx1 else bx1)
    if boxes_meet(a, b):
        return union
    extra = (union[1] - union[0]) * (union[3] - union[2]) \
        - (ay1 - ay0) * (ax1 - ax0) - (by1 - by0) * (bx1 - bx0)
    return union if extra < MERGE_SLACK else None


@dataclass(frozen=True, eq=False)
class MaskPart:
    """One separate piece of a candidate's frame mask: its tight box (y0, y1, x0, x1), the
    mask inside it and the mask probability there (unspecified outside the mask)."""

    box: Box
    mask: np.ndarray
    probability: np.ndarray


@dataclass(frozen=True, eq=False)
class CandidateMask:
    """One candidate's mask on the frame as separate parts (disjoint tight boxes, so that
    the empty frame between blobs far apart is never allocated), its area and the sum of the
    mask probability over it."""

    parts: tuple[MaskPart, ...]
    area: int
    probability_sum: float

    @property
    def box(self) -> Box:
        """The tight box of the whole mask (the union of the parts' boxes)."""
        return union_box(part.box for part in self.parts)


def boxes_meet(a: Box, b: Box) -> bool:
    """Whether two boxes share a pixel."""
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def union_box(boxes: Iterable[Box]) -> Box:
    """The smallest box holding all of `boxes` (at least one)."""
    y0, y1, x0, x1 = zip(*boxes, strict=True)
    return min(y0), max(y1), min(x0), max(x1)


def candidate_mask(frame: FrameMap, logits: np.ndarray, threshold: float,
                   groups: list[Box] | None = None) -> CandidateMask | None:
    """The frame mask (logit > threshold) of one candidate's (h, w) low-res logits, computed
    only inside its support boxes, one part per box that holds mask pixels; None when it is
    empty. groups: its unmerged group boxes (FrameMap.group_boxes) when already found."""
    if groups is None:
        groups = frame.group_boxes(logits[None], threshold)[0]
    parts = []
    area, total = 0, 0.0
    for box in _merge_overlapping(groups):
        part_logits = frame.crop(logits, box)
        mask = part_logits > threshold
        count = int(np.count_nonzero(mask))
        if not count:
            continue
        # The support box is larger than the mask (by up to a low-res cell's reach on each
        # side): the probability only inside the mask's tight box.
        top, bottom, left, right = tight_box(mask)
        mask = mask[top:bottom, left:right]
        probability = sigmoid(part_logits[top:bottom, left:right])
        # Summed over the mask as a dot product with it (cheaper than a gather).
        total += float(np.dot(probability.ravel(), mask.ravel().astype(np.float32)))
        area += count
        parts.append(MaskPart((box[0] + top, box[0] + bottom, box[2] + left, box[2] + right),
                              mask, probability))
    if not parts:
        return None
    return CandidateMask(tuple(parts), area, total)


@functools.cache
def _blas_threads():
    """threadpoolctl's controller of the process's BLAS libraries (None without it)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """NumPy's BLAS on one thread inside the block: the crops' matrix products are small,
    and BLAS threads cost more than they save when another process holds the cores
    (entered once per frame)."""
    controller = _blas_threads()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function of a float32 array, as 0.5 tanh(x / 2) + 0.5: no overflow at
    either end, NumPy's vectorised tanh on one thread (faster here than scipy's expit), and
    within 1e-6 of PyTorch's sigmoid (tested)."""
    out = np.multiply(logits, np.float32(0.5), dtype=np.float32)
    np.tanh(out, out=out)
    out *= np.float32(0.5)
    out += np.float32(0.5)
    return out


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Half-open (top, bottom, left, right) of a 2-D bool mask's pixels; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[top:bottom].any(axis=0))
    return top, bottom, int(cols[0]), int(cols[-1]) + 1


@functools.lru_cache(maxsize=16)
def frame_map(letterbox: Letterbox, low_h: int, low_w: int) -> FrameMap:
    """The combined resize for a letterbox (cached: a camera keeps its frame size)."""
    return FrameMap(
        AxisMap.combine(low_h, letterbox.input_h, letterbox.resized_h, letterbox.height),
        AxisMap.combine(low_w, letterbox.input_w, letterbox.resized_w, letterbox.width))
