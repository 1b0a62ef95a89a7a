"""Online multi-object tracker: persistent uint32 track ids for per-frame instances.

Causal (frame by frame, no look-ahead), no ROS. One `update` per frame:

1. detections below `min_score` are dropped; each remaining mask is packed once
   (`summarize_mask`, inside `Detection.bbox` when given), its embedding L2-normalised, its
   class probabilities normalised;
2. every (detection, live track) pair gets a similarity: embedding cosine with the track's
   bank, exact mask IoU with the track's last mask, Bhattacharyya agreement of the class
   distributions (weights in `TrackerConfig`);
3. the Hungarian algorithm matches pairs above `min_similarity` (`assign`), first with the
   established (confirmed or lost) tracks, then the remaining detections with the
   tentative tracks;
4. lifecycle: matched tracks are updated (a lost track that is matched is re-identified and
   keeps its id), unmatched tentative tracks are dropped, unmatched confirmed tracks are
   lost and deleted after `max_lost` unseen frames, unmatched detections with
   score >= `birth_score` that are not duplicates of a matched one start tentative tracks.

Published per frame: the confirmed tracks detected in this frame, sorted by track id.
Tentative tracks are not published (they have no id yet: ids are given at confirmation, so
a one-frame false positive never consumes an id); with `confirm_hits=1` every new track is
published from its first frame.

Track ids: uint32, starting at 1, increasing by one per confirmed track, never reused; 0 is
reserved for "no track". `reset()` drops every track but not the id counter. After id
2**32 - 1 the counter wraps to 1, skipping ids still held by live tracks (at 100 new tracks
per second that happens after 1.4 years of uptime).

Each confirmed track remembers the decoder query slot (`Detection.query_index`) of its
latest detection (`TrackSnapshot.query_index`), so a caller can feed confirmed tracks back
into the model's memory as object pointers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metaseg_ros.results import Detection, FrameDetections, TrackedInstance
from metaseg_ros.tracking.assignment import assign
from metaseg_ros.tracking.config import TrackerConfig
from metaseg_ros.tracking.ids import MAX_TRACK_ID, TrackIds
from metaseg_ros.tracking.mask_summary import (
    BoxOverlap,
    MaskSummary,
    pairwise_intersection,
    pairwise_iou,
    summarize_mask,
)
from metaseg_ros.tracking.track import Track, TrackSnapshot, TrackState

__all__ = ["MAX_TRACK_ID", "TrackIds", "Tracker"]
_EPS = 1e-12
# OpenBLAS runs a matrix product on several threads above ~2**19 multiply-adds; on a busy
# machine (the model's threads, other processes) that made a 50 x 50 x 256 product take
# milliseconds instead of microseconds. Products here are split to stay single-threaded.
_SINGLE_THREAD_MACS = 2**18


def _dot_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T, computed in row blocks small enough for single-threaded BLAS."""
    rows = max(1, _SINGLE_THREAD_MACS // max(1, b.shape[0] * a.shape[1]))
    if a.shape[0] <= rows:
        return a @ b.T
    return np.concatenate([a[i:i + rows] @ b.T for i in range(0, a.shape[0], rows)])


@dataclass(frozen=True, slots=True, eq=False)
class _Candidates:
    """This frame's usable detections, preprocessed once."""

    detections: list[Detection]
    summaries: list[MaskSummary]
    embeddings: np.ndarray  # (N, D) unit rows
    class_probs: np.ndarray  # (N, C) rows summing to 1


class Tracker:
    """Assigns persistent track ids to the instances of successive frames (see module doc)."""

    def __init__(self, config: TrackerConfig, class_names: Sequence[str], *,
                 first_track_id: int = 1, ids: TrackIds | None = None) -> None:
        """ids: the id counter, shared with the trackers of other cameras (default: this
        tracker's own, starting at first_track_id)."""
        if not class_names:
            raise ValueError("class_names must not be empty")
        self.config = config
        self.class_names = tuple(class_names)
        self._ids = ids if ids is not None else TrackIds(first_track_id)
        self._tracks: list[Track] = []
        self._embedding_dim: int | None = None

    @property
    def tracks(self) -> tuple[TrackSnapshot, ...]:
        """Live tracks (tentative, confirmed and lost), oldest first."""
        return tuple(TrackSnapshot(
            track_id=t.track_id, state=t.state, class_id=t.class_id,
            score=t.score, age=t.age, hits=t.hits, lost_frames=t.lost_frames,
            query_index=t.query_index, detected_this_frame=t.detection_index >= 0)
            for t in self._tracks)

    @property
    def live_track_count(self) -> int:
        """Live tracks (tentative, confirmed and lost)."""
        return len(self._tracks)

    @property
    def next_track_id(self) -> int:
        """The id the next confirmed track will get."""
        return self._ids.next_id

    def reset(self) -> None:
        """Drop all tracks (start of a new video). Ids keep increasing afterwards."""
        for track in self._tracks:
            self._ids.release(track.track_id)
        self._tracks = []
        self._embedding_dim = None

    def update(self, frame: FrameDetections) -> tuple[TrackedInstance, ...]:
        """Associate one frame's detections with the tracks; return the instances to publish."""
        candidates = self._prepare(frame)
        tracks = self._tracks
        for track in tracks:
            track.detection_index = -1
        matches, unmatched_tracks, unmatched_detections = self._associate(candidates, tracks)

        for det_index, track_index in matches:
            self._update_track(tracks[track_index], candidates, det_index)
        survivors = []
        for index, track in enumerate(tracks):
            if index not in unmatched_tracks or self._survives_miss(track):
                survivors.append(track)
            else:
                self._ids.release(track.track_id)
        births = self._births(candidates, unmatched_detections,
                              [det for det, _ in matches])
        for det_index in births:
            det = candidates.detections[det_index]
            track = Track(self.config.embedding_bank_size, candidates.embeddings[det_index],
                           candidates.class_probs[det_index], candidates.summaries[det_index],
                           float(det.score), int(det.query_index), det_index)
            if self.config.confirm_hits <= 1:
                self._confirm(track)
            survivors.append(track)
        for track in survivors:
            track.age += 1
        self._tracks = survivors
        return self._published(candidates)

    # -- steps ---------------------------------------------------------------------------

    def _prepare(self, frame: FrameDetections) -> _Candidates:
        num_classes = len(self.class_names)
        kept = [d for d in frame.detections if d.score >= self.config.min_score]
        for det in kept:
            if det.mask.shape != (frame.height, frame.width):
                raise ValueError(f"detection mask shape {det.mask.shape} does not match the "
                                 f"frame size {(frame.height, frame.width)}")
            if not 0 <= det.class_id < num_classes:
                raise ValueError(f"class_id {det.class_id} outside [0, {num_classes})")
        if not kept:
            return _Candidates([], [], np.zeros((0, self._embedding_dim or 0)),
                               np.zeros((0, num_classes)))
        try:  # one (N, D) array, or a ragged list that numpy refuses
            embeddings = np.array([d.embedding for d in kept], dtype=np.float64).reshape(
                len(kept), -1)
        except ValueError:
            embeddings = None
        if embeddings is None or embeddings.shape[1] != np.size(kept[0].embedding) or (
                self._embedding_dim not in (None, embeddings.shape[1])):
            sizes = sorted({np.size(d.embedding) for d in kept})
            raise ValueError(f"embedding sizes {sizes} differ from each other or from "
                             f"the earlier {self._embedding_dim}")
        self._embedding_dim = embeddings.shape[1]
        norms = np.sqrt(np.einsum("ij,ij->i", embeddings, embeddings))
        embeddings /= np.maximum(norms, _EPS)[:, None]
        return _Candidates(detections=kept,
                           summaries=[summarize_mask(d.mask, d.bbox) for d in kept],
                           embeddings=embeddings,
                           class_probs=self._class_distributions(kept, num_classes))

    @staticmethod
    def _class_distributions(detections: list[Detection], num_classes: int) -> np.ndarray:
        """(N, C) class distributions: class_probs normalised to sum 1 (one-hot of class_id
        when a detection has no probabilities)."""
        sizes = {np.size(d.class_probs) for d in detections}
        if sizes == {num_classes}:
            probs = np.array([d.class_probs for d in detections], dtype=np.float64).reshape(
                len(detections), num_classes)
        else:
            probs = np.zeros((len(detections), num_classes))
            for row, det in enumerate(detections):
                values = np.asarray(det.class_probs).ravel()
                if values.size == num_classes:
                    probs[row] = values
                elif values.size:
                    raise ValueError(f"class_probs has {values.size} entries, expected "
                                     f"{num_classes}")
        np.clip(probs, 0.0, None, out=probs)
        totals = probs.sum(axis=1)
        empty = totals <= _EPS
        if empty.any():
            rows = np.flatnonzero(empty)
            probs[rows, [detections[r].class_id for r in rows]] = 1.0
            totals[rows] = 1.0
        return probs / totals[:, None]

    def _similarity(self, candidates: _Candidates, tracks: list[Track]) -> np.ndarray:
        """(detections, tracks) combined similarity in [0, 1] (see TrackerConfig).

        The exact mask IoU is computed only for the pairs that could pass the gate with it:
        with an upper bound of their IoU (box intersection / larger area) a pair still below
        `min_similarity` can never be matched, so its IoU does not matter and counts as 0
        (the similarity stays below the gate). The assignment is the same, with less work.
        """
        cfg = self.config
        if cfg.embedding_match == "mean":
            prototypes = np.stack([t.bank_sum for t in tracks])
            prototypes /= np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), _EPS)
            embedding_sim = _dot_rows(candidates.embeddings, prototypes)
        else:
            bank = np.concatenate([np.stack(t.bank) for t in tracks])
            starts = np.cumsum([0] + [len(t.bank) for t in tracks[:-1]])
            embedding_sim = np.maximum.reduceat(_dot_rows(candidates.embeddings, bank), starts,
                                                axis=1)
        track_probs = np.stack([t.class_probs for t in tracks])
        class_sim = _dot_rows(np.sqrt(candidates.class_probs), np.sqrt(track_probs))
        total_weight = (cfg.embedding_weight + cfg.iou_weight + cfg.class_weight
                        + cfg.query_slot_weight)
        similarity = (cfg.embedding_weight * np.clip(embedding_sim, 0.0, 1.0)
                      + cfg.class_weight * np.clip(class_sim, 0.0, 1.0))
        if cfg.query_slot_weight > 0.0:
            slots = np.array([d.query_index for d in candidates.detections])
            track_slots = np.array([t.query_index for t in tracks])
            same_slot = (slots[:, None] == track_slots[None, :]) & (track_slots[None, :] >= 0)
            similarity = similarity + cfg.query_slot_weight * same_slot
        if cfg.iou_weight > 0.0:
            track_summaries = [t.summary for t in tracks]
            overlap = BoxOverlap.of(candidates.summaries, track_summaries)
            larger_area = np.maximum(
                np.array([s.area for s in candidates.summaries], dtype=np.float64)[:, None],
                np.array([s.area for s in track_summaries], dtype=np.float64)[None, :])
            iou_bound = np.minimum(overlap.area / np.maximum(larger_area, 1.0), 1.0)
            could_pass = (similarity + cfg.iou_weight * iou_bound) / total_weight \
                >= cfg.min_similarity - 1e-9
            similarity = similarity + cfg.iou_weight * pairwise_iou(
                candidates.summaries, track_summaries, could_pass, overlap)
        return similarity / total_weight

    def _associate(self, candidates: _Candidates, tracks: list[Track]
                   ) -> tuple[list[tuple[int, int]], set[int], list[int]]:
        """Matches (detection, track), unmatched track indices, unmatched detections.

        Two rounds: established (confirmed or lost) tracks first, then tentative tracks
        with the detections left, so a fresh tentative track (often a duplicate or a false
        positive) never takes an established object's detection.
        """
        num_detections = len(candidates.detections)
        if not tracks or not num_detections:
            return [], set(range(len(tracks))), list(range(num_detections))
        cost = 1.0 - self._similarity(candidates, tracks)
        max_cost = 1.0 - self.config.min_similarity + _EPS
        free = np.arange(num_detections)
        matches: list[tuple[int, int]] = []
        for tentative_round in (False, True):
            columns = np.array([i for i, t in enumerate(tracks)
                                if (t.state is TrackState.TENTATIVE) == tentative_round],
                               dtype=np.int64)
            if not columns.size or not free.size:
                continue
            result = assign(cost[np.ix_(free, columns)], max_cost)
            matches.extend(zip(free[result.matches[:, 0]].tolist(),
                               columns[result.matches[:, 1]].tolist(), strict=True))
            free = free[result.unmatched_rows]
        unmatched_tracks = set(range(len(tracks))).difference(t for _, t in matches)
        return matches, unmatched_tracks, free.tolist()

    def _update_track(self, track: Track, candidates: _Candidates, det_index: int) -> None:
        det = candidates.detections[det_index]
        track.add_embedding(candidates.embeddings[det_index])
        track.vote(candidates.class_probs[det_index], self.config.class_ema)
        track.summary = candidates.summaries[det_index]
        track.score = float(det.score)
        track.query_index = int(det.query_index)
        track.hits += 1
        track.consecutive_hits += 1
        track.lost_frames = 0
        track.detection_index = det_index
        if track.state is TrackState.LOST:
            track.state = TrackState.CONFIRMED
        elif (track.state is TrackState.TENTATIVE
              and track.consecutive_hits >= self.config.confirm_hits):
            self._confirm(track)

    def _survives_miss(self, track: Track) -> bool:
        """Apply one missed frame to an unmatched track; False when it is deleted."""
        if track.state is TrackState.TENTATIVE:
            return False
        track.state = TrackState.LOST
        track.consecutive_hits = 0
        track.lost_frames += 1
        return track.lost_frames <= self.config.max_lost

    def _births(self, candidates: _Candidates, unmatched: list[int],
                matched: list[int]) -> list[int]:
        """Unmatched detections that start tracks: score >= birth_score, not duplicates.

        A duplicate has more than `duplicate_overlap` of its mask inside the mask of a matched
        detection or of a higher-scored detection born this frame.
        """
        eligible = [i for i in unmatched
                    if candidates.detections[i].score >= self.config.birth_score]
        if not eligible:
            return []
        eligible.sort(key=lambda i: -candidates.detections[i].score)
        summaries = [candidates.summaries[i] for i in eligible]
        intersection = pairwise_intersection(
            summaries, [candidates.summaries[i] for i in matched] + summaries)
        areas = np.array([max(s.area, 1) for s in summaries], dtype=np.float64)
        inside = intersection / areas[:, None]
        born: list[int] = []
        blockers = list(range(len(matched)))  # columns of `inside` that block a birth
        for row, det_index in enumerate(eligible):
            if blockers and inside[row, blockers].max() > self.config.duplicate_overlap:
                continue
            born.append(det_index)
            blockers.append(len(matched) + row)
        return born

    def _confirm(self, track: Track) -> None:
        track.state = TrackState.CONFIRMED
        track.track_id = self._allocate_id()

    def _allocate_id(self) -> int:
        return self._ids.allocate()

    def _published(self, candidates: _Candidates) -> tuple[TrackedInstance, ...]:
        published = []
        for track in self._tracks:
            if track.state is not TrackState.CONFIRMED or track.detection_index < 0:
                continue
            det = candidates.detections[track.detection_index]
            class_id = track.class_id
            published.append(TrackedInstance(
                track_id=track.track_id, class_id=class_id,
                class_name=self.class_names[class_id], score=float(det.score), mask=det.mask,
                bbox=track.summary.bbox, age=track.age, hits=track.hits))
        published.sort(key=lambda inst: inst.track_id)
        return tuple(published)
