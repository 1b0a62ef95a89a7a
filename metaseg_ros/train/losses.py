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
    # Class and mask terms of frames tagged as degraded (ClipBatch.frame_tags) are multiplied
    # by this; normalisers stay the same, so 1.0 is the plain loss.
    degraded_frame_weight: float = 1.0
    matcher: MatcherConfig = field(default_factory=MatcherConfig)


def class_weights(num_classes: int, no_object_weight: float,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(C+1,) weights: 1 for each class, no_object_weight for the last (no-object) index."""
    weights = torch.ones(num_classes + 1, device=device)
    weights[-1] = no_object_weight
    return weights


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                           weights: torch.Tensor, normaliser: float | None = None,
                           scale: torch.Tensor | None = None) -> torch.Tensor:
    """sum_m s_m w[y_m] (-log p_m) / normaliser for (M, C+1) logits and (M,) targets.

    normaliser defaults to sum_m w[y_m] (the weighted mean, F.cross_entropy's); the
    criterion passes the batch-wide sum so the loss does not depend on how a batch is
    split over processes. scale: optional (M,) factors s_m (default 1), not normalised.
    """
    log_p = logits.float().log_softmax(-1).gather(1, targets[:, None])[:, 0]
    w = weights[targets]
    loss = w * -log_p
    if scale is not None:
        loss = loss * scale
    return loss.sum() / (w.sum() if normaliser is None else normaliser)


def softmax_focal_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                       gamma: float, normaliser: float | None = None,
                       scale: torch.Tensor | None = None) -> torch.Tensor:
    """sum_m s_m w[y_m] (1 - p_m)^gamma (-log p_m) / normaliser (default sum_m w[y_m])."""
    log_p = logits.float().log_softmax(-1).gather(1, targets[:, None])[:, 0]
    w = weights[targets]
    loss = w * (1 - log_p.exp()).pow(gamma) * (-log_p)
    if scale is not None:
        loss = loss * scale
    return loss.sum() / (w.sum() if normaliser is None else normaliser)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float,
                       alpha: float = 0.25, gamma: float = 2.0,
                       scale: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss of (M, P) point logits vs targets in [0, 1]: mean over points, sum over
    masks (each times scale[m] if given), divided by num_masks. alpha < 0 disables the
    class balance term."""
    logits = logits.float()
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    per_mask = loss.mean(1)
    if scale is not None:
        per_mask = per_mask * scale
    return per_mask.sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """sum_m s_m (1 - (2 sum p t + 1) / (sum p + sum t + 1)) over (M, P) points, / num_masks
    (s_m = scale[m], default 1)."""
    probs = logits.float().sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    per_mask = 1 - (numerator + 1) / (denominator + 1)
    if scale is not None:
        per_mask = per_mask * scale
    return per_mask.sum() / num_masks


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


def global_mean_counts(counts: torch.Tensor) -> torch.Tensor:
    """Counts summed over processes and divided by their number.

    Dividing a process's summed loss by these makes DDP's gradient averaging give
    exactly the gradient of the loss over the global batch (as Mask2Former does for
    num_masks).
    """
    if dist.is_available() and dist.is_initialized():
        counts = counts.clone()
        dist.all_reduce(counts)
        counts = counts / dist.get_world_size()
    return counts


Match = tuple[torch.Tensor, torch.Tensor]


class VideoSetCriterion:
    """Matching + every loss over a batch of clips, frame by frame and layer by layer.

    All randomness (the matcher's and the importance sampling's points) of clip b comes
    from generators[b], and every normaliser is a batch-wide count, so the losses of a
    batch equal those of the same clips split over several processes.
    """

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
                 generators: Sequence[torch.Generator | None] | None = None,
                 frame_weights: Sequence[Sequence[float]] | None = None) -> LossTerms:
        """Losses of T frames of predictions of B clips (targets[b].masks: (T, N, H, W)).

        frame_weights[b][t] (optional) multiplies the class and mask terms of frame t of
        clip b (the normalisers and the association term are unchanged).
        """
        cfg = self.config
        device = frames[0].class_logits.device
        batch = len(targets)
        gens = list(generators) if generators is not None else [None] * batch
        if len(gens) != batch:
            raise ValueError(f"{len(gens)} generators for {batch} clips")
        frame_targets = [[clip.frame(t) for clip in targets] for t in range(len(frames))]
        layers = [self._layers(frame) for frame in frames]
        weights = class_weights(self.num_classes, cfg.no_object_weight, device)
        # 1. match every (frame, layer, clip), clip b's draws in a fixed order
        matches: list[list[list[Match]]] = [[[] for _ in layers[t]] for t in range(len(frames))]
        for b in range(batch):
            for t in range(len(frames)):
                masks, labels, _ = frame_targets[t][b]
                for k, (class_logits, mask_logits) in enumerate(layers[t]):
                    matches[t][k].append(hungarian_match(class_logits[b], mask_logits[b],
                                                         labels, masks, cfg.matcher, gens[b]))
        # 2. batch-wide normalisers: masks, association anchors, class weights per layer
        num_masks = sum(int(lab.numel()) for per_t in frame_targets for _, lab, _ in per_t)
        final_matches = [[(q, frame_targets[t][b][2][tgt]) for b, (q, tgt)
                          in enumerate(matches[t][-1])] for t in range(len(frames))]
        anchors = sum(_count_anchors([final_matches[t][b] for t in range(len(frames))])
                      for b in range(batch))
        class_targets = [[self._class_targets(layers[t][k][0], matches[t][k], frame_targets[t])
                          for k in range(len(layers[t]))] for t in range(len(frames))]
        weight_sums = [float(weights[target].sum()) for per_t in class_targets
                       for target in per_t]
        counts = global_mean_counts(torch.tensor([num_masks, anchors, *weight_sums],
                                                 dtype=torch.float64, device=device))
        num_masks_global, anchors_global = max(float(counts[0]), 1.0), max(float(counts[1]), 1.0)
        normalisers = iter(counts[2:].clamp(min=1e-12).tolist())
        # 3. losses
        zero = torch.zeros((), device=device)
        sums = {"class_ce": zero, "class_focal": zero, "mask_focal": zero, "dice": zero}
        for t in range(len(frames)):
            clip_scale = _frame_scale(frame_weights, t, batch, device)
            for k, (class_logits, mask_logits) in enumerate(layers[t]):
                normaliser = next(normalisers)
                flat_logits = class_logits.flatten(0, 1)
                flat_targets = class_targets[t][k].flatten()
                query_scale = (None if clip_scale is None else
                               clip_scale.repeat_interleave(class_logits.shape[1]))
                sums["class_ce"] = sums["class_ce"] + weighted_cross_entropy(
                    flat_logits, flat_targets, weights, normaliser, query_scale)
                sums["class_focal"] = sums["class_focal"] + softmax_focal_loss(
                    flat_logits, flat_targets, weights, cfg.focal_gamma, normaliser,
                    query_scale)
                focal, dice = self._mask_losses(mask_logits, matches[t][k], frame_targets[t],
                                                num_masks_global, gens, clip_scale)
                sums["mask_focal"] = sums["mask_focal"] + focal
                sums["dice"] = sums["dice"] + dice
        contrastive = zero
        if cfg.contrastive_weight > 0 and len(frames) > 1:
            for b in range(batch):
                embeddings = torch.stack([f.query_embeddings[b] for f in frames])
                clip_loss, _ = contrastive_association_loss(
                    embeddings, [final_matches[t][b] for t in range(len(frames))],
                    cfg.contrastive_temperature)
                contrastive = contrastive + clip_loss
            contrastive = cfg.contrastive_weight * contrastive / anchors_global
        weighted = {"class_ce": cfg.class_ce_weight * sums["class_ce"],
                    "class_focal": cfg.class_focal_weight * sums["class_focal"],
                    "mask_focal": cfg.mask_focal_weight * sums["mask_focal"],
                    "dice": cfg.dice_weight * sums["dice"]}
        total = sum(weighted.values(), contrastive)
        return LossTerms(total=total, contrastive=contrastive, num_masks=num_masks_global,
                         **weighted)

    def _class_targets(self, class_logits: torch.Tensor, matches: Sequence[Match],
                       frame_targets: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                       ) -> torch.Tensor:
        """(B, Q) target class per query: the matched instance's class, else no-object."""
        batch, num_queries = class_logits.shape[:2]
        target = torch.full((batch, num_queries), self.num_classes, dtype=torch.long,
                            device=class_logits.device)
        for b, (queries, target_index) in enumerate(matches):
            target[b, queries] = frame_targets[b][1][target_index]
        return target

    def _mask_losses(self, mask_logits: torch.Tensor, matches: Sequence[Match],
                     frame_targets: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                     num_masks: float, generators: Sequence[torch.Generator | None],
                     clip_scale: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        point_logits, point_labels, mask_scales = [], [], []
        for b, (queries, target_index) in enumerate(matches):
            if queries.numel() == 0:
                continue
            if clip_scale is not None:
                mask_scales.append(clip_scale[b].expand(queries.numel()))
            pred = mask_logits[b, queries][:, None].float()
            coords = uncertain_points(pred, cfg.num_points, cfg.oversample_ratio,
                                      cfg.importance_ratio, generators[b])
            point_logits.append(point_sample(pred, coords)[:, 0])
            with torch.no_grad():
                gt = frame_targets[b][0][target_index][:, None].float()
                point_labels.append(point_sample(gt, coords)[:, 0])
        if not point_logits:  # keep every parameter in the graph (DDP) with a zero term
            zero = mask_logits.sum() * 0.0
            return zero, zero
        logits, labels = torch.cat(point_logits), torch.cat(point_labels)
        scale = torch.cat(mask_scales) if mask_scales else None
        return (sigmoid_focal_loss(logits, labels, num_masks, cfg.mask_focal_alpha,
                                   cfg.focal_gamma, scale),
                dice_loss(logits, labels, num_masks, scale))


def _frame_scale(frame_weights: Sequence[Sequence[float]] | None, t: int, batch: int,
                 device: torch.device) -> torch.Tensor | None:
    """(B,) weights of frame t of each clip, or None when there are none or all are 1."""
    if frame_weights is None:
        return None
    if len(frame_weights) != batch:
        raise ValueError(f"{len(frame_weights)} frame weight rows for {batch} clips")
    values = [float(row[t]) for row in frame_weights]
    if all(v == 1.0 for v in values):
        return None
    return torch.tensor(values, dtype=torch.float32, device=device)


def frame_weights_from_tags(frame_tags: Sequence[Sequence[str]], num_frames: int,
                            degraded_weight: float) -> list[list[float]] | None:
    """Per clip and frame: degraded_weight where the frame's tag is not empty, else 1.

    None when the weight is 1 or no clip has tags (the plain loss)."""
    if degraded_weight == 1.0 or not any(frame_tags):
        return None
    return [[degraded_weight if t < len(tags) and tags[t] else 1.0 for t in range(num_frames)]
            for tags in frame_tags]


def _count_anchors(matches: Sequence[Match]) -> int:
    """Number of anchors contrastive_association_loss forms from one clip's matches."""
    count = 0
    for t, (_, ids_t) in enumerate(matches):
        for u, (_, ids_u) in enumerate(matches):
            if t != u:
                count += int((ids_t[:, None] == ids_u[None, :]).sum())
    return count
