"""Turning one frame's network outputs into instances (Mask2Former's instance inference).

Per query: the most likely real class (no-object excluded) and its probability; masks
are upsampled to the source frame with the letterbox undone; the instance score is the
class probability times the mean mask probability inside the binary mask; instances
below the score threshold are dropped and the best `max_instances` kept. Unlike
Mask2Former's flattened top-k, each query yields at most one instance, so one object
never appears twice under two classes (which the tracker could not tell apart).
Optionally each pixel goes to at most one instance: the one with the highest
score x pixel probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metaseg_ros.inference.preprocess import Letterbox, masks_to_frame
from metaseg_ros.results import Detection, FrameDetections

# At most this many candidates per kept instance are upsampled to full resolution.
CANDIDATES_PER_INSTANCE = 2


@dataclass(frozen=True)
class PostprocessSettings:
    """Thresholds of instance selection."""

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    max_instances: int = 20
    resolve_overlaps: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}")
        if self.max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {self.max_instances}")


def select_instances(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                     query_embeddings: torch.Tensor, box: Letterbox,
                     settings: PostprocessSettings) -> FrameDetections:
    """Instances of one frame from (Q, C+1) class, (Q, h, w) mask logits, (Q, D) embeddings."""
    probabilities = class_logits.float().softmax(dim=-1)[:, :-1]
    class_score, class_id = probabilities.max(dim=-1)
    candidates = torch.argsort(class_score, descending=True)
    candidates = candidates[class_score[candidates] >= settings.score_threshold]
    candidates = candidates[: settings.max_instances * CANDIDATES_PER_INSTANCE]

    logits = masks_to_frame(mask_logits[candidates].float(), box)
    mask_probability = logits.sigmoid()
    masks = logits > math.log(settings.mask_threshold / (1.0 - settings.mask_threshold))
    area = masks.flatten(1).sum(dim=1)
    mask_score = (mask_probability * masks).flatten(1).sum(dim=1) / (area + 1e-6)
    score = class_score[candidates] * mask_score

    keep = torch.argsort(score, descending=True)
    keep = keep[(score[keep] >= settings.score_threshold) & (area[keep] > 0)]
    keep = keep[: settings.max_instances]
    masks, mask_probability = masks[keep], mask_probability[keep]
    if settings.resolve_overlaps and len(keep) > 1:
        claim = torch.where(masks, mask_probability * score[keep, None, None], -1.0)
        owner = claim.argmax(dim=0)
        masks = masks & (owner[None] == torch.arange(len(keep))[:, None, None])

    queries = candidates[keep]
    detections = []
    for index, query in enumerate(queries.tolist()):
        mask = masks[index].numpy()
        if not mask.any():
            continue
        detections.append(Detection(
            class_id=int(class_id[query]), score=float(score[keep[index]]), mask=mask,
            embedding=query_embeddings[query].float().numpy().copy(),
            class_probs=probabilities[query].numpy().copy(), query_index=int(query)))
    return FrameDetections(height=box.height, width=box.width, detections=tuple(detections))
