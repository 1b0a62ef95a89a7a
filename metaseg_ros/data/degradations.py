"""Temporal difficulty for the synthetic videos: frames that only the past can resolve.

Image degradations (ground truth unchanged): motion blur of the whole frame ("blur"),
strong sensor noise ("noise"), under-exposure ("dark"), exposure flicker with rolling-
shutter banding ("flicker"), heavy JPEG artifacts ("jpeg") and bands of rows lost to
dropped packets ("dropout"). Scene events: an unlabelled occluder crossing the image
close to the camera ("occluder"; the ground truth is what stays visible), one object
motion-blurred except in its first frames ("object_blur": its class is clear only there)
and one object that leaves the image and comes back ("reentry").

Schedule, and why: the first `clean_prefix` frames of a video are always clean, and image
degradations come in bursts of `burst_length` frames, each burst after at least
`min_clean_gap` clean frames. With the model's 4-frame memory ring, a burst of at most 3
frames after 2 clean ones always leaves a clean frame in the ring, so every degraded frame
has a recent clean view of the same scene: the past makes it resolvable, while the frame
alone is hard. A burst has one kind, drawn in proportion to the kinds' rates; the rates
are fractions of the frames after the clean prefix.

Everything is a pure function of (config, seed, video index, frame index): `plan_video`
draws a video's plan from its own random streams (one per event kind, so enabling one kind
leaves the others' schedules alone) and `degrade_frame` draws a frame's parameters from a
generator seeded with (seed, video, frame). Pure numpy and Pillow; pixel arithmetic is in
integers or IEEE-exact float operations. Every rate defaults to 0: no plan, nothing drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

IMAGE_KINDS: tuple[str, ...] = ("blur", "noise", "dark", "flicker", "jpeg", "dropout")
SCENE_KINDS: tuple[str, ...] = ("occluder", "object_blur", "reentry")
KINDS: tuple[str, ...] = IMAGE_KINDS + SCENE_KINDS


@dataclass(frozen=True)
class DegradationConfig:
    """Rates and strengths of the temporal difficulty (all off by default).

    Ranges are (low, high); a value is drawn uniformly per frame (image kinds) or per
    video (scene events). Lengths and widths are fractions of the shorter image side
    unless stated otherwise.
    """

    # Fraction of the frames after the clean prefix with each image degradation.
    blur_rate: float = 0.0       # motion blur of the whole frame (camera shake)
    noise_rate: float = 0.0      # strong Gaussian sensor noise
    dark_rate: float = 0.0       # under-exposure: low gain, quantisation and read noise
    flicker_rate: float = 0.0    # exposure flicker: over- or under-exposed, banded rows
    jpeg_rate: float = 0.0       # heavy JPEG compression artifacts
    dropout_rate: float = 0.0    # bands of rows zeroed, garbled or smeared
    clean_prefix: int = 2        # first frames of every video that are never degraded
    burst_length: tuple[int, int] = (1, 3)  # frames per burst of one image degradation
    min_clean_gap: int = 2       # clean frames before every burst
    blur_length: tuple[float, float] = (0.08, 0.16)    # motion blur kernel length
    noise_sigma: tuple[float, float] = (30.0, 60.0)    # noise std in 0..255 levels
    dark_gain: tuple[float, float] = (0.08, 0.18)      # brightness factor of dark frames
    dark_noise_sigma: float = 4.0                      # read noise of dark frames
    flicker_gain: tuple[float, float] = (2.0, 4.0)     # x gain (bright) or x 1/gain (dark)
    flicker_banding: float = 0.5                       # amplitude of the row banding
    jpeg_quality: tuple[int, int] = (2, 6)             # Pillow JPEG quality (1..95)
    dropout_fraction: tuple[float, float] = (0.3, 0.6)  # fraction of rows lost
    # Per-video probabilities of the scene events.
    occluder_probability: float = 0.0   # an unlabelled bar crosses the image once
    occluder_width: tuple[float, float] = (0.2, 0.4)   # bar width, fraction of image width
    occluder_frames: tuple[int, int] = (4, 8)  # frames the bar takes to cross the image
    object_blur_probability: float = 0.0  # one object motion-blurred after its glimpse
    object_blur_length: tuple[float, float] = (0.4, 0.8)  # fraction of the object's size
    glimpse_frames: int = 2             # first frames in which that object is sharp
    reentry_probability: float = 0.0    # one object leaves the image and comes back
    reentry_absence: tuple[int, int] = (3, 8)  # frames it stays fully outside
    # Fraction of the videos that get any of the above; the others stay entirely clean (a
    # training mix of clean and degraded videos). 1.0 draws nothing, so every video's plan
    # is the same as without the field.
    video_fraction: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # from YAML
                object.__setattr__(self, f.name, tuple(value))
        rates = [getattr(self, f"{k}_rate") for k in IMAGE_KINDS]
        probabilities = (self.occluder_probability, self.object_blur_probability,
                         self.reentry_probability)
        if min(rates) < 0 or not all(0 <= p <= 1 for p in (*probabilities,
                                                              self.video_fraction)):
            raise ValueError("degradation rates and probabilities must be >= 0 (and <= 1)")
        low, high = self.burst_length
        if not 1 <= low <= high or self.min_clean_gap < 0 or self.clean_prefix < 0:
            raise ValueError("need 1 <= burst_length[0] <= burst_length[1], min_clean_gap "
                             ">= 0 and clean_prefix >= 0")
        mean_burst = (low + high) / 2
        if sum(rates) > mean_burst / (mean_burst + self.min_clean_gap) + 1e-9:
            raise ValueError(f"image degradation rates sum to {sum(rates):.3f}, more than "
                             f"bursts of {self.burst_length} after {self.min_clean_gap} clean "
                             f"frames allow ({mean_burst / (mean_burst + self.min_clean_gap)})")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 95:
            raise ValueError("jpeg_quality must be within 1..95")
        if self.occluder_frames[0] < 1 or self.reentry_absence[0] < 1:
            raise ValueError("occluder_frames and reentry_absence must be >= 1")

    @property
    def image_rate(self) -> float:
        """Total fraction of frames (after the clean prefix) with an image degradation."""
        return float(sum(getattr(self, f"{k}_rate") for k in IMAGE_KINDS))

    @property
    def enabled(self) -> bool:
        """Whether anything at all is degraded."""
        return self.video_fraction > 0 and (self.image_rate > 0 or max(
            self.occluder_probability, self.object_blur_probability,
            self.reentry_probability) > 0)

    @classmethod
    def from_value(cls, value: DegradationConfig | Mapping[str, Any] | str | None
                   ) -> DegradationConfig:
        """A config from itself, a mapping of fields (YAML; with "preset": that preset's
        fields, the others given replacing them), a preset name, or None (off)."""
        if value is None:
            return cls()
        if isinstance(value, DegradationConfig):
            return value
        if isinstance(value, str):
            if value not in PRESETS:
                raise ValueError(f"unknown degradation preset {value!r}: {sorted(PRESETS)}")
            return PRESETS[value]
        if isinstance(value, Mapping):
            value = dict(value)
            base = cls.from_value(str(value.pop("preset"))) if "preset" in value else cls()
            unknown = set(value) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"unknown degradation fields {sorted(unknown)}")
            return replace(base, **value)
        raise TypeError(f"cannot make a DegradationConfig from {type(value).__name__}")

    def only(self, kind: str, rate: float | None = None) -> DegradationConfig:
        """The same strengths with only one kind enabled (at `rate`, default: its own)."""
        if kind not in KINDS:
            raise ValueError(f"unknown degradation kind {kind!r}: {KINDS}")
        off = {f"{k}_rate": 0.0 for k in IMAGE_KINDS}
        off.update({f"{k}_probability": 0.0 for k in SCENE_KINDS})
        name = f"{kind}_rate" if kind in IMAGE_KINDS else f"{kind}_probability"
        off[name] = getattr(self, name) if rate is None else rate
        return replace(self, **off)


# A mix of everything: 36% of the frames after the prefix degraded (6% per image kind),
# an occluder in half of the videos, a blurred object and a re-entry in 30% of them.
DEGRADED_PRESET = DegradationConfig(
    blur_rate=0.06, noise_rate=0.06, dark_rate=0.06, flicker_rate=0.06, jpeg_rate=0.06,
    dropout_rate=0.06, occluder_probability=0.5, object_blur_probability=0.3,
    reentry_probability=0.3)
PRESETS: dict[str, DegradationConfig] = {"none": DegradationConfig(),
                                         "degraded": DEGRADED_PRESET}


@dataclass(frozen=True)
class OccluderPlan:
    """An unlabelled bar crossing the image horizontally, nearest to the camera."""

    enter_frame: int       # frame at which its leading edge is at the image border
    frames: int            # frames from entering to having fully left
    width: float           # fraction of the image width
    from_left: bool
    texture: tuple[float, float, float, float, float]  # (photo, u, v, zoom, shade) in [0, 1)

    def bar_width(self, image_width: int) -> int:
        """Width of the bar in pixels."""
        return max(1, round(self.width * image_width))

    def left(self, t: int, image_width: int) -> int:
        """Left column of the bar at frame t (may lie outside the image)."""
        bar = self.bar_width(image_width)
        travel = (image_width + bar) * (t - self.enter_frame) / self.frames
        return round(-bar + travel) if self.from_left else round(image_width - travel)

    def columns(self, t: int, image_width: int) -> tuple[int, int] | None:
        """Image columns [x0, x1) the bar covers at frame t (None when out of view)."""
        left = self.left(t, image_width)
        x0, x1 = max(left, 0), min(left + self.bar_width(image_width), image_width)
        return (x0, x1) if x1 > x0 else None


@dataclass(frozen=True)
class ObjectBlurPlan:
    """One labelled object motion-blurred in every frame after its first glimpse frames."""

    pick: float      # which eligible object, in [0, 1)
    length: float    # blur length as a fraction of the object's longer side
    angle: float     # blur direction in [0, 1) of a half turn, for objects that stand still


@dataclass(frozen=True)
class ReentryPlan:
    """One labelled object that runs out of the image and comes back."""

    pick: float      # which eligible object, in [0, 1)
    axis: int        # 0: leaves through the left or right border, 1: top or bottom
    direction: int   # +1 towards the right / bottom border, -1 towards the other
    exit_frame: int  # first frame with the object fully outside
    absence: int     # frames fully outside; back from exit_frame + absence on
    start: float     # centre at frame 0 along the axis, fraction of the image size
    across: float    # centre across the axis, fraction of the image size


@dataclass(frozen=True)
class VideoPlan:
    """What is degraded in one video (the generator maps picks onto its objects)."""

    frame_kinds: tuple[str, ...]       # image degradation per frame, "" for none
    occluder: OccluderPlan | None = None
    object_blur: ObjectBlurPlan | None = None
    reentry: ReentryPlan | None = None


def uniform_in(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A float drawn uniformly in [low, high)."""
    return float(rng.uniform(bounds[0], bounds[1]))


def integer_in(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    """An integer drawn uniformly in [low, high]."""
    return int(rng.integers(bounds[0], bounds[1] + 1))


def schedule_bursts(config: DegradationConfig, num_frames: int, rng: np.random.Generator
                    ) -> tuple[str, ...]:
    """Image degradation kind per frame: bursts of one kind after clean gaps (see module)."""
    rates = np.array([getattr(config, f"{k}_rate") for k in IMAGE_KINDS], dtype=np.float64)
    kinds = [""] * num_frames
    total = float(rates.sum())
    if total <= 0:
        return tuple(kinds)
    low, high = config.burst_length
    mean_burst = (low + high) / 2
    extra_gap = max(mean_burst * (1 - total) / total - config.min_clean_gap, 0.0)

    def gap() -> int:  # clean frames between bursts: the minimum plus a geometric extra
        extra = int(rng.geometric(1 / (1 + extra_gap))) - 1 if extra_gap > 0 else 0
        return config.min_clean_gap + extra

    # The prefix stands in for the first gap's minimum; the random extra still applies.
    t = config.clean_prefix + gap() - config.min_clean_gap
    while t < num_frames:
        length = integer_in(rng, config.burst_length)
        kind = IMAGE_KINDS[int(rng.choice(len(IMAGE_KINDS), p=rates / total))]
        kinds[t:t + length] = [kind] * len(kinds[t:t + length])
        t += length + gap()
    return tuple(kinds)


def plan_video(config: DegradationConfig, num_frames: int, seed: int, video_index: int
               ) -> VideoPlan:
    """The degradations of one video; each event kind draws from its own stream (and the
    choice of the clean videos, with video_fraction < 1, from one more)."""

    def stream(k: int) -> np.random.Generator:
        return np.random.default_rng([seed, video_index, 0xDE6, k])

    if config.video_fraction < 1.0 and stream(4).random() >= config.video_fraction:
        return VideoPlan(("",) * num_frames)
    frame_kinds = schedule_bursts(config, num_frames, stream(0))
    occluder = object_blur = reentry = None
    rng = stream(1)
    first = config.clean_prefix
    if rng.random() < config.occluder_probability and num_frames > first:
        occluder = OccluderPlan(
            enter_frame=int(rng.integers(first, max(first + 1, num_frames - 2))),
            frames=integer_in(rng, config.occluder_frames),
            width=uniform_in(rng, config.occluder_width), from_left=bool(rng.random() < 0.5),
            texture=tuple(float(v) for v in rng.random(5)))  # type: ignore[arg-type]
    rng = stream(2)
    if rng.random() < config.object_blur_probability:
        object_blur = ObjectBlurPlan(float(rng.random()),
                                     uniform_in(rng, config.object_blur_length),
                                     float(rng.random()))
    rng = stream(3)
    if rng.random() < config.reentry_probability:
        absence = integer_in(rng, config.reentry_absence)
        latest = min(num_frames // 2, num_frames - absence - 4)
        if latest >= first + 2:
            reentry = ReentryPlan(
                pick=float(rng.random()), axis=int(rng.integers(2)),
                direction=1 if rng.random() < 0.5 else -1,
                exit_frame=int(rng.integers(first + 2, latest + 1)), absence=absence,
                start=uniform_in(rng, (0.35, 0.65)), across=uniform_in(rng, (0.3, 0.7)))
    return VideoPlan(frame_kinds, occluder, object_blur, reentry)


def join_tags(kinds: set[str] | list[str]) -> str:
    """One frame's tag: its kinds in KINDS order joined by '+', '' when clean."""
    return "+".join(k for k in KINDS if k in kinds)


def tag_kinds(tag: str) -> tuple[str, ...]:
    """The kinds of a frame tag ('blur+occluder' -> ('blur', 'occluder'))."""
    return tuple(tag.split("+")) if tag else ()
