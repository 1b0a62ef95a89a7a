"""Tracker lifecycle on scripted sequences: birth, loss, re-identification, deletion, ids."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.results import BoundingBox, Detection, FrameDetections
from metaseg_ros.tracking import MAX_TRACK_ID, Tracker, TrackerConfig, TrackState

pytestmark = pytest.mark.torch_free

HEIGHT, WIDTH, DIM = 96, 128, 32
NUM_CLASSES = len(DEFAULT_CLASSES)


def identity(k: int) -> np.ndarray:
    """A distinct (orthogonal) appearance per object."""
    vector = np.zeros(DIM, dtype=np.float32)
    vector[k] = 1.0
    return vector


def probs(class_id: int, confidence: float = 0.9) -> np.ndarray:
    p = np.full(NUM_CLASSES, (1 - confidence) / (NUM_CLASSES - 1), dtype=np.float32)
    p[class_id] = confidence
    return p


def det(x: float, y: float, k: int, class_id: int = 0, score: float = 0.9, radius: float = 8,
        scale: float = 3.0, query: int = -1, class_confidence: float = 0.9) -> Detection:
    ys, xs = np.ogrid[:HEIGHT, :WIDTH]
    mask = (xs - x) ** 2 + (ys - y) ** 2 <= radius**2
    return Detection(class_id=class_id, score=score, mask=mask,
                     embedding=scale * identity(k), class_probs=probs(class_id, class_confidence),
                     query_index=query)


def frame(*detections: Detection) -> FrameDetections:
    return FrameDetections(HEIGHT, WIDTH, tuple(detections))


def make(**changes) -> Tracker:
    return Tracker(TrackerConfig(**changes), DEFAULT_CLASSES)


def ids(instances) -> list[int]:
    return [i.track_id for i in instances]


# -- configuration ---------------------------------------------------------------------


def test_config_defaults_and_coercion() -> None:
    config = TrackerConfig(birth_score=1, min_score=0)
    assert isinstance(config.birth_score, float) and config.birth_score == 1.0
    assert TrackerConfig().max_lost == 30


@pytest.mark.parametrize("changes, error, message", [
    ({"max_lost": -1}, ValueError, "TrackerConfig.max_lost=-1 is outside [0, "),
    ({"max_lost": 2.5}, TypeError, "TrackerConfig.max_lost must be an integer, got 2.5"),
    ({"max_lost": True}, TypeError, "TrackerConfig.max_lost must be an integer, got True"),
    ({"confirm_hits": 0}, ValueError, "TrackerConfig.confirm_hits=0 is outside [1, "),
    ({"embedding_bank_size": 0}, ValueError,
     "TrackerConfig.embedding_bank_size=0 is outside [1, "),
    ({"birth_score": 0.2, "min_score": 0.4}, ValueError,
     "TrackerConfig.birth_score (0.2) must be >= min_score (0.4)"),
    ({"min_similarity": 1.5}, ValueError, "TrackerConfig.min_similarity=1.5 is outside [0.0, 1.0]"),
    ({"class_ema": 0.0}, ValueError, "TrackerConfig.class_ema=0.0 is outside [0.01, 1.0]"),
    ({"embedding_weight": 0.0, "iou_weight": 0.0, "class_weight": 0.0}, ValueError,
     "TrackerConfig: embedding_weight + iou_weight + class_weight must be > 0"),
    ({"embedding_match": "median"}, ValueError,
     "TrackerConfig.embedding_match='median' is not one of: mean, best"),
    ({"duplicate_overlap": float("nan")}, ValueError,
     "TrackerConfig.duplicate_overlap must be finite, got nan"),
    ({"iou_weight": "0.3"}, TypeError, "TrackerConfig.iou_weight must be a number, got '0.3'"),
])
def test_config_rejects_bad_values(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        TrackerConfig(**changes)


# -- birth ---------------------------------------------------------------------------------


def test_birth_needs_confirmation_and_ids_start_at_one() -> None:
    tracker = make(confirm_hits=2)
    assert tracker.update(frame(det(30, 30, 0))) == ()
    assert [t.state for t in tracker.tracks] == [TrackState.TENTATIVE]
    assert tracker.tracks[0].track_id == 0
    published = tracker.update(frame(det(31, 30, 0)))
    assert ids(published) == [1]
    instance = published[0]
    assert instance.class_name == DEFAULT_CLASSES[0]
    assert (instance.age, instance.hits) == (2, 2)
    assert instance.bbox == BoundingBox.from_mask(instance.mask)


def test_one_frame_false_positive_consumes_no_id() -> None:
    tracker = make(confirm_hits=2)
    tracker.update(frame(det(30, 30, 0)))
    tracker.update(frame())  # the tentative track is missed once: dropped
    assert tracker.tracks == ()
    tracker.update(frame(det(90, 60, 1)))
    assert ids(tracker.update(frame(det(90, 60, 1)))) == [1]


def test_confirm_hits_one_publishes_at_once() -> None:
    tracker = make(confirm_hits=1)
    assert ids(tracker.update(frame(det(30, 30, 0), det(90, 60, 1)))) == [1, 2]


def test_low_scores_continue_tracks_but_start_none() -> None:
    tracker = make(confirm_hits=1, min_score=0.3, birth_score=0.6)
    assert tracker.update(frame(det(30, 30, 0, score=0.5))) == ()  # below birth_score
    assert ids(tracker.update(frame(det(30, 30, 0, score=0.9)))) == [1]
    assert ids(tracker.update(frame(det(31, 30, 0, score=0.4)))) == [1]  # continues
    assert tracker.update(frame(det(32, 30, 0, score=0.2))) == ()  # below min_score: ignored
    assert tracker.tracks[0].state is TrackState.LOST


def test_duplicate_of_a_matched_detection_starts_no_track() -> None:
    tracker = make(confirm_hits=1)
    tracker.update(frame(det(40, 40, 0, radius=12)))
    full = det(40, 40, 0, radius=12)
    half_mask = full.mask.copy()
    half_mask[:, 40:] = False
    duplicate = dataclasses.replace(full, mask=half_mask, score=0.7)
    assert ids(tracker.update(frame(full, duplicate))) == [1]
    assert len(tracker.tracks) == 1
    # With duplicate suppression off, the same half mask becomes a new track.
    tracker = make(confirm_hits=1, duplicate_overlap=1.0)
    tracker.update(frame(full))
    assert ids(tracker.update(frame(full, duplicate))) == [1, 2]


# -- loss, re-identification, deletion -------------------------------------------------------


def test_lost_track_survives_max_lost_frames_then_is_deleted() -> None:
    tracker = make(confirm_hits=1, max_lost=3)
    tracker.update(frame(det(30, 30, 0)))
    for lost in range(1, 4):
        assert tracker.update(frame()) == ()
        (snapshot,) = tracker.tracks
        assert (snapshot.state, snapshot.lost_frames) == (TrackState.LOST, lost)
    tracker.update(frame())  # 4 > max_lost frames unseen
    assert tracker.tracks == ()


@pytest.mark.parametrize("hidden", [1, 5, 10])
def test_reidentified_after_occlusion_within_max_lost(hidden: int) -> None:
    tracker = make(confirm_hits=1, max_lost=10)
    assert ids(tracker.update(frame(det(30, 30, 0), det(90, 60, 1)))) == [1, 2]
    for _ in range(hidden):
        tracker.update(frame(det(90, 60, 1)))
    published = tracker.update(frame(det(30, 30, 0), det(90, 60, 1)))
    assert ids(published) == [1, 2]
    assert published[0].hits == 2 and published[0].age == hidden + 2


def test_reidentified_elsewhere_by_embedding_alone() -> None:
    """Re-entry at another place: no mask overlap, the query embedding carries the id."""
    tracker = make(confirm_hits=1, max_lost=30)
    for x in (20, 22, 24):
        tracker.update(frame(det(x, 30, 0), det(100, 70, 1)))
    for _ in range(12):
        tracker.update(frame(det(100, 70, 1)))
    published = tracker.update(frame(det(110, 20, 0), det(100, 70, 1)))
    assert ids(published) == [1, 2]
    # An unknown appearance at the same place is a new object, not object 0.
    tracker.update(frame(det(100, 70, 1)))
    assert ids(tracker.update(frame(det(110, 20, 5), det(100, 70, 1)))) == [2, 3]


def test_new_id_after_max_lost() -> None:
    tracker = make(confirm_hits=1, max_lost=2)
    tracker.update(frame(det(30, 30, 0)))
    for _ in range(3):
        tracker.update(frame())
    assert ids(tracker.update(frame(det(30, 30, 0)))) == [2]


def test_crossing_objects_keep_their_ids() -> None:
    """Two same-class objects swap sides; their embeddings differ, their masks overlap."""
    tracker = make(confirm_hits=1)
    steps = 12
    for t in range(steps + 1):
        a = det(20 + (WIDTH - 40) * t / steps, 48, 0)
        b = det(WIDTH - 20 - (WIDTH - 40) * t / steps, 50, 1)
        published = tracker.update(frame(a, b))
        assert ids(published) == [1, 2]
        assert published[0].mask is a.mask and published[1].mask is b.mask


def test_tentative_track_cannot_steal_an_established_detection() -> None:
    """A fresh track (here from a one-frame look-alike) must not take the detection of an
    established track, even when it would score higher on its own."""
    tracker = make(confirm_hits=2)
    for x in (30, 31, 32):
        tracker.update(frame(det(x, 40, 0, radius=10)))
    # A second detection at nearly the same place with object 0's appearance is born...
    look_alike = det(34, 40, 0, radius=10, score=0.8)
    lone = det(33, 40, 0, radius=10)
    tracker.update(frame(lone, dataclasses.replace(look_alike, mask=np.roll(look_alike.mask,
                                                                             30, axis=1))))
    # ...and next frame the real object is seen exactly where the look-alike was: it still
    # goes to the established track 1.
    shifted = dataclasses.replace(look_alike, mask=np.roll(look_alike.mask, 30, axis=1))
    published = tracker.update(frame(shifted))
    assert ids(published) == [1]


# -- ids -----------------------------------------------------------------------------------


def test_ids_are_monotonic_across_reset() -> None:
    tracker = make(confirm_hits=1)
    assert ids(tracker.update(frame(det(30, 30, 0), det(90, 60, 1)))) == [1, 2]
    tracker.reset()
    assert tracker.tracks == ()
    assert ids(tracker.update(frame(det(30, 30, 0)))) == [3]
    assert tracker.next_track_id == 4


def test_ids_wrap_around_skipping_live_ids() -> None:
    tracker = Tracker(TrackerConfig(confirm_hits=1, max_lost=100), DEFAULT_CLASSES,
                      first_track_id=MAX_TRACK_ID - 1)
    assert ids(tracker.update(frame(det(20, 20, 0), det(60, 20, 1)))) == [MAX_TRACK_ID - 1,
                                                                         MAX_TRACK_ID]
    assert tracker.next_track_id == 1
    assert ids(tracker.update(frame(det(20, 20, 0), det(60, 20, 1), det(100, 70, 2)))) == [
        1, MAX_TRACK_ID - 1, MAX_TRACK_ID]
    # Wrap again while id 1 is still alive: 1 is skipped, never duplicated.
    tracker2 = Tracker(TrackerConfig(confirm_hits=1, max_lost=100), DEFAULT_CLASSES,
                       first_track_id=MAX_TRACK_ID)
    tracker2.update(frame(det(20, 20, 0)))  # id MAX
    tracker2.update(frame(det(20, 20, 0), det(60, 20, 1)))  # id 1
    tracker2._next_id = MAX_TRACK_ID  # as if 2**32 - 2 more tracks had come and gone
    published = tracker2.update(frame(det(20, 20, 0), det(60, 20, 1), det(100, 70, 2)))
    assert ids(published) == [1, 2, MAX_TRACK_ID]
    assert all(0 < i <= MAX_TRACK_ID for i in ids(published))


# -- class vote ------------------------------------------------------------------------------


def test_class_vote_ignores_occasional_confusions() -> None:
    tracker = make(confirm_hits=1)
    classes = []
    for t in range(30):
        class_id = 3 if t % 4 == 3 else 2  # every fourth frame says "motorcycle"
        published = tracker.update(frame(det(40 + t, 40, 0, class_id=class_id)))
        classes.append(published[0].class_id)
    assert set(classes) == {2}
    assert published[0].class_name == "car"


def test_class_vote_follows_persistent_evidence() -> None:
    tracker = make(confirm_hits=1, class_ema=0.3)
    for t in range(10):
        tracker.update(frame(det(40 + t, 40, 0, class_id=2)))
    switched_at = None
    for t in range(10):
        published = tracker.update(frame(det(50 + t, 40, 0, class_id=3)))
        if published[0].class_id == 3 and switched_at is None:
            switched_at = t
    assert switched_at is not None and 1 <= switched_at <= 4
    assert ids(published) == [1]


# -- diagnostics and validation ------------------------------------------------------------


def test_tracks_view_reports_state_and_query_slot() -> None:
    tracker = make(confirm_hits=1)
    tracker.update(frame(det(30, 30, 0, query=17), det(90, 60, 1, query=4)))
    tracker.update(frame(det(31, 30, 0, query=17)))
    snapshots = {s.track_id: s for s in tracker.tracks}
    assert snapshots[1].query_index == 17 and snapshots[1].detected_this_frame
    assert snapshots[2].state is TrackState.LOST and snapshots[2].lost_frames == 1
    assert not snapshots[2].detected_this_frame


@pytest.mark.parametrize("embedding_match", ["mean", "best"])
def test_embedding_match_modes_track_the_same(embedding_match: str) -> None:
    tracker = make(confirm_hits=1, embedding_match=embedding_match, max_lost=20)
    tracker.update(frame(det(20, 30, 0), det(100, 70, 1)))
    for _ in range(5):
        tracker.update(frame(det(100, 70, 1)))
    assert ids(tracker.update(frame(det(60, 20, 0), det(100, 70, 1)))) == [1, 2]


def test_invalid_input_is_rejected() -> None:
    tracker = make()
    good = det(30, 30, 0)
    with pytest.raises(ValueError, match="mask shape"):
        tracker.update(FrameDetections(HEIGHT + 1, WIDTH, (good,)))
    with pytest.raises(ValueError, match="class_probs"):
        tracker.update(frame(dataclasses.replace(good, class_probs=np.ones(3, np.float32))))
    with pytest.raises(ValueError, match="class_id"):
        tracker.update(frame(dataclasses.replace(good, class_id=NUM_CLASSES)))
    tracker.update(frame(good))
    with pytest.raises(ValueError, match="embedding"):
        tracker.update(frame(dataclasses.replace(good, embedding=np.ones(DIM + 1, np.float32))))
    with pytest.raises(ValueError, match="class_names must not be empty"):
        Tracker(TrackerConfig(), [])


def test_missing_class_probs_fall_back_to_class_id() -> None:
    tracker = make(confirm_hits=1)
    bare = dataclasses.replace(det(30, 30, 0), class_id=5, class_probs=np.zeros(0, np.float32))
    assert tracker.update(frame(bare))[0].class_id == 5


def test_query_slot_continuity_decides_between_equally_similar_tracks() -> None:
    """Two tracks that look the same and a detection midway between them: with
    query_slot_weight it goes to the track whose last detection came from its query."""
    from metaseg_ros.results import Detection, FrameDetections
    from metaseg_ros.tracking import Tracker, TrackerConfig

    def square(x: int) -> np.ndarray:
        mask = np.zeros((32, 32), bool)
        mask[4:12, x:x + 8] = True
        return mask

    def det(mask: np.ndarray, slot: int) -> Detection:
        return Detection(class_id=0, score=0.9, mask=mask, embedding=np.ones(4, np.float32),
                         class_probs=np.array([0.9, 0.1], np.float32), query_index=slot)

    for slot in (3, 7):
        tracker = Tracker(TrackerConfig(confirm_hits=1, query_slot_weight=0.5, iou_weight=0.0,
                                        min_similarity=0.3), ("a", "b"))
        tracker.update(FrameDetections(32, 32, (det(square(4), 3), det(square(20), 7))))
        track_of_slot = {t.query_index: t.track_id for t in tracker.tracks}
        (out,) = tracker.update(FrameDetections(32, 32, (det(square(12), slot),)))
        assert out.track_id == track_of_slot[slot]
    with pytest.raises(ValueError, match="query_slot_weight"):
        TrackerConfig(query_slot_weight=1.5)


@pytest.mark.parametrize("kind", ["crossing", "crowd"])
def test_gated_iou_gives_the_same_admissible_pairs_as_the_full_iou(kind):
    """_similarity computes the exact mask IoU only for pairs that could pass the gate; on a
    noisy crowded sequence it agrees with the similarity written out in full (IoU of every
    pair) on every admissible pair, and admits exactly the same pairs."""
    from metaseg_ros.data.synthetic_detections import NOISE_LEVELS, make_scene, simulate
    from metaseg_ros.tracking.mask_summary import pairwise_iou

    sequence = simulate(make_scene(kind, seed=3, num_frames=40), NOISE_LEVELS["high"], seed=3)
    tracker = Tracker(TrackerConfig(), DEFAULT_CLASSES)
    cfg = tracker.config
    checked = skipped = 0
    for detections in sequence.detections:
        candidates = tracker._prepare(detections)
        tracks = tracker._tracks
        if tracks and candidates.detections:
            prototypes = np.stack([t.bank_sum / np.linalg.norm(t.bank_sum) for t in tracks])
            embedding = np.clip(candidates.embeddings @ prototypes.T, 0, 1)
            classes = np.clip(np.sqrt(candidates.class_probs)
                              @ np.sqrt(np.stack([t.class_probs for t in tracks])).T, 0, 1)
            iou = pairwise_iou(candidates.summaries, [t.summary for t in tracks])
            reference = (cfg.embedding_weight * embedding + cfg.iou_weight * iou
                         + cfg.class_weight * classes) / (cfg.embedding_weight
                                                          + cfg.iou_weight + cfg.class_weight)
            gated = tracker._similarity(candidates, tracks)
            admissible = reference >= cfg.min_similarity
            # Pairs within rounding of the gate may fall on either side of it.
            clear = np.abs(reference - cfg.min_similarity) > 1e-9
            np.testing.assert_array_equal((gated >= cfg.min_similarity)[clear],
                                          admissible[clear])
            admissible &= clear
            np.testing.assert_allclose(gated[admissible], reference[admissible], atol=1e-12)
            checked += int(admissible.sum())
            skipped += int(((iou > 0) & ~np.isclose(gated, reference, atol=1e-12)).sum())
        tracker.update(detections)
    assert checked > 50 and skipped > 0, (checked, skipped)
