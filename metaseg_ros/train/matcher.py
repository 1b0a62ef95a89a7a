"""Hungarian matching of predicted queries to ground-truth instances (Mask2Former style).

Cost per (query, instance): class_weight * (-p(class)) + mask_weight * mean sigmoid
cross-entropy + dice_weight * dice cost, the mask terms on the same uniformly sampled
points for every query and instance. Solved with scipy's linear_sum_assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from metaseg_ros.train.points import point_sample, random_points


@dataclass(frozen=True)
class MatcherConfig:
    """Weights of the matching cost terms and the number of sampled points."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    num_points: int = 12544


def pairwise_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, P) logits vs (N, P) {0,1} targets -> (Q, N) mean binary cross-entropy."""
    positive = F.softplus(-logits)  # -log sigmoid(x)
    negative = F.softplus(logits)   # -log (1 - sigmoid(x))
    return (positive @ targets.T + negative @ (1 - targets).T) / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, P) logits vs (N, P) targets -> (Q, N) dice cost 1 - (2|X∩Y| + 1)/(|X| + |Y| + 1)."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def matching_cost(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
                  target_masks: torch.Tensor, config: MatcherConfig,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(Q, N) cost of assigning each of Q queries to each of N instances of one frame.

    class_logits (Q, C+1), mask_logits (Q, h, w), labels (N,), target_masks (N, H, W).
    """
    probs = class_logits.float().softmax(-1)
    cost_class = -probs[:, labels]
    coords = random_points(1, config.num_points, mask_logits.device, generator)
    pred = point_sample(mask_logits[None].float(), coords)[0]                 # (Q, P)
    target = point_sample(target_masks[None].float(), coords)[0]              # (N, P)
    cost = (config.class_weight * cost_class
            + config.mask_weight * pairwise_sigmoid_ce(pred, target)
            + config.dice_weight * pairwise_dice(pred, target))
    return cost


def assign(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of a (Q, N) cost -> (query indices, target indices),
    sorted by query index; every target is assigned when N <= Q."""
    matrix = cost.detach().float().cpu().numpy()
    if not np.isfinite(matrix).all():
        raise FloatingPointError("matching cost holds NaN or Inf (diverged predictions?)")
    rows, cols = linear_sum_assignment(matrix)
    device = cost.device
    return (torch.as_tensor(rows, dtype=torch.long, device=device),
            torch.as_tensor(cols, dtype=torch.long, device=device))


def hungarian_match(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
                    target_masks: torch.Tensor, config: MatcherConfig,
                    generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Match the queries of one frame to its instances; empty tensors when there are none."""
    if labels.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=class_logits.device)
        return empty, empty
    cost = matching_cost(class_logits, mask_logits, labels, target_masks, config, generator)
    return assign(cost)
