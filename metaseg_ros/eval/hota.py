"""HOTA (Luiten et al., IJCV 2021) with its DetA / AssA decomposition.

Written here to the definition TrackEval implements (trackeval/metrics/hota.py): it works on
our per-frame objects and mask IoU directly, where TrackEval needs its dataset classes and
files (the original release also fails on numpy 2; PyPI's trackeval 1.3 runs, and the tests
compare the two alpha by alpha). For one sequence:

1. Global alignment: for every (gt id, predicted id) pair, sum over frames the per-frame
   normalised similarity S_ij / (sum_j S_ij + sum_i S_ij - S_ij); divide by
   (frames with the gt id + frames with the predicted id - that sum).
2. Per frame, the Hungarian algorithm matches gt and predictions maximising
   alignment * similarity; one matching per frame serves every alpha.
3. For each alpha in 0.05, 0.10, ..., 0.95 the matches with similarity >= alpha are true
   positives (TP); FN = gt - TP, FP = predictions - TP;
   DetA = TP / (TP + FN + FP); per matched id pair, A = TPA / (gt id frames + predicted id
   frames - TPA), AssA = sum over TPs of A / TP; HOTA = sqrt(DetA * AssA); LocA = mean
   similarity of the TPs. The reported values are the means over the 19 alphas.

Empty cases follow TrackEval: no predictions or no ground truth gives all scores 0 (LocA 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.eval.similarity import SimilarityKind, frame_iou

ALPHAS = np.arange(0.05, 0.99, 0.05)  # 0.05, 0.10, ..., 0.95 as TrackEval builds them
_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True, eq=False)
class HotaMetrics:
    """HOTA and its parts, per alpha (arrays of len(ALPHAS)) with means as properties."""

    tp: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    assa_alpha: np.ndarray
    assre_alpha: np.ndarray
    asspr_alpha: np.ndarray
    loca_alpha: np.ndarray

    @property
    def deta_alpha(self) -> np.ndarray:
        """Detection accuracy TP / (TP + FN + FP) per alpha."""
        return self.tp / np.maximum(1.0, self.tp + self.fn + self.fp)

    @property
    def detre_alpha(self) -> np.ndarray:
        """Detection recall per alpha."""
        return self.tp / np.maximum(1.0, self.tp + self.fn)

    @property
    def detpr_alpha(self) -> np.ndarray:
        """Detection precision per alpha."""
        return self.tp / np.maximum(1.0, self.tp + self.fp)

    @property
    def hota_alpha(self) -> np.ndarray:
        """sqrt(DetA * AssA) per alpha."""
        return np.sqrt(self.deta_alpha * self.assa_alpha)

    @property
    def hota(self) -> float:
        """HOTA averaged over alphas."""
        return float(self.hota_alpha.mean())

    @property
    def deta(self) -> float:
        """DetA averaged over alphas."""
        return float(self.deta_alpha.mean())

    @property
    def assa(self) -> float:
        """AssA averaged over alphas."""
        return float(self.assa_alpha.mean())

    @property
    def detre(self) -> float:
        """DetRe averaged over alphas."""
        return float(self.detre_alpha.mean())

    @property
    def detpr(self) -> float:
        """DetPr averaged over alphas."""
        return float(self.detpr_alpha.mean())

    @property
    def assre(self) -> float:
        """AssRe averaged over alphas."""
        return float(self.assre_alpha.mean())

    @property
    def asspr(self) -> float:
        """AssPr averaged over alphas."""
        return float(self.asspr_alpha.mean())

    @property
    def loca(self) -> float:
        """LocA averaged over alphas."""
        return float(self.loca_alpha.mean())


def _dense_ids(frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Map arbitrary ids to 0..n-1 (sorted), frame by frame."""
    all_ids = np.unique(np.concatenate([np.asarray(f, dtype=np.int64) for f in frames]
                                       + [np.zeros(0, dtype=np.int64)]))
    return [np.searchsorted(all_ids, np.asarray(f, dtype=np.int64)) for f in frames], all_ids.size


def hota_from_similarities(gt_ids: Sequence[np.ndarray], pred_ids: Sequence[np.ndarray],
                           similarities: Sequence[np.ndarray]) -> HotaMetrics:
    """HOTA of one sequence from per-frame ids and (gt, pred) similarity matrices in [0, 1]."""
    if not len(gt_ids) == len(pred_ids) == len(similarities):
        raise ValueError("gt_ids, pred_ids and similarities need one entry per frame")
    gt_frames, num_gt = _dense_ids(gt_ids)
    pred_frames, num_pred = _dense_ids(pred_ids)
    sims = [np.asarray(s, dtype=np.float64).reshape(len(g), len(p))
            for s, g, p in zip(similarities, gt_frames, pred_frames, strict=True)]
    num_alphas = ALPHAS.size
    total_gt = sum(len(g) for g in gt_frames)
    total_pred = sum(len(p) for p in pred_frames)
    zeros = np.zeros(num_alphas)
    if total_pred == 0 or total_gt == 0:
        return HotaMetrics(tp=zeros, fn=np.full(num_alphas, float(total_gt)),
                           fp=np.full(num_alphas, float(total_pred)), assa_alpha=zeros,
                           assre_alpha=zeros, asspr_alpha=zeros, loca_alpha=np.ones(num_alphas))

    potential = np.zeros((num_gt, num_pred))
    gt_count = np.zeros(num_gt)
    pred_count = np.zeros(num_pred)
    for g, p, s in zip(gt_frames, pred_frames, sims, strict=True):
        denominator = s.sum(axis=0)[None, :] + s.sum(axis=1)[:, None] - s
        normalised = np.divide(s, denominator, out=np.zeros_like(s), where=denominator > _EPS)
        potential[g[:, None], p[None, :]] += normalised
        gt_count[g] += 1
        pred_count[p] += 1
    alignment = potential / (gt_count[:, None] + pred_count[None, :] - potential)

    tp = np.zeros(num_alphas)
    loc_sum = np.zeros(num_alphas)
    matches = np.zeros((num_alphas, num_gt, num_pred))
    for g, p, s in zip(gt_frames, pred_frames, sims, strict=True):
        if not len(g) or not len(p):
            continue
        rows, cols = linear_sum_assignment(-(alignment[g[:, None], p[None, :]] * s))
        matched_sim = s[rows, cols]
        for a, alpha in enumerate(ALPHAS):
            keep = matched_sim >= alpha - _EPS
            tp[a] += keep.sum()
            loc_sum[a] += matched_sim[keep].sum()
            matches[a, g[rows[keep]], p[cols[keep]]] += 1
    fn = total_gt - tp
    fp = total_pred - tp

    union = gt_count[None, :, None] + pred_count[None, None, :] - matches
    per_pair = matches / np.maximum(1.0, union)
    denominator = np.maximum(1.0, tp)
    assa = (matches * per_pair).sum(axis=(1, 2)) / denominator
    assre = (matches * (matches / np.maximum(1.0, gt_count[None, :, None]))).sum(
        axis=(1, 2)) / denominator
    asspr = (matches * (matches / np.maximum(1.0, pred_count[None, None, :]))).sum(
        axis=(1, 2)) / denominator
    loca = np.maximum(1e-10, loc_sum) / np.maximum(1e-10, tp)
    return HotaMetrics(tp=tp, fn=fn, fp=fp, assa_alpha=assa, assre_alpha=assre,
                       asspr_alpha=asspr, loca_alpha=loca)


def hota_metrics(gt: Sequence[FrameObjects], pred: Sequence[FrameObjects],
                 similarity: SimilarityKind = "box") -> HotaMetrics:
    """HOTA of one sequence with box or mask IoU as the similarity."""
    if len(gt) != len(pred):
        raise ValueError(f"ground truth has {len(gt)} frames, prediction {len(pred)}")
    similarities = [frame_iou(g, p, similarity) for g, p in zip(gt, pred, strict=True)]
    return hota_from_similarities([f.ids for f in gt], [f.ids for f in pred], similarities)


def combine_hota(results: Sequence[HotaMetrics]) -> HotaMetrics:
    """Several sequences together as TrackEval combines them: TP/FN/FP summed, AssA, AssRe,
    AssPr and LocA averaged with TP weights."""
    if not results:
        raise ValueError("no results to combine")
    tp = np.sum([r.tp for r in results], axis=0)
    weight = np.maximum(1.0, tp)

    def weighted(name: str) -> np.ndarray:
        return np.sum([getattr(r, name) * r.tp for r in results], axis=0) / weight

    loca = np.maximum(1e-10, np.sum([r.loca_alpha * r.tp for r in results], axis=0)) / \
        np.maximum(1e-10, tp)
    return HotaMetrics(tp=tp, fn=np.sum([r.fn for r in results], axis=0),
                       fp=np.sum([r.fp for r in results], axis=0),
                       assa_alpha=weighted("assa_alpha"), assre_alpha=weighted("assre_alpha"),
                       asspr_alpha=weighted("asspr_alpha"), loca_alpha=loca)
