"""The last frame's mask features, kept and blended in where the frame is damaged
(memory.past_mask_features).

    mask_features' = mask_features + tanh(h) * valid * (past - mask_features)
    h = Conv3x3(ReLU(Conv1x1([mask_features, past])))   per pixel at stride 4

A mask is the product of a query with the frame's stride-4 mask features, so where a frame
lost rows, is blurred or dark, no read of the coarse stored maps (the decoder's memory
attention, model/pixel_memory.py) can redraw it (docs/benchmarks.md, "A read that can
replace"). This part keeps the mask features of the last frame (the blended ones, so a
run of damaged frames carries the last good one) at full mask resolution and lets each
pixel take them instead of its own. The gate sees both the current and the past features,
so it can tell a damaged pixel (they disagree, the current one looks blank) from a moved
object. Its last convolution starts at zero: exactly the model without it. With the
memory reset (slot 0 empty) the past is ignored.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CARRY_GATE_HIDDEN = 32  # hidden channels of the per-pixel gate


class MaskFeatureCarry(nn.Module):
    """Per-pixel gated blend of the current and the last frame's mask features."""

    def __init__(self, mask_dim: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Conv2d(2 * mask_dim, CARRY_GATE_HIDDEN, 1), nn.ReLU(),
            nn.Conv2d(CARRY_GATE_HIDDEN, 1, 3, padding=1))
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.zeros_(self.gate[-1].bias)

    def weight(self, current: Tensor, past: Tensor, past_valid: Tensor) -> Tensor:
        """How much of the past each pixel takes (B, 1, H/4, W/4); past_valid (B,) 0/1."""
        past = past.to(current.dtype)
        return torch.tanh(self.gate(torch.cat([current, past], dim=1))) * past_valid.to(
            current.dtype)[:, None, None, None]

    def forward(self, current: Tensor, past: Tensor, past_valid: Tensor) -> Tensor:
        """current, past (B, mask_dim, H/4, W/4) -> the blended mask features."""
        weight = self.weight(current, past, past_valid)
        return current + weight * (past.to(current.dtype) - current)
