"""The evaluation of a segmenter on a synthetic split, through the real tracker and metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from metric_reference import (
    check_against_references,
    check_metrics_document,
    decode_masks,
    record_scored_videos,
)

from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.eval.evaluate import evaluate_segmenter, main
from metaseg_ros.inference.builder import shipped_checkpoint
from metaseg_ros.model.checkpoint import load_checkpoint_config
from metaseg_ros.results import Detection, FrameDetections
from metaseg_ros.tracking import TrackerConfig

SOURCE = SyntheticVideoSource(3, SyntheticConfig(image_size=(64, 80), num_frames=8,
                                                 min_visible_pixels=8), seed=4)


class GroundTruthSegmenter:
    """Replays a source's exact ground truth as detections (embedding = one-hot of the
    instance id). `swap_ids_at` exchanges the identities of two instances from that frame
    on, `erode` removes mask pixels: both must lower the scores."""

    def __init__(self, source: SyntheticVideoSource, swap_ids_at: int | None = None,
                 erode: bool = False) -> None:
        self.source = source
        self.swap_ids_at = swap_ids_at
        self.erode = erode
        self.video = -1
        self.frame = 0
        self.clip = None

    @property
    def class_names(self) -> Sequence[str]:
        return self.source.class_names

    def reset(self) -> None:
        self.video += 1
        self.frame = 0
        self.clip = self.source.load_video(self.video)

    def step(self, image: np.ndarray) -> FrameDetections:
        assert self.clip is not None and np.array_equal(image, self.clip.frames[self.frame])
        detections = []
        ids = self.clip.instance_ids.copy()
        if self.swap_ids_at is not None and self.frame >= self.swap_ids_at and len(ids) > 1:
            ids[[0, 1]] = ids[[1, 0]]
        for n in np.flatnonzero(self.clip.present[self.frame]):
            mask = self.clip.masks[self.frame, n].copy()
            if self.erode:
                mask[::2] = False
            embedding = np.zeros(32, np.float32)
            embedding[ids[n]] = 1.0
            probs = np.zeros(len(self.class_names), np.float32)
            probs[self.clip.class_ids[n]] = 1.0
            detections.append(Detection(int(self.clip.class_ids[n]), 0.95, mask, embedding,
                                        probs, int(n)))
        self.frame += 1
        return FrameDetections(image.shape[0], image.shape[1], tuple(detections))


def test_perfect_segmentation_scores_one() -> None:
    tracker = TrackerConfig(confirm_hits=1)
    result = evaluate_segmenter(GroundTruthSegmenter(SOURCE), SOURCE, tracker)
    assert result.num_videos == 3 and result.num_frames == 24
    assert result.video_ap == pytest.approx(1.0)
    assert result.idf1 == pytest.approx(1.0) and result.mota == pytest.approx(1.0)
    assert result.id_switches == 0
    assert result.hota == pytest.approx(1.0)
    assert result.j_and_f == pytest.approx(1.0)


def test_identity_swaps_and_bad_masks_lower_the_scores() -> None:
    tracker = TrackerConfig(confirm_hits=1, iou_weight=0.0, class_weight=0.0,
                            embedding_weight=1.0)
    swapped = evaluate_segmenter(GroundTruthSegmenter(SOURCE, swap_ids_at=4), SOURCE, tracker)
    assert swapped.id_switches > 0 and swapped.idf1 < 0.95 and swapped.video_ap < 0.95
    eroded = evaluate_segmenter(GroundTruthSegmenter(SOURCE, erode=True), SOURCE,
                                TrackerConfig(confirm_hits=1))
    assert eroded.j_and_f < 0.8 and eroded.video_ap < 0.5


def test_command_line_evaluates_a_checkpoint(tmp_path, capsys, monkeypatch) -> None:
    """metaseg-eval on the shipped weights: the JSON it prints and writes holds every
    metric, in range, and the tracking scores equal the reference implementations' on
    exactly what it scored, whose ground truth is the split's own."""
    pytest.importorskip("trackeval")
    checkpoint = shipped_checkpoint("tiny")
    if checkpoint is None:
        pytest.skip("no shipped tiny weights")
    scored = record_scored_videos(monkeypatch)
    torch.set_num_threads(2)
    assert main(["--checkpoint", str(checkpoint), "--synthetic-videos", "2",
                 "--synthetic-frames", "4", "--synthetic-size", "128", "128",
                 "--output", str(tmp_path / "metrics.json")]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "metrics.json").read_text().strip() == printed.strip()
    document = json.loads(printed)
    assert document["checkpoint"] == str(checkpoint)
    metrics = document["metrics"]
    check_metrics_document(metrics)
    assert (metrics["num_videos"], metrics["num_frames"]) == (2, 8)
    [videos] = scored
    # The ground truth scored is the split's: the same synthetic videos, rendered here.
    classes = load_checkpoint_config(checkpoint).class_names
    split = SyntheticVideoSource(2, SyntheticConfig(image_size=(128, 128), num_frames=4,
                                                    class_names=classes),
                                 seed=0, first_video=100_000)
    for index, video in enumerate(videos):
        clip = split.load_video(index)
        assert len(video.ground_truth) == clip.num_frames
        for t, frame in enumerate(video.ground_truth):
            visible = clip.present[t]
            assert frame.ids.tolist() == clip.instance_ids[visible].tolist()
            if visible.any():
                np.testing.assert_array_equal(decode_masks(frame.masks), clip.masks[t][visible])
    expected = check_against_references(metrics, videos)
    # Not a degenerate case: the shipped model finds objects, and misses or adds some.
    assert 0 < expected["det_a"] < 1 and expected["hota"] > 0.1
