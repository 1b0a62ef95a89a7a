"""Detection-level synthetic tracking sequences: ground truth plus a simulated detector.

No images and no model: objects are ellipses moving on a (height, width) canvas with a
depth order; the ground truth of a frame is every object whose visible (unoccluded,
in-image) part is at least `min_visibility` of its full area. A simulated detector turns
each frame into `FrameDetections` the way a query-based segmenter would:

- masks: the visible part of the object, with outline jitter (centre and radii noise);
- embeddings: a per-object identity vector (objects of a class share a component, so
  same-class objects look alike: cosine ~ `class_correlation`), drifting slowly over
  time, mixed with the occluder's vector when partly hidden, plus per-frame noise, at an
  arbitrary scale (like un-normalised decoder queries);
- class probabilities peaked on the true class (or, with `class_confusion`, on another);
- misses, false positives (random blobs, random embeddings) and duplicates (a second,
  partial mask of a detected object with a similar embedding).

Scenes (`make_scene`): 'crossing' (same-class objects crossing, the far one hidden at the
crossing), 'occlusion' (a large near object sweeps over a small far one that stays hidden
for about `gap` frames, with look-alike distractors), 'reentry' (objects leave the image and
come back `gap` frames later), 'crowd' (random walks leaving and re-entering the image,
scale changes, three classes). Everything is deterministic from the seed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.results import Detection, FrameDetections

SCENE_KINDS = ("crossing", "occlusion", "reentry", "crowd")


@dataclass(frozen=True)
class DetectorNoise:
    """How imperfect the simulated detector is.

    mask_jitter: std (pixels) of per-frame noise on the ellipse centre and radii.
    miss_rate: probability that a visible object is not detected in a frame.
    false_positives: mean number (Poisson) of spurious detections per frame.
    duplicate_rate: probability that a detected object yields a second, partial detection.
    embedding_noise: norm of the per-frame noise added to the unit identity embedding.
    class_confusion: probability that a detection's class distribution peaks on a wrong class.
    """

    mask_jitter: float = 0.0
    miss_rate: float = 0.0
    false_positives: float = 0.0
    duplicate_rate: float = 0.0
    embedding_noise: float = 0.0
    class_confusion: float = 0.0


NOISE_LEVELS: dict[str, DetectorNoise] = {
    "none": DetectorNoise(),
    "low": DetectorNoise(mask_jitter=1.0, miss_rate=0.02, false_positives=0.05,
                         duplicate_rate=0.01, embedding_noise=0.15, class_confusion=0.02),
    "moderate": DetectorNoise(mask_jitter=2.0, miss_rate=0.05, false_positives=0.2,
                              duplicate_rate=0.03, embedding_noise=0.3, class_confusion=0.05),
    "high": DetectorNoise(mask_jitter=4.0, miss_rate=0.15, false_positives=0.5,
                          duplicate_rate=0.08, embedding_noise=0.5, class_confusion=0.15),
}


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One ground-truth object: class, depth (smaller = nearer) and per-frame ellipse.

    centers: (T, 2) float (x, y) pixel centres; radii: (T, 2) float (x, y) semi-axes.
    """

    object_id: int
    class_id: int
    depth: float
    centers: np.ndarray
    radii: np.ndarray


@dataclass(frozen=True, eq=False)
class Scene:
    """Objects moving on a height x width canvas for num_frames frames."""

    name: str
    height: int
    width: int
    num_frames: int
    objects: tuple[SceneObject, ...]


@dataclass(frozen=True, eq=False)
class SyntheticSequence:
    """A scene's ground truth (visible masks, ids = object ids) and simulated detections."""

    scene: Scene
    ground_truth: tuple[FrameObjects, ...]
    detections: tuple[FrameDetections, ...]

    def longest_gap(self) -> int:
        """Most consecutive frames any object is absent from the ground truth between two
        appearances (its longest occlusion or time out of the image)."""
        longest = 0
        for obj in self.scene.objects:
            present = [obj.object_id in f.ids for f in self.ground_truth]
            seen = [i for i, p in enumerate(present) if p]
            for a, b in itertools.pairwise(seen):
                longest = max(longest, b - a - 1)
        return longest


def _linear(start: tuple[float, float], end: tuple[float, float], num_frames: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, num_frames)[:, None]
    return (1 - t) * np.asarray(start, dtype=np.float64) + t * np.asarray(end, dtype=np.float64)


def _constant(value: tuple[float, float], num_frames: int) -> np.ndarray:
    return np.tile(np.asarray(value, dtype=np.float64), (num_frames, 1))


def _crossing(rng: np.random.Generator, size: tuple[int, int], frames: int) -> list[SceneObject]:
    height, width = size
    objects = []
    for pair in range(2):
        y = height * (0.3 + 0.4 * pair) + rng.uniform(-5, 5)
        radius = rng.uniform(14, 20)
        wobble = rng.uniform(-4, 4)
        objects.append(SceneObject(2 * pair + 1, 0, 1.0 + pair,
                                   _linear((20, y), (width - 20, y + wobble), frames),
                                   _constant((radius, radius * 1.4), frames)))
        objects.append(SceneObject(2 * pair + 2, 0, 1.5 + pair,
                                   _linear((width - 20, y + wobble), (20, y), frames),
                                   _constant((radius * 0.95, radius * 1.35), frames)))
    x = width * rng.uniform(0.4, 0.6)
    objects.append(SceneObject(5, 2, 0.5, _linear((x, 15), (x, height - 15), frames),
                               _constant((16, 12), frames)))
    return objects


def _occlusion(rng: np.random.Generator, size: tuple[int, int], frames: int,
               gap: int) -> list[SceneObject]:
    height, width = size
    hidden_radius = (12.0, 16.0)
    occluder_radius = (48.0, 40.0)
    # The far object is hidden while the occluder's centre is within about
    # (occluder rx - hidden rx) of it: speed chosen so that lasts `gap` frames.
    cover = 2 * (occluder_radius[0] - hidden_radius[0]) + 8
    speed = cover / max(gap, 1)
    center_x = width / 2
    start_frame = frames // 4
    xs = center_x - cover / 2 - speed * (start_frame - np.arange(frames))
    cy = height / 2 + rng.uniform(-5, 5)
    objects = [
        SceneObject(1, 0, 2.0, _constant((center_x, cy), frames), _constant(hidden_radius, frames)),
        SceneObject(2, 4, 0.5, np.stack([xs, np.full(frames, cy)], axis=1),
                    _constant(occluder_radius, frames)),
    ]
    for k in range(2):  # look-alike distractors of the hidden object's class
        x = rng.uniform(30, width - 30)
        y = cy + (-1) ** k * rng.uniform(70, 90)
        objects.append(SceneObject(3 + k, 0, 1.0, _linear((x, y), (width - x, y), frames),
                                   _constant((12, 16), frames)))
    return objects


def _reentry(rng: np.random.Generator, size: tuple[int, int], frames: int,
             gap: int) -> list[SceneObject]:
    height, width = size
    objects = []
    for k in range(3):
        y = height * (0.25 + 0.25 * k)
        radius = rng.uniform(12, 16)
        speed = rng.uniform(3.0, 4.0)
        exit_frame = frames // 5 + 8 * k
        # Leave through the left edge, stay away for about `gap` frames, come back in.
        xs = np.empty(frames)
        start_x = radius + 8 + speed * exit_frame
        for t in range(frames):
            if t <= exit_frame:
                xs[t] = start_x - speed * t
            elif t <= exit_frame + gap:
                xs[t] = -3 * radius
            else:
                xs[t] = min(-radius + speed * (t - exit_frame - gap), width * 0.7)
        objects.append(SceneObject(k + 1, 0, 1.0 + k,
                                   np.stack([xs, np.full(frames, y)], axis=1),
                                   _constant((radius, radius * 1.3), frames)))
    objects.append(SceneObject(4, 2, 0.5, _linear((width * 0.6, 20), (width * 0.8, height - 20),
                                                  frames), _constant((18, 12), frames)))
    return objects


def _crowd(rng: np.random.Generator, size: tuple[int, int], frames: int) -> list[SceneObject]:
    height, width = size
    margin = 40.0
    objects = []
    for k in range(8):
        position = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        velocity = rng.normal(0, 2.0, size=2)
        base = rng.uniform(9, 18)
        phase = rng.uniform(0, 2 * math.pi)
        centers = np.empty((frames, 2))
        for t in range(frames):
            velocity = 0.95 * velocity + rng.normal(0, 0.4, size=2)
            position = position + velocity
            for axis, limit in ((0, width), (1, height)):
                if not -margin <= position[axis] <= limit + margin:
                    velocity[axis] = -velocity[axis]
                    position[axis] = np.clip(position[axis], -margin, limit + margin)
            centers[t] = position
        scale = 1.0 + 0.3 * np.sin(np.arange(frames) * 0.05 + phase)
        radii = np.stack([base * scale, base * 1.3 * scale], axis=1)
        objects.append(SceneObject(k + 1, int(k % 3), rng.uniform(0, 10), centers, radii))
    return objects


def make_scene(kind: str, seed: int, num_frames: int = 120, height: int = 256,
               width: int = 256, gap: int = 15) -> Scene:
    """A scripted scene (see the module docstring). gap: frames hidden / out of the image
    for 'occlusion' and 'reentry'."""
    rng = np.random.default_rng(seed)
    size = (height, width)
    if kind == "crossing":
        objects = _crossing(rng, size, num_frames)
    elif kind == "occlusion":
        objects = _occlusion(rng, size, num_frames, gap)
    elif kind == "reentry":
        objects = _reentry(rng, size, num_frames, gap)
    elif kind == "crowd":
        objects = _crowd(rng, size, num_frames)
    else:
        raise ValueError(f"unknown scene kind {kind!r}; choose from {SCENE_KINDS}")
    name = f"{kind}-gap{gap}-seed{seed}" if kind in ("occlusion", "reentry") else \
        f"{kind}-seed{seed}"
    return Scene(name, height, width, num_frames, tuple(objects))


def _ellipse(size: tuple[int, int], center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(H, W) bool mask of a filled axis-aligned ellipse, clipped to the image."""
    height, width = size
    mask = np.zeros(size, dtype=bool)
    rx, ry = max(float(radii[0]), 0.5), max(float(radii[1]), 0.5)
    x0, x1 = max(int(center[0] - rx), 0), min(int(center[0] + rx) + 2, width)
    y0, y1 = max(int(center[1] - ry), 0), min(int(center[1] + ry) + 2, height)
    if x0 >= x1 or y0 >= y1:
        return mask
    ys, xs = np.ogrid[y0:y1, x0:x1]
    mask[y0:y1, x0:x1] = ((xs - center[0]) / rx) ** 2 + ((ys - center[1]) / ry) ** 2 <= 1.0
    return mask


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _class_probs(rng: np.random.Generator, class_id: int, num_classes: int,
                 confusion: float) -> tuple[int, np.ndarray]:
    peak = class_id
    if confusion > 0 and rng.random() < confusion:
        peak = int(rng.choice([c for c in range(num_classes) if c != class_id]))
    logits = rng.normal(0.0, 0.5, size=num_classes)
    logits[peak] += 4.0
    probs = np.exp(logits - logits.max())
    probs = 0.95 * probs / probs.sum()  # the rest would be the no-object class
    return peak, probs.astype(np.float32)


def simulate(scene: Scene, noise: DetectorNoise, seed: int, num_classes: int = 20,
             embedding_dim: int = 256, class_correlation: float = 0.5,
             min_visibility: float = 0.25, min_pixels: int = 16) -> SyntheticSequence:
    """Ground truth and simulated detections of a scene (deterministic from seed)."""
    rng = np.random.default_rng(seed)
    size = (scene.height, scene.width)
    class_vectors = {c: _unit(rng.normal(size=embedding_dim)) for c in range(num_classes)}
    identity = {}
    for obj in scene.objects:
        own = _unit(rng.normal(size=embedding_dim))
        identity[obj.object_id] = _unit(math.sqrt(class_correlation) * class_vectors[obj.class_id]
                                        + math.sqrt(1 - class_correlation) * own)
    drift = {obj.object_id: np.zeros(embedding_dim) for obj in scene.objects}
    by_depth = sorted(scene.objects, key=lambda o: o.depth)
    slots = {obj.object_id: int(rng.integers(0, 100)) for obj in scene.objects}

    ground_truth, detections = [], []
    for t in range(scene.num_frames):
        occupied = np.zeros(size, dtype=bool)
        occupant = np.zeros(size, dtype=np.int64)  # object id nearest the camera per pixel
        gt_ids, gt_masks, gt_classes = [], [], []
        frame_detections: list[Detection] = []
        for obj in by_depth:
            drift[obj.object_id] += rng.normal(0, 0.02 / math.sqrt(embedding_dim),
                                               size=embedding_dim)
            full = _ellipse(size, obj.centers[t], obj.radii[t])
            visible = full & ~occupied
            full_area = math.pi * obj.radii[t][0] * obj.radii[t][1]
            visible_pixels = int(visible.sum())
            hidden_by = occupant[full & occupied]
            occupied_before = occupied.copy()
            occupied |= full
            occupant[visible] = obj.object_id
            if visible_pixels < min_pixels or visible_pixels < min_visibility * full_area:
                continue
            gt_ids.append(obj.object_id)
            gt_masks.append(visible)
            gt_classes.append(obj.class_id)
            if rng.random() < noise.miss_rate:
                continue
            if noise.mask_jitter > 0:
                center = obj.centers[t] + rng.normal(0, noise.mask_jitter, size=2)
                radii = obj.radii[t] + rng.normal(0, noise.mask_jitter, size=2)
                mask = _ellipse(size, center, radii) & ~occupied_before
            else:
                mask = visible
            if mask.sum() < min_pixels:
                continue
            visibility = min(1.0, visible_pixels / full_area)
            embedding = _unit(identity[obj.object_id] + drift[obj.object_id])
            if hidden_by.size:  # partly occluded: the query also sees the occluder
                occluder = int(np.bincount(hidden_by).argmax())
                embedding = embedding + 0.5 * (1 - visibility) * identity[occluder]
            embedding = embedding + noise.embedding_noise * _unit(rng.normal(size=embedding_dim))
            peak, probs = _class_probs(rng, obj.class_id, num_classes, noise.class_confusion)
            score = float(rng.uniform(0.75, 0.98) * (0.6 + 0.4 * visibility))
            scale = float(rng.uniform(5.0, 15.0))
            frame_detections.append(Detection(
                class_id=peak, score=score, mask=mask,
                embedding=(scale * embedding).astype(np.float32), class_probs=probs,
                query_index=slots[obj.object_id]))
            if rng.random() < noise.duplicate_rate:
                frame_detections.append(_duplicate(rng, frame_detections[-1], noise))
        for _ in range(rng.poisson(noise.false_positives)):
            frame_detections.append(_false_positive(rng, size, num_classes, embedding_dim))
        order = rng.permutation(len(frame_detections))
        detections.append(FrameDetections(scene.height, scene.width,
                                          tuple(frame_detections[i] for i in order)))
        ground_truth.append(FrameObjects.from_masks(gt_ids, gt_masks, class_ids=gt_classes))
    return SyntheticSequence(scene, tuple(ground_truth), tuple(detections))


def _duplicate(rng: np.random.Generator, source: Detection, noise: DetectorNoise) -> Detection:
    """A second detection covering part of the same object (a typical query-model error)."""
    rows, cols = np.nonzero(source.mask)
    mask = np.zeros_like(source.mask)
    if rng.random() < 0.5:
        split = int(np.median(cols))
        keep = cols <= split if rng.random() < 0.5 else cols >= split
    else:
        split = int(np.median(rows))
        keep = rows <= split if rng.random() < 0.5 else rows >= split
    mask[rows[keep], cols[keep]] = True
    embedding = source.embedding + np.float32(np.linalg.norm(source.embedding)) * (
        max(noise.embedding_noise, 0.1) * _unit(rng.normal(size=source.embedding.size))
    ).astype(np.float32)
    return Detection(class_id=source.class_id, score=float(source.score * rng.uniform(0.5, 0.8)),
                     mask=mask, embedding=embedding, class_probs=source.class_probs,
                     query_index=int(rng.integers(0, 100)))


def _false_positive(rng: np.random.Generator, size: tuple[int, int], num_classes: int,
                    embedding_dim: int) -> Detection:
    height, width = size
    mask = _ellipse(size, np.array([rng.uniform(0, width), rng.uniform(0, height)]),
                    rng.uniform(5, 20, size=2))
    if not mask.any():
        mask[int(rng.integers(0, height)), int(rng.integers(0, width))] = True
    class_id = int(rng.integers(0, num_classes))
    _, probs = _class_probs(rng, class_id, num_classes, 0.0)
    return Detection(class_id=class_id, score=float(rng.uniform(0.3, 0.75)), mask=mask,
                     embedding=(rng.uniform(5, 15) * _unit(rng.normal(size=embedding_dim))
                                ).astype(np.float32),
                     class_probs=probs, query_index=int(rng.integers(0, 100)))
