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

import numpy as np
import torch
import torch.nn.functional as F

from metaseg_ros.inference.mask_crops import (
    SUPPORT_MARGIN,
    CandidateMask,
    MaskPart,
    boxes_meet,
    candidate_mask,
    frame_map,
    single_threaded_blas,
    tight_box,
    union_box,
)
from metaseg_ros.inference.preprocess import Letterbox, masks_to_frame
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.results import BoundingBox, Detection, FrameDetections

# At most this many candidates per kept instance are upsampled to full resolution.
CANDIDATES_PER_INSTANCE = 2


def select_instances(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                     query_embeddings: torch.Tensor, letterbox: Letterbox,
                     settings: PostprocessSettings) -> FrameDetections:
    """Instances of one frame from (Q, C+1) class, (Q, h, w) mask logits, (Q, D) embeddings.

    The tensors may live on a GPU: masks are then upsampled and resolved there over whole
    frames, and only the kept instances come back to the CPU. On the CPU each candidate's
    mask is computed only inside the box where it can be (mask_crops.py), and overlaps are
    resolved only where boxes meet: the same instances, at a fraction of the cost.
    """
    select = _select_in_boxes if mask_logits.device.type == "cpu" else _select_full_frames
    return select(class_logits, mask_logits, query_embeddings, letterbox, settings)


def _select_full_frames(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                        query_embeddings: torch.Tensor, letterbox: Letterbox,
                        settings: PostprocessSettings) -> FrameDetections:
    """select_instances with every candidate upsampled over the whole frame (the GPU path:
    few large kernels suit a GPU better than many small ones)."""
    probabilities = class_logits.float().softmax(dim=-1)[:, :-1]
    class_score, class_id = probabilities.max(dim=-1)
    candidates = torch.argsort(class_score, descending=True)
    candidates = candidates[class_score[candidates] >= settings.score_threshold]
    candidates = candidates[: settings.max_instances * CANDIDATES_PER_INSTANCE]
    scored = _score_candidates(candidates, class_score, mask_logits, letterbox, settings)

    keep = torch.argsort(scored.score, descending=True)
    keep = keep[(scored.score[keep] >= settings.score_threshold) & (scored.area[keep] > 0)]
    keep = keep[: settings.max_instances]
    masks = scored.rows(scored.masks, keep)
    if settings.resolve_overlaps and len(keep) > 1:
        masks = _resolve_overlaps(masks, scored.rows(scored.inside_probability, keep),
                                  scored.score[keep])
        row_counts = _row_counts(masks)  # of the masks as resolved
        if settings.min_kept_fraction > 0.0:
            kept_area = row_counts.sum(dim=1, dtype=torch.int32)
            enough = kept_area >= settings.min_kept_fraction * scored.area[keep]
            masks, keep, row_counts = masks[enough], keep[enough], row_counts[enough]
    else:
        row_counts = scored.rows(scored.row_counts, keep)

    boxes = _tight_boxes(masks, row_counts).tolist()
    # One transfer per output from a GPU (no-ops on the CPU).
    selected = candidates[keep]
    queries, masks, scores = selected.cpu(), masks.cpu(), scored.score[keep].cpu()
    embeddings = query_embeddings[selected.to(query_embeddings.device)].float().cpu()
    class_probs, class_ids = probabilities[selected].cpu(), class_id[selected].cpu()
    detections = []
    for index, query in enumerate(queries.tolist()):
        x0, y0, x1, y1 = boxes[index]
        if x1 <= x0:  # an empty mask
            continue
        detections.append(Detection(
            class_id=int(class_ids[index]), score=float(scores[index]),
            mask=masks[index].numpy(), embedding=embeddings[index].numpy().copy(),
            class_probs=class_probs[index].numpy().copy(), query_index=int(query),
            bbox=BoundingBox(x0, y0, x1 - x0, y1 - y0)))
    return FrameDetections(height=letterbox.height, width=letterbox.width,
                           detections=tuple(detections))


@dataclass(frozen=True)
class _ScoredCandidates:
    """Candidates evaluated on the frame, in chunks of `chunk_size` (not concatenated: only
    the kept rows are ever copied).

    masks: binary masks; inside_probability: mask probability inside the mask, exactly 0
    outside; row_counts: pixels of each mask row; area (int32) and score per evaluated
    candidate, in candidate order.
    """

    chunk_size: int
    masks: list[torch.Tensor]
    inside_probability: list[torch.Tensor]
    row_counts: list[torch.Tensor]
    area: torch.Tensor
    score: torch.Tensor

    def rows(self, chunks: list[torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
        """The rows `indices` (into the evaluated candidates) of chunked tensors, stacked."""
        if len(chunks) == 1 or len(indices) == 0:
            return chunks[0][indices]
        return torch.stack([chunks[i // self.chunk_size][i % self.chunk_size]
                            for i in indices.tolist()])


def _score_candidates(candidates: torch.Tensor, class_score: torch.Tensor,
                      mask_logits: torch.Tensor, letterbox: Letterbox, settings: PostprocessSettings
                      ) -> _ScoredCandidates:
    """Masks and scores of the candidates (best class score first) on the frame.

    Score = class score x mean mask probability inside the binary mask, a mean in [0, 1]: once
    max_instances evaluated candidates score above the next candidate's class score, neither
    it nor any later one can be selected, and they are not upsampled (same result, less work).
    """
    logit_threshold = math.log(settings.mask_threshold / (1.0 - settings.mask_threshold))
    chunk_size = settings.max_instances
    masks, inside, row_counts, areas, scores = [], [], [], [], []
    device = mask_logits.device
    best = torch.zeros(0, device=device)
    evaluated = 0
    while evaluated < len(candidates):
        if len(best) >= settings.max_instances \
                and class_score[candidates[evaluated]] < best[settings.max_instances - 1]:
            break
        chunk = candidates[evaluated: evaluated + chunk_size]
        evaluated += len(chunk)
        logits = masks_to_frame(mask_logits[chunk].float(), letterbox)
        chunk_masks = logits > logit_threshold
        rows = _row_counts(chunk_masks)
        area = rows.sum(dim=1, dtype=torch.int32)
        # sigmoid(-inf) = 0: the probability inside the mask (same comparison), 0 outside.
        probability = F.threshold_(logits, logit_threshold, -math.inf).sigmoid_()
        score = class_score[chunk] * (probability.flatten(1).sum(dim=1) / (area + 1e-6))
        masks.append(chunk_masks)
        inside.append(probability)
        row_counts.append(rows)
        areas.append(area)
        scores.append(score)
        valid = score[(score >= settings.score_threshold) & (area > 0)]
        best = torch.cat([best, valid]).sort(descending=True).values
    if not masks:
        frame = (0, letterbox.height, letterbox.width)
        masks = [torch.zeros(frame, dtype=torch.bool, device=device)]
        inside = [torch.zeros(frame, device=device)]
        row_counts = [torch.zeros((0, letterbox.height), dtype=torch.int32, device=device)]
        areas = [torch.zeros(0, dtype=torch.int32, device=device)]
        scores = [torch.zeros(0, device=device)]
    return _ScoredCandidates(chunk_size, masks, inside, row_counts, torch.cat(areas),
                             torch.cat(scores))


def _row_counts(masks: torch.Tensor) -> torch.Tensor:
    """(K, H) pixels per row of (K, H, W) bool masks. Summed into int16 where rows are
    narrower than 32768 pixels: 3x faster on a CPU than an int32 sum (which this replaced as
    the way to count a mask's area)."""
    dtype = torch.int16 if masks.shape[-1] < 2**15 else torch.int32
    return masks.view(torch.uint8).sum(dim=-1, dtype=dtype)


def _tight_boxes(masks: torch.Tensor, row_counts: torch.Tensor) -> torch.Tensor:
    """(K, 4) int64 half-open boxes (x0, y0, x1, y1) of (K, H, W) bool masks whose
    `row_counts` (K, H) are known; x1 = x0 = 0 for an empty mask. One more reduction over
    the masks (their columns; ~10 us per 512x512 mask on one CPU core, all included), so
    that nothing downstream has to read a whole mask to find its object."""
    if len(masks) == 0:
        return torch.zeros((0, 4), dtype=torch.int64)
    rows = row_counts > 0
    cols = masks.view(torch.uint8).amax(dim=1) > 0  # (K, W)
    top, left = rows.int().argmax(dim=1), cols.int().argmax(dim=1)  # first occupied
    bottom = rows.shape[1] - rows.flip(1).int().argmax(dim=1)
    right = cols.shape[1] - cols.flip(1).int().argmax(dim=1)
    boxes = torch.stack([left, top, right, bottom], dim=1)
    return torch.where(rows.any(dim=1, keepdim=True), boxes, 0).cpu()


def _resolve_overlaps(masks: torch.Tensor, inside_probability: torch.Tensor,
                      score: torch.Tensor) -> torch.Tensor:
    """Each pixel to the instance with the highest score x pixel probability (the first one on
    ties, as an argmax over instances would).

    Claims are 0 outside an instance's mask and positive inside it (probability above the
    mask threshold, score > 0; -1 outside when a score is 0), so a pixel always goes to an
    instance whose mask holds it.
    A running maximum over instances does less work than an argmax across them.
    """
    claims = inside_probability * score[:, None, None]
    if not bool((score > 0).all()):  # a zero score (class probability underflow) claims 0
        claims = torch.where(masks, claims, -1.0)
    best = claims[0].clone()
    owner = torch.zeros_like(best)
    for index in range(1, len(claims)):
        better = (claims[index] > best).float()
        torch.maximum(best, claims[index], out=best)
        owner.mul_(1.0 - better).add_(better * index)
    instance = torch.arange(len(claims), dtype=owner.dtype, device=owner.device)[:, None, None]
    return masks & (owner[None] == instance)


# -- CPU: masks computed inside their boxes ---------------------------------------------------
# Small arrays, many calls: NumPy, whose calls cost a few microseconds less than PyTorch's.

@dataclass(frozen=True, eq=False)
class _Crop:
    """One candidate on the frame: its mask (mask_crops.CandidateMask: disjoint parts, each
    with its tight box, mask and mask probability) and its score."""

    query: int
    candidate: CandidateMask
    score: float


def _probability(logit: float) -> float:
    """sigmoid of one logit, without overflow at either end."""
    if logit >= 0.0:
        return 1.0 / (1.0 + math.exp(-logit))
    return math.exp(logit) / (1.0 + math.exp(logit))


def _peak_bound(peak: float) -> float:
    """An upper bound of every frame logit from the largest low-res one, with room for the
    rounding of the combined weights."""
    return peak + SUPPORT_MARGIN * (1.0 + abs(peak))


def _select_in_boxes(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                     query_embeddings: torch.Tensor, letterbox: Letterbox,
                     settings: PostprocessSettings) -> FrameDetections:
    """select_instances on the CPU, each mask computed inside its support box only."""
    probabilities = class_logits.float().softmax(dim=-1)[:, :-1]
    class_score, class_id = probabilities.max(dim=-1)
    order = torch.argsort(class_score, descending=True)
    order = order[class_score[order] >= settings.score_threshold]
    order = order[: settings.max_instances * CANDIDATES_PER_INSTANCE].tolist()
    threshold = math.log(settings.mask_threshold / (1.0 - settings.mask_threshold))
    with single_threaded_blas():
        crops = _score_crops(order, class_score.tolist(), mask_logits.float().numpy(),
                             letterbox, threshold, settings)
    kept = sorted((c for c in crops
                   if c.score >= settings.score_threshold and c.candidate.area > 0),
                  key=lambda c: -c.score)[: settings.max_instances]
    masks = [[part.mask for part in c.candidate.parts] for c in kept]
    if settings.resolve_overlaps and len(kept) > 1:
        masks = _resolve_overlaps_in_boxes(kept)
        if settings.min_kept_fraction > 0.0:
            enough = [sum(np.count_nonzero(m) for m in part_masks)
                      >= settings.min_kept_fraction * c.candidate.area
                      for c, part_masks in zip(kept, masks, strict=True)]
            kept = [c for c, ok in zip(kept, enough, strict=True) if ok]
            masks = [m for m, ok in zip(masks, enough, strict=True) if ok]
    class_ids, class_probs = class_id.tolist(), probabilities.numpy()
    embeddings = query_embeddings.float().numpy()
    detections = []
    for crop, part_masks in zip(kept, masks, strict=True):
        full = np.zeros((letterbox.height, letterbox.width), dtype=bool)
        boxes = []
        for part, mask in zip(crop.candidate.parts, part_masks, strict=True):
            # Each part's box is its mask's tight box; after overlaps took pixels, maybe less.
            tight = (0, mask.shape[0], 0, mask.shape[1]) if mask is part.mask \
                else tight_box(mask)
            if tight is None:
                continue
            y0, _, x0, _ = part.box
            box = (y0 + tight[0], y0 + tight[1], x0 + tight[2], x0 + tight[3])
            full[box[0]:box[1], box[2]:box[3]] = mask[tight[0]:tight[1], tight[2]:tight[3]]
            boxes.append(box)
        if not boxes:
            continue
        top, bottom, left, right = union_box(boxes)
        detections.append(Detection(
            class_id=class_ids[crop.query], score=crop.score, mask=full,
            embedding=embeddings[crop.query].copy(), class_probs=class_probs[crop.query].copy(),
            query_index=crop.query, bbox=BoundingBox(left, top, right - left, bottom - top)))
    return FrameDetections(height=letterbox.height, width=letterbox.width,
                           detections=tuple(detections))


def _score_crops(order: list[int], class_score: list[float], mask_logits: np.ndarray,
                 letterbox: Letterbox, threshold: float, settings: PostprocessSettings
                 ) -> list[_Crop]:
    """Masks and scores of the candidates (best class score first), stopping where no later
    candidate can be selected any more (as _score_candidates).

    A frame logit is a convex combination of low-res logits (mask_crops.py), so a
    candidate's mean mask probability is at most the sigmoid of its largest low-res logit:
    where class score x that bound is below the score threshold, the candidate cannot be
    kept and its mask is not computed.
    """
    frame = frame_map(letterbox, mask_logits.shape[-2], mask_logits.shape[-1])
    reachable = [query for query in order if class_score[query] * _probability(
        _peak_bound(float(mask_logits[query].max()))) >= settings.score_threshold]
    groups = frame.group_boxes(mask_logits[reachable], threshold) if reachable else []
    crops: list[_Crop] = []
    best: list[float] = []
    for query, query_groups in zip(reachable, groups, strict=True):
        if len(best) >= settings.max_instances \
                and class_score[query] < best[settings.max_instances - 1]:
            break
        found = candidate_mask(frame, mask_logits[query], threshold, query_groups)
        if found is None:
            continue
        score = class_score[query] * found.probability_sum / (found.area + 1e-6)
        crops.append(_Crop(query, found, score))
        if score >= settings.score_threshold:
            best = sorted([*best, score], reverse=True)
    return crops


def _resolve_overlaps_in_boxes(kept: list[_Crop]) -> list[list[np.ndarray]]:
    """Each pixel to the instance with the highest score x pixel probability, the first (in
    score order) on ties, as _resolve_overlaps; compared only where two masks' parts meet.
    Returns each instance's part masks (the parts' own arrays where nothing was taken).

    A pixel of instance i's mask claims score x probability >= 0 there; outside its mask an
    instance claims 0 (-1 in _resolve_overlaps when a score is 0), which never beats a claim
    inside a mask (the first on ties only between claims of masks that both hold the pixel:
    a claim of 0 inside a mask needs a score of 0, where _resolve_overlaps' -1 outside
    decides). So i loses exactly the pixels it shares with another mask whose claim is
    higher (or equal, for an earlier instance). An instance's parts are disjoint, so each
    shared pixel is compared once per pair of instances.
    """
    resolved = [[part.mask for part in c.candidate.parts] for c in kept]
    boxes = [c.candidate.box for c in kept]
    for i, mine in enumerate(kept):
        for j in range(i + 1, len(kept)):
            other = kept[j]
            if not boxes_meet(boxes[i], boxes[j]):
                continue
            for a, part in enumerate(mine.candidate.parts):
                for b, other_part in enumerate(other.candidate.parts):
                    taken = _compare_parts(part, np.float32(mine.score), other_part,
                                           np.float32(other.score))
                    if taken is None:
                        continue
                    (here, first_loses), (there, second_loses) = taken
                    for index, k, where, lost in ((i, a, here, first_loses),
                                                  (j, b, there, second_loses)):
                        if resolved[index][k] is kept[index].candidate.parts[k].mask:
                            resolved[index][k] = resolved[index][k].copy()
                        resolved[index][k][where] &= ~lost
    return resolved


def _compare_parts(mine: MaskPart, my_score: np.float32, other: MaskPart,
                   other_score: np.float32) -> tuple[tuple, tuple] | None:
    """Where two parts' masks share pixels: for each part, the window of its box and the
    shared pixels it loses there (the first keeps ties); None when they share none."""
    if not boxes_meet(mine.box, other.box):
        return None
    y0, _, x0, _ = mine.box
    oy0, _, ox0, _ = other.box
    top, bottom = max(y0, oy0), min(mine.box[1], other.box[1])
    left, right = max(x0, ox0), min(mine.box[3], other.box[3])
    here, there = np.s_[top - y0: bottom - y0, left - x0: right - x0], \
        np.s_[top - oy0: bottom - oy0, left - ox0: right - ox0]
    shared = mine.mask[here] & other.mask[there]
    if not shared.any():
        return None
    # score x probability on the two boxes' common window
    first_loses = mine.probability[here] * my_score < other.probability[there] * other_score
    first_loses &= shared
    shared ^= first_loses  # the shared pixels the first keeps: the second loses them
    return (here, first_loses), (there, shared)
