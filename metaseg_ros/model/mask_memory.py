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

With memory.past_mask_motion the kept state also holds the flow from the last frame to the
one before (two channels after the features) and the kept features are first moved on by
it, constant velocity (model/mask_motion.py); cells nothing moved into take no past.

With memory.past_mask_frame_context the gate also sees the whole frame: the mean of its
hidden features over the frame, through a linear map (starting at zero: the gate without
it), is added to every pixel's hidden features. A 3x3 window at stride 4 cannot tell a
blurred or dark frame from a smooth region of a good one; the frame's mean can.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metaseg_ros.model.mask_motion import estimate_flow, splat

CARRY_GATE_HIDDEN = 32  # hidden channels of the per-pixel gate


class MaskFeatureCarry(nn.Module):
    """Per-pixel gated blend of the current and the last frame's mask features."""

    def __init__(self, mask_dim: int, motion: bool = False, frame_context: bool = False
                 ) -> None:
        super().__init__()
        self.mask_dim = mask_dim
        self.motion = motion
        self.gate = nn.Sequential(
            nn.Conv2d(2 * mask_dim, CARRY_GATE_HIDDEN, 1), nn.ReLU(),
            nn.Conv2d(CARRY_GATE_HIDDEN, 1, 3, padding=1))
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.zeros_(self.gate[-1].bias)
        self.frame_context = nn.Linear(
            CARRY_GATE_HIDDEN, CARRY_GATE_HIDDEN) if frame_context else None
        if self.frame_context is not None:
            nn.init.zeros_(self.frame_context.weight)
            nn.init.zeros_(self.frame_context.bias)

    def weight(self, current: Tensor, past: Tensor, past_valid: Tensor) -> Tensor:
        """How much of the past each pixel takes (B, 1, H/4, W/4); past_valid (B,) 0/1."""
        both = torch.cat([current, past.to(current.dtype)], dim=1)
        if self.frame_context is None:
            logits = self.gate(both)
        else:
            hidden = self.gate[0](both)
            context = self.frame_context(self.gate[1](hidden).mean(dim=(2, 3)))
            logits = self.gate[2](self.gate[1](hidden + context[:, :, None, None]))
        return torch.tanh(logits) * past_valid.to(current.dtype)[:, None, None, None]

    def forward(self, current: Tensor, kept: Tensor, past_valid: Tensor
                ) -> tuple[Tensor, Tensor]:
        """current (B, mask_dim, H/4, W/4), kept (the state: the last frame's features, with
        motion its flow after them) -> (the blended mask features, the state to keep)."""
        if not self.motion:
            weight = self.weight(current, kept, past_valid)
            blended = current + weight * (kept.to(current.dtype) - current)
            return blended, blended
        past, moved, coverage = self.moved_past(kept.to(current.dtype))
        weight = self.weight(current, moved, past_valid) * coverage
        blended = current + weight * (moved - current)
        valid = past_valid.to(current.dtype)[:, None, None, None]
        new_flow = estimate_flow(blended, past).to(current.dtype) * valid
        return blended, torch.cat([blended, new_flow], dim=1)

    def moved_past(self, kept: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """With motion, from the kept state: the last frame's features as kept, moved on by
        their flow (constant velocity), and the share of each cell the move covers."""
        past, flow = kept[:, :self.mask_dim], kept[:, self.mask_dim:]
        moved, coverage = splat(past, -flow)
        return past, moved, coverage
