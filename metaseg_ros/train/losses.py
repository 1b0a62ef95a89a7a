"""Training losses of MetaSegmenter: set losses per frame and layer, plus temporal association.

Per frame and per decoder layer (deep supervision), queries are matched to the frame's
instances (metaseg_ros.train.matcher), then:

- class: cross-entropy + softmax focal loss over C+1 classes, the no-object class
  down-weighted by no_object_weight (Mask2Former's eos_coef);
- masks: sigmoid focal + dice on points chosen by uncertainty-based importance
  sampling (Mask2Former), normalised by the number of ground-truth masks across the
  whole (distributed) batch;
- association (final layer only): a multi-positive contrastive loss between the
  L2-normalised query embeddings of the same instance in two frames of a clip
  (IDOL/CTVIS style): for an anchor v in frame t, its positive k+ (the query matched to
  the same instance in frame t') and all other queries k- of frame t',
  log(1 + sum_k- exp((v.k- - v.k+) / temperature)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

from metaseg_ros.data.clips import ClipTargets
from metaseg_ros.train.matcher import MatcherConfig, hungarian_match
from metaseg_ros.train.points import point_sample, uncertain_points


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and sampling settings (defaults follow Mask2Former where it has one)."""

    class_ce_weight: float = 2.0
    class_focal_weight: float = 2.0
    focal_gamma: float = 2.0
    no_object_weight: float = 0.1
    mask_focal_weight: float = 20.0
    mask_focal_alpha: float = 0.25
    dice_weight: float = 5.0
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_ratio: float = 0.75
    contrastive_weight: float = 1.0
    contrastive_temperature: float = 0.1
    deep_supervision: bool = True
    matcher: MatcherConfig = field(default_factory=MatcherConfig)


def class_weights(num_classes: int, no_object_weight: float,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(C+1,) weights: 1 for each class, no_object_weight for the last (no-object) index."""
    weights = torch.ones(num_classes + 1, device=device)
    weights[-1] = no_object_weight
    return weights


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                           weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (M, C+1) logits with (M,) targets, weighted mean over M."""
    return F.cross_entropy(logits.float(), targets, weight=weights)


def softmax_focal_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                       gamma: float) -> torch.Tensor:
    """sum_m w[y_m] (1 - p_m)^gamma (-log p_m) / sum_m w[y_m], p_m the softmax of y_m."""
    log_p = logits.float().log_softmax(-1).gather(1, targets[:, None])[:, 0]
    w = weights[targets]
    loss = w * (1 - log_p.exp()).pow(gamma) * (-log_p)
    return loss.sum() / w.sum()


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float,
                       alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss of (M, P) point logits vs targets in [0, 1]: mean over points, sum over
    masks, divided by num_masks. alpha < 0 disables the class balance term."""
    logits = logits.float()
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """sum_m 1 - (2 sum p t + 1) / (sum p + sum t + 1) over (M, P) points, / num_masks."""
    probs = logits.float().sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def contrastive_association_loss(embeddings: torch.Tensor,
                                 matches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                                 temperature: float) -> tuple[torch.Tensor, int]:
    """Summed association loss of one clip and its number of anchors.

    embeddings (T, Q, D); matches[t] = (query indices, instance ids) of frame t. Every
    ordered pair of frames (t, t') and every instance matched in both gives one anchor.
    """
    normalised = F.normalize(embeddings.float(), dim=-1)
    total = normalised.new_zeros(())
    anchors = 0
    for t, (queries_t, ids_t) in enumerate(matches):
        for u, (queries_u, ids_u) in enumerate(matches):
            if t == u or queries_t.numel() == 0 or queries_u.numel() == 0:
                continue
            same = ids_t[:, None] == ids_u[None, :]             # (n_t, n_u)
            anchor_rows, key_rows = same.nonzero(as_tuple=True)
            if anchor_rows.numel() == 0:
                continue
            anchor = normalised[t, queries_t[anchor_rows]]         # (A, D)
            keys = normalised[u]                                   # (Q, D)
            sims = anchor @ keys.T / temperature                   # (A, Q)
            positive_query = queries_u[key_rows]
            positive = sims.gather(1, positive_query[:, None])     # (A, 1)
            negative_mask = torch.ones_like(sims, dtype=torch.bool)
            negative_mask[torch.arange(len(positive_query)), positive_query] = False
            differences = (sims - positive).masked_fill(~negative_mask, float("-inf"))
            # log(1 + sum exp(d)) = logsumexp over [0, d...]
            padded = torch.cat([differences.new_zeros(len(positive_query), 1), differences], 1)
            total = total + torch.logsumexp(padded, dim=1).sum()
            anchors += int(anchor_rows.numel())
    return total, anchors


@dataclass(frozen=True, eq=False)
class FramePrediction:
    """The model's outputs for one frame of a batch of clips.

    class_logits (B, Q, C+1), mask_logits (B, Q, h, w), query_embeddings (B, Q, D);
    aux_outputs: (class_logits, mask_logits) of the earlier decoder layers, for deep
    supervision (the final output is added if it is not already the last entry).
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    query_embeddings: torch.Tensor
    aux_outputs: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()


@dataclass(frozen=True, eq=False)
class LossTerms:
    """Weighted loss terms summed over frames and layers; total is their sum."""

    total: torch.Tensor
    class_ce: torch.Tensor
    class_focal: torch.Tensor
    mask_focal: torch.Tensor
    dice: torch.Tensor
    contrastive: torch.Tensor
    num_masks: float

    def as_floats(self) -> dict[str, float]:
        """Plain floats of every term, for logging."""
        names = ("total", "class_ce", "class_focal", "mask_focal", "dice", "contrastive")
        return {name: float(getattr(self, name).detach()) for name in names}


def _global_count(count: float, device: torch.device) -> float:
    """Count summed over processes and divided by their number (so that DDP's gradient
    averaging gives the gradient of the loss over the global batch); at least 1."""
    if dist.is_available() and dist.is_initialized():
        value = torch.tensor([float(count)], device=device)
        dist.all_reduce(value)
        count = float(value.item()) / dist.get_world_size()
    return max(count, 1.0)


class VideoSetCriterion:
    """Matching + every loss over a batch of clips, frame by frame and layer by layer."""

    def __init__(self, num_classes: int, config: LossConfig | None = None) -> None:
        self.num_classes = int(num_classes)
        self.config = config or LossConfig()

    def _layers(self, frame: FramePrediction) -> list[tuple[torch.Tensor, torch.Tensor]]:
        final = (frame.class_logits, frame.mask_logits)
        if not self.config.deep_supervision:
            return [final]
        layers = list(frame.aux_outputs)
        if not layers or layers[-1][0] is not final[0]:
            layers.append(final)
        return layers

    def __call__(self, frames: Sequence[FramePrediction], targets: Sequence[ClipTargets],
                 generator: torch.Generator | None = None) -> LossTerms:
        """Losses of T frames of predictions of B clips (targets[b].masks: (T, N, H, W))."""
        cfg = self.config
        device = frames[0].class_logits.device
        frame_targets = [[clip.frame(t) for clip in targets] for t in range(len(frames))]
        num_masks = _global_count(sum(int(lab.numel()) for per_t in frame_targets
                                      for _, lab, _ in per_t), device)
        weights = class_weights(self.num_classes, cfg.no_object_weight, device)
        zero = torch.zeros((), device=device)
        sums = {"class_ce": zero, "class_focal": zero, "mask_focal": zero, "dice": zero}
        final_matches: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        for t, frame in enumerate(frames):
            layers = self._layers(frame)
            for layer_index, (class_logits, mask_logits) in enumerate(layers):
                matches = [hungarian_match(class_logits[b], mask_logits[b], lab, masks,
                                           cfg.matcher, generator)
                           for b, (masks, lab, _) in enumerate(frame_targets[t])]
                terms = self._frame_losses(class_logits, mask_logits, frame_targets[t],
                                           matches, weights, num_masks, generator)
                for name, value in terms.items():
                    sums[name] = sums[name] + value
                if layer_index == len(layers) - 1:
                    final_matches.append([(q, frame_targets[t][b][2][tgt])
                                          for b, (q, tgt) in enumerate(matches)])
        contrastive = zero
        if cfg.contrastive_weight > 0 and len(frames) > 1:
            total, anchors = zero, 0
            for b in range(len(targets)):
                embeddings = torch.stack([f.query_embeddings[b] for f in frames])
                clip_loss, clip_anchors = contrastive_association_loss(
                    embeddings, [final_matches[t][b] for t in range(len(frames))],
                    cfg.contrastive_temperature)
                total, anchors = total + clip_loss, anchors + clip_anchors
            contrastive = cfg.contrastive_weight * total / _global_count(anchors, device)
        weighted = {"class_ce": cfg.class_ce_weight * sums["class_ce"],
                    "class_focal": cfg.class_focal_weight * sums["class_focal"],
                    "mask_focal": cfg.mask_focal_weight * sums["mask_focal"],
                    "dice": cfg.dice_weight * sums["dice"]}
        total = sum(weighted.values(), contrastive)
        return LossTerms(total=total, contrastive=contrastive, num_masks=num_masks, **weighted)

    def _frame_losses(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
                      frame_targets: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                      matches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                      weights: torch.Tensor, num_masks: float,
                      generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        cfg = self.config
        batch, num_queries = class_logits.shape[:2]
        target_classes = torch.full((batch, num_queries), self.num_classes, dtype=torch.long,
                                    device=class_logits.device)
        pred_masks, gt_masks = [], []
        for b, (queries, target_index) in enumerate(matches):
            masks, labels, _ = frame_targets[b]
            target_classes[b, queries] = labels[target_index]
            pred_masks.append(mask_logits[b, queries])
            gt_masks.append(masks[target_index])
        flat_logits = class_logits.flatten(0, 1)
        flat_targets = target_classes.flatten()
        out = {"class_ce": weighted_cross_entropy(flat_logits, flat_targets, weights),
               "class_focal": softmax_focal_loss(flat_logits, flat_targets, weights,
                                                 cfg.focal_gamma)}
        pred = torch.cat(pred_masks)
        if pred.shape[0] == 0:  # keep every parameter in the graph (DDP) with a zero term
            out["mask_focal"] = out["dice"] = mask_logits.sum() * 0.0
            return out
        gt = torch.cat(gt_masks).float()
        coords = uncertain_points(pred[:, None], cfg.num_points, cfg.oversample_ratio,
                                  cfg.importance_ratio, generator)
        point_logits = point_sample(pred[:, None].float(), coords)[:, 0]
        with torch.no_grad():
            point_labels = point_sample(gt[:, None], coords)[:, 0]
        out["mask_focal"] = sigmoid_focal_loss(point_logits, point_labels, num_masks,
                                               cfg.mask_focal_alpha, cfg.focal_gamma)
        out["dice"] = dice_loss(point_logits, point_labels, num_masks)
        return out
