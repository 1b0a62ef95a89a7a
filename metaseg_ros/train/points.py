"""Point sampling on mask logits, as Mask2Former trains: losses on P points, not on pixels.

Coordinates are (x, y) in [0, 1] over the whole image, so masks of different
resolutions (predictions at H/4, targets at H) are sampled at the same places.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of (N, C, H, W) inputs at (N, P, 2) coords in [0, 1] -> (N, C, P).

    Pixel centres sit at (i + 0.5) / size (grid_sample with align_corners=False);
    outside the image the input counts as 0.
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # (N, P, 1, 2)
    return F.grid_sample(inputs, grid.to(inputs.dtype), mode="bilinear",
                         padding_mode="zeros", align_corners=False).squeeze(3)


def random_points(count: int, num_points: int, device: torch.device | str,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(count, num_points, 2) uniform coordinates in [0, 1)."""
    return torch.rand(count, num_points, 2, device=device, generator=generator)


def uncertain_points(mask_logits: torch.Tensor, num_points: int, oversample_ratio: float,
                     importance_ratio: float, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """Mask2Former's importance sampling on (N, 1, H, W) logits -> (N, num_points, 2).

    Draw oversample_ratio * num_points uniform points, keep the importance_ratio share
    whose logits are nearest 0 (most uncertain), fill the rest with new uniform points.
    """
    if oversample_ratio < 1 or not 0 <= importance_ratio <= 1:
        raise ValueError("need oversample_ratio >= 1 and 0 <= importance_ratio <= 1")
    count = mask_logits.shape[0]
    device = mask_logits.device
    num_sampled = int(num_points * oversample_ratio)
    candidates = random_points(count, num_sampled, device, generator)
    uncertainty = -point_sample(mask_logits.detach().float(), candidates)[:, 0].abs()
    num_uncertain = int(importance_ratio * num_points)
    chosen = uncertainty.topk(num_uncertain, dim=1).indices
    picked = torch.gather(candidates, 1, chosen.unsqueeze(-1).expand(-1, -1, 2))
    extra = random_points(count, num_points - num_uncertain, device, generator)
    return torch.cat([picked, extra], dim=1)
