"""The synthetic benchmark generator and the tracker's goals on it."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.data.synthetic_detections import (
    NOISE_LEVELS,
    SCENE_KINDS,
    DetectorNoise,
    make_scene,
    simulate,
)
from metaseg_ros.eval import FrameObjects, hota_metrics, mot_metrics
from metaseg_ros.tracking import Tracker, TrackerConfig

pytestmark = pytest.mark.torch_free


def track(sequence, **config) -> list[FrameObjects]:
    tracker = Tracker(TrackerConfig(**config), DEFAULT_CLASSES)
    return [FrameObjects.from_tracked(tracker.update(f)) for f in sequence.detections]


def test_simulation_is_deterministic() -> None:
    scene = make_scene("crowd", seed=3, num_frames=20)
    a = simulate(scene, NOISE_LEVELS["high"], seed=5)
    b = simulate(make_scene("crowd", seed=3, num_frames=20), NOISE_LEVELS["high"], seed=5)
    for fa, fb in zip(a.detections, b.detections, strict=True):
        assert len(fa.detections) == len(fb.detections)
        for da, db in zip(fa.detections, fb.detections, strict=True):
            assert np.array_equal(da.mask, db.mask)
            assert np.array_equal(da.embedding, db.embedding)
            assert da.score == db.score
    for ga, gb in zip(a.ground_truth, b.ground_truth, strict=True):
        assert np.array_equal(ga.ids, gb.ids) and ga.masks == gb.masks


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_noise_free_detections_are_the_ground_truth(kind: str) -> None:
    sequence = simulate(make_scene(kind, seed=0, num_frames=40), DetectorNoise(), seed=0)
    for gt, frame in zip(sequence.ground_truth, sequence.detections, strict=True):
        assert len(frame.detections) == len(gt)
        rles = {mask_utils.encode(np.asfortranarray(d.mask, dtype=np.uint8))["counts"]
                for d in frame.detections}
        assert rles == {m["counts"] for m in gt.masks}
        for d in frame.detections:
            assert d.embedding.shape == (256,) and d.class_probs.shape == (20,)


def test_scenes_contain_their_events() -> None:
    occlusion = simulate(make_scene("occlusion", 0, gap=15), DetectorNoise(), seed=0)
    present = [1 in f.ids for f in occlusion.ground_truth]
    assert present[0] and present[-1] and not all(present)
    assert 14 <= occlusion.longest_gap() <= 18
    reentry = simulate(make_scene("reentry", 0, gap=25), DetectorNoise(), seed=0)
    assert 24 <= reentry.longest_gap() <= 28
    # Objects leave through the image border: their ground truth is clipped there.
    boxes = np.concatenate([f.boxes for f in reentry.ground_truth if len(f)])
    assert (boxes[:, 0] == 0).any()
    crowd = simulate(make_scene("crowd", 0), NOISE_LEVELS["moderate"], seed=0)
    counts = [len(f.detections) for f in crowd.detections]
    assert max(counts) > min(counts)


@pytest.mark.parametrize("kind, gap", [("occlusion", 5), ("occlusion", 20), ("reentry", 10),
                                       ("reentry", 25)])
def test_no_id_switch_when_hidden_shorter_than_max_lost(kind: str, gap: int) -> None:
    sequence = simulate(make_scene(kind, seed=1, gap=gap), DetectorNoise(), seed=1)
    assert sequence.longest_gap() < 30
    predictions = track(sequence, max_lost=30)
    result = mot_metrics(sequence.ground_truth, predictions, similarity="mask")
    assert result.id_switches == 0
    assert result.false_positives == 0
    assert result.idf1 > 0.99
    # ...and the same object does get a new id when it stays away longer than max_lost.
    short = mot_metrics(sequence.ground_truth, track(sequence, max_lost=2), similarity="mask")
    assert short.id_switches > 0


def test_moderate_noise_keeps_identities() -> None:
    """Moderate detector noise: misses, jitter and false positives cost detections, but
    identities survive (max_lost covers every gap in these scenes)."""
    for kind in SCENE_KINDS:
        sequence = simulate(make_scene(kind, seed=4, gap=15), NOISE_LEVELS["moderate"], seed=9)
        assert sequence.longest_gap() < 60
        predictions = track(sequence, max_lost=60)
        mot = mot_metrics(sequence.ground_truth, predictions, similarity="mask")
        hota = hota_metrics(sequence.ground_truth, predictions, similarity="mask")
        assert mot.id_switches <= 1, sequence.scene.name
        assert mot.idf1 > 0.88, sequence.scene.name
        assert hota.assa > 0.6, sequence.scene.name
