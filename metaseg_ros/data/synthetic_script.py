"""Motion scripts of the synthetic videos, and the scripted events of their degradations.

A `VideoScript` says where every object is at every frame (`ObjectScript`: centre, size,
bouncing bounds); the generator (synthetic.py) draws it and renders it. The functions
below apply a `VideoPlan` (degradations.py) to a script: which object leaves and comes
back, and how, and which object is blurred after its glimpse frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from metaseg_ros.data.degradations import ObjectBlurPlan, ReentryPlan, VideoPlan


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
    plan: VideoPlan | None = None  # degradations of this video (None: none)

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


def reentry_target(objects: Sequence[ObjectScript], plan: ReentryPlan) -> ObjectScript:
    """The labelled object that leaves and comes back: the plan's pick among those that are
    not in the scripted pass-behind occlusion (those have no bounds)."""
    labelled = sorted((o for o in objects if not o.is_clutter), key=lambda o: o.instance_id)
    free = [o for o in labelled if o.bounds is not None] or labelled
    return free[int(plan.pick * len(free))]


def script_reentry(objects: Sequence[ObjectScript], plan: ReentryPlan,
                   image_size: tuple[int, int]) -> list[ObjectScript]:
    """Send one object out through a border (fully outside from plan.exit_frame on), turn
    it round outside and bring it back at exit_frame + absence, in front of everything."""
    target = reentry_target(objects, plan)
    height, width = image_size
    extent, across = (width, height) if plan.axis == 0 else (height, width)
    half = 0.5 * target.size0 * max(1.0, target.size_ratio) + 1.0
    position = plan.start * extent
    to_outside = extent + half - position if plan.direction > 0 else position + half
    speed = to_outside / plan.exit_frame
    turn = position + plan.direction * (to_outside + speed * plan.absence / 2)
    low, high = (-1e6, turn) if plan.direction > 0 else (turn, 1e6)
    if plan.axis == 0:
        start, velocity = (position, plan.across * across), (plan.direction * speed, 0.0)
        bounds = (low, high, -1e6, 1e6)
    else:
        start, velocity = (plan.across * across, position), (0.0, plan.direction * speed)
        bounds = (-1e6, 1e6, low, high)
    moved = replace(target, depth=max(o.depth for o in objects) + 2, start=start,
                    velocity=velocity, bounds=bounds)
    return [moved if o is target else o for o in objects]


def object_blur_target(script: VideoScript, plan: ObjectBlurPlan, glimpse_frames: int,
                       image_size: tuple[int, int]) -> ObjectScript | None:
    """The object blurred after its glimpse: the plan's pick among the labelled objects
    whose centre is inside the image (10% inset) in the glimpse frames, other than the one
    that leaves and comes back (None if there is none)."""
    height, width = image_size
    reentry = script.plan.reentry if script.plan is not None else None
    avoid = reentry_target(script.objects, reentry).instance_id if reentry else -1
    frames = range(max(glimpse_frames, 1))
    eligible = [o for o in script.labelled if o.instance_id != avoid and all(
        0.1 * width <= o.centre_at(t)[0] <= 0.9 * width
        and 0.1 * height <= o.centre_at(t)[1] <= 0.9 * height for t in frames)]
    return eligible[int(plan.pick * len(eligible))] if eligible else None
