"""Training clips: sampling from any VideoSource, clip-consistent augmentation, batching.

Every random choice for a sample is drawn from a generator seeded with
(seed, epoch, sample index), so a sample is the same whichever worker or process loads
it and whenever it is loaded again (exact resume, DDP).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from metaseg_ros.data.types import ClipSample, VideoSource


@dataclass(frozen=True)
class AugmentConfig:
    """Clip-consistent augmentation: one set of parameters for all frames of a clip."""

    output_size: tuple[int, int] = (512, 512)   # (height, width) of every training frame
    # Longer image side after resizing, relative to the output's longer side
    # (large-scale jitter as in Mask2Former; 1.0 = fit).
    scale_range: tuple[float, float] = (0.5, 1.5)
    horizontal_flip: bool = True
    brightness: float = 0.2   # factors drawn from [1 - x, 1 + x]
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.03         # rotation of the chroma plane, in turns
    min_instance_pixels: int = 16  # smaller leftovers after cropping are dropped


def augment_clip(clip: ClipSample, config: AugmentConfig, rng: np.random.Generator
                 ) -> ClipSample:
    """Resize (scale jitter), crop or pad, flip and colour-jitter all frames identically."""
    out_h, out_w = config.output_size
    frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float()
    masks = torch.from_numpy(clip.masks)
    t, n, h, w = masks.shape
    scale = float(rng.uniform(*config.scale_range)) * max(out_h, out_w) / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False,
                           antialias=scale < 1)
    if n:
        masks = F.interpolate(masks.reshape(t * n, 1, h, w).float(), size=(new_h, new_w),
                              mode="nearest-exact").reshape(t, n, new_h, new_w) > 0.5
    else:
        masks = torch.zeros((t, 0, new_h, new_w), dtype=torch.bool)
    top = int(rng.integers(0, new_h - out_h + 1)) if new_h > out_h else 0
    left = int(rng.integers(0, new_w - out_w + 1)) if new_w > out_w else 0
    frames = frames[:, :, top:top + out_h, left:left + out_w]
    masks = masks[:, :, top:top + out_h, left:left + out_w]
    pad = (0, out_w - frames.shape[3], 0, out_h - frames.shape[2])
    frames, masks = F.pad(frames, pad), F.pad(masks, pad)
    if config.horizontal_flip and rng.random() < 0.5:
        frames, masks = frames.flip(-1), masks.flip(-1)
    frames = _colour_jitter(frames, config, rng)
    masks = masks & (masks.sum(dim=(2, 3), keepdim=True) >= config.min_instance_pixels)
    out = ClipSample(
        frames=frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy(),
        masks=masks.numpy(), class_ids=clip.class_ids, instance_ids=clip.instance_ids,
        video_name=clip.video_name, frame_indices=clip.frame_indices,
        frame_tags=clip.frame_tags)
    return out.drop_absent()


def _colour_jitter(frames: torch.Tensor, config: AugmentConfig,
                   rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue, in a random order, on (T, 3, H, W) 0..255."""
    grey_weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    for operation in rng.permutation(4):
        if operation == 0 and config.brightness > 0:
            frames = frames * float(rng.uniform(1 - config.brightness, 1 + config.brightness))
        elif operation == 1 and config.contrast > 0:
            factor = float(rng.uniform(1 - config.contrast, 1 + config.contrast))
            mean = (frames * grey_weights).sum(1, keepdim=True).mean(dim=(1, 2, 3), keepdim=True)
            frames = mean + factor * (frames - mean)
        elif operation == 2 and config.saturation > 0:
            factor = float(rng.uniform(1 - config.saturation, 1 + config.saturation))
            grey = (frames * grey_weights).sum(1, keepdim=True)
            frames = grey + factor * (frames - grey)
        elif operation == 3 and config.hue > 0:
            frames = _rotate_hue(frames, float(rng.uniform(-config.hue, config.hue)))
        frames = frames.clamp(0, 255)
    return frames


def _rotate_hue(frames: torch.Tensor, turns: float) -> torch.Tensor:
    """Rotate chroma in YIQ space by `turns` of a full circle (luma unchanged)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                           [0.211, -0.523, 0.312]])
    angle = 2 * np.pi * turns
    rotate = torch.tensor([[1.0, 0.0, 0.0], [0.0, np.cos(angle), -np.sin(angle)],
                           [0.0, np.sin(angle), np.cos(angle)]], dtype=torch.float32)
    matrix = torch.linalg.inv(to_yiq) @ rotate @ to_yiq
    return torch.einsum("ij,tjhw->tihw", matrix, frames)


@dataclass(frozen=True)
class ClipSamplingConfig:
    """How clips are cut from videos."""

    clip_frames: int = 5        # frames per sample (the loop may use a prefix of them)
    max_frame_stride: int = 2   # frames are start + k * stride, stride drawn from 1..this
    samples_per_epoch: int = 0  # 0: one sample per video


class ClipDataset(Dataset):
    """Clips of `clip_frames` frames from a VideoSource, augmented, deterministic per key.

    Keys are a sample index or (sample index, epoch); sample i reads video
    i % len(source).
    """

    def __init__(self, source: VideoSource, sampling: ClipSamplingConfig | None = None,
                 augment: AugmentConfig | None = None, seed: int = 0) -> None:
        self.source = source
        self.sampling = sampling or ClipSamplingConfig()
        self.augment = augment
        self.seed = int(seed)
        if len(source) == 0:
            raise ValueError("the video source is empty")

    def __len__(self) -> int:
        return self.sampling.samples_per_epoch or len(self.source)

    def frame_indices(self, video_index: int, rng: np.random.Generator) -> list[int]:
        """Evenly strided frame indices inside the video (the last repeats if it is short)."""
        length = self.source.num_frames(video_index)
        count = self.sampling.clip_frames
        stride = int(rng.integers(1, self.sampling.max_frame_stride + 1))
        while stride > 1 and (count - 1) * stride + 1 > length:
            stride -= 1
        span = (count - 1) * stride + 1
        start = int(rng.integers(0, max(length - span, 0) + 1))
        return [min(start + k * stride, length - 1) for k in range(count)]

    def __getitem__(self, key: int | tuple[int, int]) -> ClipSample:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        video_index = int(index) % len(self.source)
        clip = self.source.load_clip(video_index, self.frame_indices(video_index, rng))
        if self.augment is not None:
            clip = augment_clip(clip, self.augment, rng)
        return clip.drop_absent()


@dataclass(frozen=True, eq=False)
class ClipTargets:
    """Ground truth of one clip as tensors: masks (T, N, H, W) bool, labels and ids (N,)."""

    masks: torch.Tensor
    labels: torch.Tensor
    instance_ids: torch.Tensor

    def frame(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masks (n, H, W), labels (n,), instance ids (n,)) of instances visible in frame t."""
        visible = self.masks[t].flatten(1).any(1)
        return self.masks[t][visible], self.labels[visible], self.instance_ids[visible]

    def to(self, device: torch.device | str) -> ClipTargets:
        """The same targets on another device."""
        return ClipTargets(self.masks.to(device), self.labels.to(device),
                           self.instance_ids.to(device))


@dataclass(frozen=True, eq=False)
class ClipBatch:
    """images (B, T, 3, H, W) float32 RGB 0..255 and one ClipTargets per clip; frame_tags:
    per clip, the ClipSample's frame tags (degradations per frame; () where not recorded)."""

    images: torch.Tensor
    targets: tuple[ClipTargets, ...]
    frame_tags: tuple[tuple[str, ...], ...] = ()

    def to(self, device: torch.device | str) -> ClipBatch:
        """The same batch on another device."""
        return ClipBatch(self.images.to(device), tuple(t.to(device) for t in self.targets),
                         self.frame_tags)


def collate_clips(clips: Sequence[ClipSample]) -> ClipBatch:
    """Stack clips of equal size into a ClipBatch (use as a DataLoader's collate_fn)."""
    images = torch.stack([torch.from_numpy(c.frames).permute(0, 3, 1, 2) for c in clips])
    targets = tuple(ClipTargets(torch.from_numpy(c.masks), torch.from_numpy(c.class_ids),
                                torch.from_numpy(c.instance_ids)) for c in clips)
    return ClipBatch(images.float(), targets, tuple(c.frame_tags for c in clips))
