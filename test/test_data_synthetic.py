"""The synthetic video generator: determinism, exact ground truth, scripted events."""

from __future__ import annotations

import numpy as np
import pytest

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.data.synthetic import (
    SyntheticConfig,
    SyntheticVideoGenerator,
    SyntheticVideoSource,
    _resize_cutout,
)
from metaseg_ros.data.types import ClipSample

pytestmark = pytest.mark.torch_free

SMALL = SyntheticConfig(image_size=(96, 128), num_frames=12, min_visible_pixels=8)


def test_same_seed_same_video_and_different_seed_differs() -> None:
    a = SyntheticVideoSource(2, SMALL, seed=3).load_video(1)
    b = SyntheticVideoSource(2, SMALL, seed=3).load_video(1)
    c = SyntheticVideoSource(2, SMALL, seed=4).load_video(1)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert a.frames.shape == (12, 96, 128, 3) and a.frames.dtype == np.uint8
    assert not np.array_equal(a.frames, c.frames)


def test_clip_equals_slice_of_whole_video() -> None:
    source = SyntheticVideoSource(3, SMALL, seed=1)
    video = source.load_video(2)
    clip = source.load_clip(2, [3, 5, 7])
    assert np.array_equal(clip.frames, video.frames[[3, 5, 7]])
    assert np.array_equal(clip.masks, video.masks[[3, 5, 7]])
    assert np.array_equal(clip.instance_ids, video.instance_ids)


def test_visible_masks_are_exact_pixels_of_the_pasted_cutouts() -> None:
    """Without sensor noise, each visible mask pixel holds the cut-out's own pixel."""
    config = SyntheticConfig(image_size=(96, 128), num_frames=6, noise_sigma=0.0,
                             min_visible_pixels=1)
    generator = SyntheticVideoGenerator(config, seed=5)
    checked = 0
    for video_index in range(4):
        script = generator.script(video_index)
        for t in (0, 5):
            frame, masks = generator.render(script, t)
            assert not (masks.sum(0) > 1).any(), "visible masks must not overlap"
            for obj, mask in zip(script.labelled, masks, strict=True):
                if not mask.any():
                    continue
                rgb, cut = _resize_cutout(generator.cutouts[obj.cutout_index],
                                          obj.size_at(t, config.num_frames), obj.flip)
                cx, cy = obj.centre_at(t)
                top, left = round(cy - cut.shape[0] / 2), round(cx - cut.shape[1] / 2)
                rows, cols = np.nonzero(mask)
                assert cut[rows - top, cols - left].all(), "visible pixel outside the cut-out"
                assert np.array_equal(frame[rows, cols], rgb[rows - top, cols - left])
                checked += 1
    assert checked >= 8


def test_classes_are_model_classes_and_ids_persist() -> None:
    source = SyntheticVideoSource(6, SMALL, seed=0)
    for v in range(len(source)):
        video = source.load_video(v)
        assert set(video.class_ids.tolist()) <= {DEFAULT_CLASSES.index(n) for n in
                                                 ("person", "chair", "bottle", "dining table")}
        assert len(set(video.instance_ids.tolist())) == len(video.instance_ids)
        assert (video.instance_ids >= 1).all()


def test_scripted_events_occur_occlusion_entry_exit_scale() -> None:
    """Across a small split there are full occlusions, exits and re-entries, and scaling."""
    config = SyntheticConfig(image_size=(96, 96), num_frames=16, min_visible_pixels=8)
    source = SyntheticVideoSource(12, config, seed=0)
    hidden_then_back = entered = scaled = 0
    for v in range(len(source)):
        present = source.load_video(v).present  # (T, N)
        video = source.load_video(v)
        for n in range(present.shape[1]):
            seen = np.flatnonzero(present[:, n])
            if seen.size == 0:
                continue
            if (seen[-1] - seen[0] + 1) > seen.size:  # a gap between two visible frames
                hidden_then_back += 1
            if seen[0] > 0:
                entered += 1
            areas = video.masks[seen, n].sum(axis=(1, 2))
            if areas.max() > 1.5 * max(areas.min(), 1):
                scaled += 1
    assert hidden_then_back >= 2
    assert entered >= 2
    assert scaled >= 2


def test_backgrounds_and_cutouts_come_from_packaged_files() -> None:
    generator = SyntheticVideoGenerator(SMALL, seed=0)
    assert len(generator.backgrounds) == len(SMALL.backgrounds)
    assert all(b.ndim == 3 and b.shape[2] == 3 and b.std() > 5 for b in generator.backgrounds)
    assert {c.class_name for c in generator.cutouts} == {"person", "chair", "bottle",
                                                         "dining table"}
    assert len(generator.clutter) >= 4


def test_invalid_config_and_frame_are_rejected() -> None:
    with pytest.raises(ValueError, match="1 <= min_objects <= max_objects"):
        SyntheticConfig(min_objects=3, max_objects=2)
    with pytest.raises(IndexError, match=r"frame 12 outside 0\.\.11"):
        SyntheticVideoSource(1, SMALL).load_clip(0, [SMALL.num_frames])
    with pytest.raises(ValueError,
                       match=r"masks must be \(1, 1, 4, 4\) bool, got \(1, 1, 4, 5\)"):
        ClipSample(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 1, 4, 5), bool),
                   np.zeros(1, np.int64), np.zeros(1, np.int64))
