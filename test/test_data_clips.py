"""Clip sampling, clip-consistent augmentation and batching."""

from __future__ import annotations

import numpy as np

from metaseg_ros.data.clips import (
    AugmentConfig,
    ClipDataset,
    ClipSamplingConfig,
    augment_clip,
    collate_clips,
)
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.data.types import ClipSample

SOURCE = SyntheticVideoSource(4, SyntheticConfig(image_size=(80, 120), num_frames=10,
                                                 min_visible_pixels=8), seed=0)


def _square_clip() -> ClipSample:
    """Two identical frames: a red square on black (mask = the square), plus a blue one."""
    frames = np.zeros((2, 60, 90, 3), np.uint8)
    masks = np.zeros((2, 2, 60, 90), bool)
    masks[:, 0, 10:30, 5:35] = True
    masks[:, 1, 35:55, 50:85] = True
    frames[:, 10:30, 5:35] = (255, 0, 0)
    frames[:, 35:55, 50:85] = (0, 0, 255)
    return ClipSample(frames, masks, np.array([0, 18]), np.array([4, 9]))


def test_augmentation_is_identical_across_frames_and_keeps_masks_on_pixels() -> None:
    clip = _square_clip()
    config = AugmentConfig(output_size=(64, 64), scale_range=(0.6, 1.6), brightness=0.0,
                           contrast=0.0, saturation=0.0, hue=0.0)
    flips = set()
    for seed in range(12):
        out = augment_clip(clip, config, np.random.default_rng(seed))
        assert out.frames.shape[1:3] == (64, 64)
        assert np.array_equal(out.frames[0], out.frames[1])
        assert np.array_equal(out.masks[0], out.masks[1])
        for n, channel in zip(range(len(out.instance_ids)),
                              [0 if i == 4 else 2 for i in out.instance_ids], strict=True):
            painted = out.frames[0, :, :, channel] > 127
            mask = out.masks[0, n]
            iou = (painted & mask).sum() / (painted | mask).sum()
            assert iou > 0.8  # misaligned masks would give ~0
        red = out.frames[0, :, :, 0] > 127
        if red.any():
            flips.add(np.argwhere(red)[:, 1].mean() > 32)
    assert flips == {True, False}  # both flipped and unflipped layouts occurred


def test_colour_jitter_is_shared_by_all_frames() -> None:
    clip = _square_clip()
    config = AugmentConfig(output_size=(60, 90), scale_range=(1.0, 1.0),
                           horizontal_flip=False)
    out = augment_clip(clip, config, np.random.default_rng(1))
    assert np.array_equal(out.frames[0], out.frames[1])
    assert not np.array_equal(out.frames[0], clip.frames[0])


def test_dataset_is_deterministic_per_key_and_varies_with_epoch() -> None:
    dataset = ClipDataset(SOURCE, ClipSamplingConfig(clip_frames=3, max_frame_stride=2),
                          AugmentConfig(output_size=(64, 64)), seed=11)
    a, b = dataset[(5, 0)], dataset[(5, 0)]
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert a.frames.shape == (3, 64, 64, 3)
    c = dataset[(5, 1)]
    assert not np.array_equal(a.frames, c.frames)
    assert len(dataset) == 4


def test_frame_indices_are_strided_and_inside_video() -> None:
    dataset = ClipDataset(SOURCE, ClipSamplingConfig(clip_frames=5, max_frame_stride=3))
    strides = set()
    for i in range(30):
        idx = dataset.frame_indices(0, np.random.default_rng(i))
        assert len(idx) == 5 and idx[0] >= 0 and idx[-1] < 10
        steps = set(np.diff(idx).tolist())
        assert len(steps) == 1
        strides |= steps
    assert strides == {1, 2}  # stride 3 does not fit 5 frames into 10


def test_collate_stacks_frames_and_keeps_targets() -> None:
    dataset = ClipDataset(SOURCE, ClipSamplingConfig(clip_frames=2),
                          AugmentConfig(output_size=(48, 64)), seed=0)
    clips = [dataset[i] for i in range(3)]
    batch = collate_clips(clips)
    assert batch.images.shape == (3, 2, 3, 48, 64) and batch.images.dtype.is_floating_point
    for clip, targets in zip(clips, batch.targets, strict=True):
        assert targets.masks.shape == clip.masks.shape
        masks, labels, ids = targets.frame(1)
        assert masks.shape[0] == labels.shape[0] == ids.shape[0] == clip.present[1].sum()
