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
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from metaseg_ros.inference.preprocess import Letterbox

# A cell counts as possibly inside when its logit is within this of the threshold, so that
# rounding in the combined weights cannot lose a pixel at the mask's edge.
SUPPORT_MARGIN = 1e-4


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
    """One axis of the combined resize: weights (out, in) float32, and for each output the
    first and last input it reads, for each input the first and last output reading it."""

    weights: torch.Tensor
    first_input: np.ndarray
    last_input: np.ndarray
    first_output: np.ndarray
    last_output: np.ndarray

    @classmethod
    def combine(cls, low: int, network: int, resized: int, frame: int) -> AxisMap:
        """low -> network input (bilinear), crop to `resized`, resized -> frame (bilinear)."""
        weights = bilinear_weights(low, network)[:resized]
        if resized != frame:
            weights = bilinear_weights(resized, frame) @ weights
        nonzero = weights > 0
        reached = nonzero.any(axis=0)  # low-res cells in the padding reach no frame pixel
        return cls(torch.from_numpy(weights.astype(np.float32)),
                   nonzero.argmax(axis=1), low - 1 - nonzero[:, ::-1].argmax(axis=1),
                   np.where(reached, nonzero.argmax(axis=0), frame),
                   np.where(reached, frame - 1 - nonzero[::-1].argmax(axis=0), -1))


@dataclass(frozen=True, eq=False)
class FrameMap:
    """The combined resize of both axes for one letterbox and one low-res grid."""

    rows: AxisMap
    cols: AxisMap

    def support_box(self, logits: np.ndarray, threshold: float
                    ) -> tuple[int, int, int, int] | None:
        """Half-open frame box (y0, y1, x0, x1) holding every pixel that can exceed
        `threshold`, from (h, w) low-res logits; None when none can."""
        possible = logits > threshold - SUPPORT_MARGIN
        rows = np.flatnonzero(possible.any(axis=1))
        if len(rows) == 0:
            return None
        cols = np.flatnonzero(possible.any(axis=0))
        y0, y1 = self.rows.first_output[rows].min(), self.rows.last_output[rows].max() + 1
        x0, x1 = self.cols.first_output[cols].min(), self.cols.last_output[cols].max() + 1
        if y1 <= y0 or x1 <= x0:  # only padding cells
            return None
        return int(y0), int(y1), int(x0), int(x1)

    def crop(self, logits: np.ndarray, box: tuple[int, int, int, int]) -> torch.Tensor:
        """Frame logits (float32) inside `box` from (h, w) low-res logits, reading only the
        cells the box needs (two small matrix products, in PyTorch's threads)."""
        y0, y1, x0, x1 = box
        r0, r1 = int(self.rows.first_input[y0]), int(self.rows.last_input[y1 - 1]) + 1
        c0, c1 = int(self.cols.first_input[x0]), int(self.cols.last_input[x1 - 1]) + 1
        cells = torch.from_numpy(logits[r0:r1, c0:c1])
        rows, cols = self.rows.weights[y0:y1, r0:r1], self.cols.weights[x0:x1, c0:c1]
        # The larger product reads the low-res side it is taken over: the smaller one first.
        if r1 - r0 <= c1 - c0:
            return rows @ (cells @ cols.T)
        return (rows @ cells) @ cols.T


@functools.lru_cache(maxsize=16)
def frame_map(letterbox: Letterbox, low_h: int, low_w: int) -> FrameMap:
    """The combined resize for a letterbox (cached: a camera keeps its frame size)."""
    return FrameMap(
        AxisMap.combine(low_h, letterbox.input_h, letterbox.resized_h, letterbox.height),
        AxisMap.combine(low_w, letterbox.input_w, letterbox.resized_w, letterbox.width))
