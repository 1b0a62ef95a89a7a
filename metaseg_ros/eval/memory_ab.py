"""Memory on vs memory off, same weights and tracker: runs and scores for the A/B benchmarks.

"Memory off" is the same segmenter with its memory emptied before every frame
(`MemorylessSegmenter`), so each frame's detections depend on that frame alone; the
tracker is the same in both. `run_videos` sends every video of a source through the online
pipeline (segmenter + a fresh Tracker per video) and keeps ground truth, predictions, J&F
and each frame's degradation tags; `split_scores` turns a run into whole-video video AP,
J&F, J&F on the degraded frames (tag not empty), IDF1 and ID switches.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from metaseg_ros.data.degradations import (
    DEGRADED_PRESET,
    IMAGE_KINDS,
    DegradationConfig,
    tag_kinds,
)
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.data.types import ClipSample, VideoSource
from metaseg_ros.eval.davis import JAndF, davis_j_and_f
from metaseg_ros.eval.evaluate import ground_truth_frames
from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.eval.mot import mot_metrics_combined
from metaseg_ros.eval.subsets import j_and_f_on_frames, video_ap_on_frames
from metaseg_ros.inference.pipeline import PerceptionPipeline
from metaseg_ros.results import FrameDetections, Segmenter
from metaseg_ros.tracking import Tracker, TrackerConfig

SPLIT_DEGRADATIONS = {"clean": DegradationConfig(), "degraded": DEGRADED_PRESET}


def held_out_split(split: str, image_size: tuple[int, int], class_names: Sequence[str],
                   videos: int, frames: int, first_video: int, seed: int = 0
                   ) -> SyntheticVideoSource:
    """The synthetic videos of one A/B split ("clean": no degradation; "degraded":
    DEGRADED_PRESET) at a model's input size and classes."""
    return SyntheticVideoSource(videos, SyntheticConfig(
        image_size=tuple(image_size), num_frames=frames, class_names=tuple(class_names),
        degradations=SPLIT_DEGRADATIONS[split]), seed=seed, first_video=first_video)


def add_split_arguments(parser: argparse.ArgumentParser, splits: Sequence[str]) -> None:
    """The held-out split options the A/B scripts share (`splits`: the default)."""
    parser.add_argument("--splits", nargs="+", default=list(splits),
                        choices=list(SPLIT_DEGRADATIONS))
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--clean-first-video", type=int, default=100_000)
    parser.add_argument("--degraded-first-video", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=24)


def split_from_arguments(args: argparse.Namespace, split: str, image_size: tuple[int, int],
                         class_names: Sequence[str]) -> SyntheticVideoSource:
    """held_out_split with the options of add_split_arguments."""
    first_video = {"clean": args.clean_first_video,
                   "degraded": args.degraded_first_video}[split]
    return held_out_split(split, image_size, class_names, args.videos, args.frames,
                          first_video, args.seed)


class MemorylessSegmenter:
    """A segmenter with its memory emptied before every frame. With cache=True, the
    detections of a frame seen before (same pixels) are reused: they depend on that frame
    alone (clear `cache` between videos to bound it)."""

    def __init__(self, inner: Segmenter, cache: bool = False) -> None:
        self.inner = inner
        self.use_cache = cache
        self.cache: dict[bytes, FrameDetections] = {}

    @property
    def class_names(self) -> Sequence[str]:
        """The wrapped segmenter's classes."""
        return self.inner.class_names

    def step(self, image: np.ndarray) -> FrameDetections:
        """Reset the memory, then segment the frame (or reuse its cached detections)."""
        if not self.use_cache:
            self.inner.reset()
            return self.inner.step(image)
        key = hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest()
        if key not in self.cache:
            self.inner.reset()
            self.cache[key] = self.inner.step(image)
        return self.cache[key]

    def reset(self) -> None:
        """Empty the wrapped segmenter's memory."""
        self.inner.reset()


@dataclass
class Run:
    """Per video: ground truth, predictions, J&F over the whole video, frame tags."""

    gt: list[list[FrameObjects]] = field(default_factory=list)
    pred: list[list[FrameObjects]] = field(default_factory=list)
    davis: list[JAndF | None] = field(default_factory=list)
    tags: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, gt: list[FrameObjects], pred: list[FrameObjects], tags: Sequence[str],
            size: tuple[int, int]) -> None:
        """Record one video (J&F with Hungarian assignment over the whole video)."""
        self.gt.append(gt)
        self.pred.append(pred)
        self.tags.append(tuple(tags) or ("",) * len(gt))
        self.davis.append(davis_j_and_f(gt, pred, size, match="hungarian")
                          if any(len(f) for f in gt) else None)


def track_video(segmenter: Segmenter, frames: Sequence[np.ndarray],
                tracker_config: TrackerConfig | None = None) -> list[FrameObjects]:
    """One video through a fresh pipeline (segmenter memory emptied, new Tracker)."""
    segmenter.reset()
    pipeline = PerceptionPipeline(segmenter, Tracker(tracker_config or TrackerConfig(),
                                                     segmenter.class_names))
    return [FrameObjects.from_tracked(pipeline.step(frame).instances) for frame in frames]


def run_videos(segmenters: dict[str, Segmenter], source: VideoSource, videos: int,
               tracker_config: TrackerConfig | None = None,
               frames_of: Callable[[ClipSample], Sequence[np.ndarray]] | None = None
               ) -> dict[str, Run]:
    """Every segmenter (by name) over the first `videos` videos of a source; `frames_of`
    chooses what each video shows the segmenters (default: its frames as they are), the
    ground truth and tags stay the clip's."""
    runs = {name: Run() for name in segmenters}
    for index in range(min(videos, len(source))):
        clip = source.load_clip(index, range(source.num_frames(index)))
        gt = ground_truth_frames(clip)
        size = clip.frames.shape[1:3]
        frames = clip.frames if frames_of is None else frames_of(clip)
        for name, segmenter in segmenters.items():
            if isinstance(segmenter, MemorylessSegmenter):
                segmenter.cache.clear()
            pred = track_video(segmenter, frames, tracker_config)
            runs[name].add(gt, pred, clip.frame_tags, (int(size[0]), int(size[1])))
    return runs


@dataclass(frozen=True)
class SubsetScores:
    """Video AP, AP50 and J&F on chosen frames; frames: how many were chosen."""

    ap: float
    ap50: float
    j_and_f: float
    frames: int


def subset_scores(run: Run, selections: Sequence[Sequence[int]], num_classes: int
                  ) -> SubsetScores:
    """Scores on the selected frames of each video (NaN where nothing is selected)."""
    vis = video_ap_on_frames(run.gt, run.pred, selections, num_classes)
    values = [j_and_f_on_frames(d, gt, chosen) for d, gt, chosen in
              zip(run.davis, run.gt, selections, strict=True) if d is not None and len(chosen)]
    values = [v[0] for v in values if v is not None]
    count = sum(len(s) for s in selections)
    if vis is None:
        return SubsetScores(float("nan"), float("nan"), float("nan"), 0)
    return SubsetScores(vis.ap, vis.ap50, float(np.mean(values)) if values else float("nan"),
                        count)


def degraded_frames(tags: Sequence[Sequence[str]]) -> list[list[int]]:
    """Per video, the indices of frames with any degradation tag."""
    return [[t for t, tag in enumerate(video) if tag] for video in tags]


@dataclass(frozen=True)
class SplitScores:
    """Whole-video scores of a run, plus J&F on its degraded frames (NaN if none)."""

    video_ap: float
    ap50: float
    j_and_f: float
    j_and_f_degraded: float
    degraded_frames: int
    idf1: float
    id_switches: int


def split_scores(run: Run, num_classes: int, degraded: Sequence[Sequence[int]] | None = None
                 ) -> SplitScores:
    """Scores of a run; `degraded` (default: the run's own tags) chooses the frames of the
    degraded-frame J&F."""
    whole = subset_scores(run, [range(len(gt)) for gt in run.gt], num_classes)
    chosen = degraded_frames(run.tags) if degraded is None else degraded
    on_degraded = subset_scores(run, chosen, num_classes)
    mot = mot_metrics_combined(list(zip(run.gt, run.pred, strict=True)), similarity="mask")
    return SplitScores(whole.ap, whole.ap50, whole.j_and_f, on_degraded.j_and_f,
                       on_degraded.frames, mot.idf1, int(mot.id_switches))


# SplitScores fields in the A/B tables, and their header cells.
SCORE_COLUMNS = ("video_ap", "ap50", "j_and_f", "j_and_f_degraded", "idf1", "id_switches")
SCORE_HEADER = "video AP | AP50 | J&F | J&F degraded frames | IDF1 | ID switches"


def score_cells(scores: SplitScores) -> list[str]:
    """The SCORE_COLUMNS of `scores` as table cells: counts as they are, NaN (no degraded
    frames) as "-", other values to three decimals."""
    return [table_cell(getattr(scores, column)) for column in SCORE_COLUMNS]


def table_cell(value: float, signed: bool = False) -> str:
    """One table cell: a count whole, NaN as "-", other values to three decimals; with
    `signed`, a sign in front of each number."""
    sign = "+" if signed else ""
    if isinstance(value, int):
        return f"{value:{sign}d}"
    return "-" if math.isnan(value) else f"{value:{sign}.3f}"


def score_differences(on: SplitScores, off: SplitScores) -> dict[str, float]:
    """on minus off for every SCORE_COLUMNS field (ID switches stay whole numbers)."""
    return {column: getattr(on, column) - getattr(off, column) for column in SCORE_COLUMNS}


def mean_differences(blocks: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of each column's differences over blocks of videos, ID switches summed
    (a count over all the blocks); a column that is NaN in some block is NaN."""
    if not blocks:
        raise ValueError("no blocks to average")
    return {column: sum(block[column] for block in blocks) if column == "id_switches"
            else float(np.mean([block[column] for block in blocks]))
            for column in SCORE_COLUMNS}


def difference_cells(differences: dict[str, float]) -> list[str]:
    """Differences as signed table cells (table_cell), in SCORE_COLUMNS order."""
    return [table_cell(differences[column], signed=True) for column in SCORE_COLUMNS]


def hold_last_good(frames: Sequence[np.ndarray], tags: Sequence[str]) -> list[np.ndarray]:
    """The frames with each image-degraded one (by its tag) replaced by the last frame
    before it without an image degradation; kept as it is when there is none yet. Scene
    events (occluder, object blur, re-entry) do not count: they are the scene, not the
    image. An oracle for scripts/bench_hold_last_good.py: the node cannot read tags."""
    held, last_good = [], None
    for frame, tag in zip(frames, tags, strict=True):
        damaged = any(kind in IMAGE_KINDS for kind in tag_kinds(tag))
        if not damaged:
            last_good = frame
        held.append(last_good if damaged and last_good is not None else frame)
    return held
