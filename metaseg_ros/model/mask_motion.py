"""Motion for the kept mask features (memory.past_mask_motion): no parameters.

The carry (model/mask_memory.py) blends the last frame's mask features into the current
ones; where an object moved, the last frame's features sit where the object was, so an open
gate misplaces its mask. With motion, each step also measures how the frame moved against
the last one (`estimate_flow`: a local correlation of the two frames' mask features) and
keeps that flow beside the features. The next step moves the kept features on by it
(`splat`: constant velocity, each cell forward to where its content goes) before the blend.
The flow comes from two frames that were both seen, so it does not depend on the frame
being damaged; cells that nothing moved into (the ground an object uncovered) are marked
uncovered and take no past.

Flows are in cells of the stride-4 map, (x, y) in channels (0, 1). `estimate_flow` gives
the backward flow: the content at cell p came from p + flow(p) in the last frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FLOW_RADIUS = 3  # the correlation window, in cells of the stride-8 map (+-24 image pixels)
FLOW_TEMPERATURE = 0.002  # softmax temperature over cosine similarities (docs/benchmarks.md)
FLOW_PRIOR = 0.003  # subtracted from a match's similarity per squared cell: ties go to rest
FLOW_SMOOTHING = 3  # the flow is averaged over this many stride-8 cells, weighted by sureness
SPLAT_SHARPNESS = 1.0  # moving content covers static content where both land: exp(k |flow|)


def estimate_flow(current: Tensor, past: Tensor) -> Tensor:
    """Backward flow (B, 2, H, W) from current to past mask features (B, C, H, W), in cells.

    Correlation of L2-normalised features at half the resolution within +-FLOW_RADIUS
    cells, less a small cost per squared step (in a uniform region, where every step
    matches as well, the flow is 0, not the mean step), a soft arg-max per cell, smoothed
    where the matches are sure. No gradients.
    """
    with torch.no_grad():
        current = F.normalize(F.avg_pool2d(current.float(), 2), dim=1)
        past = F.normalize(F.avg_pool2d(past.float(), 2), dim=1)
        height, width = current.shape[-2:]
        radius = FLOW_RADIUS
        padded = F.pad(past, (radius, radius, radius, radius))
        scores = []
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                window = padded[:, :, radius + dy:radius + dy + height,
                                radius + dx:radius + dx + width]
                scores.append((current * window).sum(dim=1))
        similarity = torch.stack(scores, dim=1)
        # (dx, dy) of each score, in the loop's order; made on the device (no host copy,
        # so CUDA-graph capture works)
        offsets = torch.arange(-radius, radius + 1, device=similarity.device,
                               dtype=similarity.dtype)
        steps = torch.stack([offsets.repeat(2 * radius + 1),
                             offsets.repeat_interleave(2 * radius + 1)], dim=1)
        cost = FLOW_PRIOR * steps.square().sum(dim=1)[None, :, None, None]
        probabilities = torch.softmax((similarity - cost) / FLOW_TEMPERATURE, dim=1)
        flow = torch.einsum("bkhw,kc->bchw", probabilities, steps)
        # sure where one step matches better than the others (a corner, an edge), without
        # the cost: a uniform region takes the flow of the edges around it
        sureness = torch.softmax(similarity / FLOW_TEMPERATURE, dim=1).amax(dim=1, keepdim=True)
        if FLOW_SMOOTHING > 1:
            size, pad = FLOW_SMOOTHING, FLOW_SMOOTHING // 2
            flow = (F.avg_pool2d(flow * sureness, size, stride=1, padding=pad)
                    / F.avg_pool2d(sureness, size, stride=1, padding=pad).clamp_min(1e-6))
        return 2.0 * F.interpolate(flow, scale_factor=2.0, mode="bilinear",
                                   align_corners=False)


def splat(values: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """Move each cell of values (B, C, H, W) by flow (B, 2, H, W) (forward, in cells).

    Bilinear forward splatting; where several cells land on one, the moving ones count
    more (exp(SPLAT_SHARPNESS |flow|)). Returns the moved values and the coverage (B, 1,
    H, W) in 0..1 (0 where nothing landed; those cells' values are 0).
    """
    batch, channels, height, width = values.shape
    ys = torch.arange(height, device=values.device, dtype=flow.dtype)[:, None]
    xs = torch.arange(width, device=values.device, dtype=flow.dtype)[None, :]
    target_x, target_y = xs + flow[:, 0], ys + flow[:, 1]
    left, top = torch.floor(target_x), torch.floor(target_y)
    importance = torch.exp(SPLAT_SHARPNESS * flow.norm(dim=1).clamp(max=8.0))
    moved = values.new_zeros(batch, channels, height * width)
    weights = values.new_zeros(batch, 1, height * width)
    landed = values.new_zeros(batch, 1, height * width)
    for corner_x, corner_y in ((0, 0), (1, 0), (0, 1), (1, 1)):
        cell_x, cell_y = left + corner_x, top + corner_y
        share = (1.0 - (target_x - cell_x).abs()) * (1.0 - (target_y - cell_y).abs())
        inside = (cell_x >= 0) & (cell_x < width) & (cell_y >= 0) & (cell_y < height)
        share = (share * inside.to(share.dtype)).to(values.dtype)
        weight = share * importance.to(values.dtype)
        index = (cell_y.clamp(0, height - 1) * width + cell_x.clamp(0, width - 1)).long()
        index = index.reshape(batch, 1, height * width)
        moved = moved.scatter_add(2, index.expand(-1, channels, -1),
                                  (values * weight[:, None]).reshape(batch, channels, -1))
        weights = weights.scatter_add(2, index, weight.reshape(batch, 1, -1))
        landed = landed.scatter_add(2, index, share.reshape(batch, 1, -1))
    moved = moved / weights.clamp_min(1e-6)
    coverage = landed.clamp(0.0, 1.0)
    return (moved.reshape(batch, channels, height, width),
            coverage.reshape(batch, 1, height, width))
