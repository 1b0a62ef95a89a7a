"""Offline replay of bags through the node's own pipeline: results bag, metrics, report.

For each bag (one video), every image of the image topic goes through the decoding the
node does (metaseg_ros.image_codec), `PerceptionPipeline.step` (the node's per-frame code,
built by the same builder from the same settings) and the node's message content
(metaseg_ros.message_content), and is written to a results bag at the input's log time
(eval/results_bag.py). With ground truth (an InstanceMaskArray topic of the bag, DAVIS
PNGs or a YouTube-VIS JSON) the annotated frames are scored with eval/scoring.py. Every
stage of every frame is timed; the report (eval/report.py) plots them.

Output (``OUT``): ``results/`` (or ``results/<bag>/`` for a directory of bags),
``overlay.mp4`` (``overlay/<bag>.mp4``; .gif without an H.264 encoder), ``report.json``,
``report.html``. A `stop` event (Ctrl-C in metaseg-replay) ends the replay after the frame
in progress: the bags are closed and the report covers the frames processed.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metaseg_ros.data.bag_access import BagReader
from metaseg_ros.data.bag_format import find_bags, stamp_ns
from metaseg_ros.data.bag_frames import BagFrame, bag_frames, image_topic_of
from metaseg_ros.data.frame_truth import (
    BagTopicTruth,
    DavisTruth,
    FrameTruth,
    YouTubeVisTruth,
    check_size,
)
from metaseg_ros.data.types import ClassMapper
from metaseg_ros.data.video_io import VideoWriter
from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.eval.results_bag import ResultsBagWriter
from metaseg_ros.eval.scoring import ScoredVideo, Scores, per_class_ap, score_videos
from metaseg_ros.image_codec import ImageConversionError
from metaseg_ros.inference.pipeline import PerceptionPipeline
from metaseg_ros.inference.stream import StreamGuard, StreamSettings
from metaseg_ros.message_content import overlay_image

Log = Callable[[str], None]


@dataclass(frozen=True)
class ReplayOptions:
    """What to read, what to write. Times in seconds from the first image of each bag."""

    image_topic: str | None = None
    gt_topic: str | None = None
    gt_ytvis: str | None = None
    gt_davis: str | None = None
    gt_class: str = "object"
    class_mapping: str | None = None
    max_frames: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    realtime: bool = False
    write_images: bool = True
    labels: bool = False
    overlay_topic: bool = False
    video: bool = True
    storage: str = "mcap"
    namespace: str = ""
    progress: bool = True
    label_encoding: str = "16UC1"  # of instance_labels, as the node's parameter
    # When a frame starts a new stream (stamp backwards, a jump, another frame_id or size):
    # the node's rule (inference/stream.py), so a looped bag resets as it does on the robot.
    stream: StreamSettings = field(default_factory=StreamSettings)

    def __post_init__(self) -> None:
        if sum(bool(x) for x in (self.gt_topic, self.gt_ytvis, self.gt_davis)) > 1:
            raise ValueError("give one ground truth: --gt-topic, --gt-ytvis or --gt-davis")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"--end ({self.end_s}) must be after --start ({self.start_s})")


@dataclass
class FrameRecord:
    """One processed frame: where it is, how long each stage took, what was published."""

    index: int
    stamp_ns: int
    log_time: int
    timings_ms: dict[str, float]
    instances: list[dict] = field(default_factory=list)
    annotated: bool = False


@dataclass
class VideoRecord:
    """One replayed bag."""

    name: str
    bag: Path
    image_topic: str
    image_type: str
    results: Path
    video: Path | None = None
    frames: list[FrameRecord] = field(default_factory=list)
    dropped: int = 0
    truth: str = ""
    scored: ScoredVideo | None = None
    unmapped_objects: int = 0
    recovered: int | None = None
    stream_resets: dict[str, int] = field(default_factory=dict)
    # Overlays shown in the report: the first frame and the one with the most instances.
    samples: dict[str, np.ndarray] = field(default_factory=dict)

    def keep_sample(self, overlay: np.ndarray, instances: int) -> None:
        """Keep the overlay if it is the first frame's or has the most instances so far."""
        if not self.frames:
            self.samples["first frame"] = overlay
        best = max((len(f.instances) for f in self.frames), default=-1)
        if instances > best:
            self.samples["most instances"] = overlay


@dataclass
class ReplayResult:
    """Every video's records, the scores when there was ground truth, the wall time."""

    videos: list[VideoRecord]
    pipeline: str
    class_names: tuple[str, ...]
    scores: Scores | None = None
    per_class_ap: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    wall_s: float = 0.0
    scoring_ms: float = 0.0

    @property
    def num_frames(self) -> int:
        """Frames processed over all videos."""
        return sum(len(v.frames) for v in self.videos)


def output_paths(output: Path, names: list[str]) -> list[tuple[Path, Path]]:
    """(results bag, overlay video) of each video."""
    if len(names) == 1:
        return [(output / "results", output / "overlay.mp4")]
    return [(output / "results" / n, output / "overlay" / f"{n}.mp4") for n in names]


def _truth(reader: BagReader, name: str, options: ReplayOptions) -> tuple[FrameTruth | None, str]:
    if options.gt_topic:
        return BagTopicTruth(reader, options.gt_topic), f"topic {options.gt_topic}"
    if options.gt_davis:
        return DavisTruth(options.gt_davis, name, options.gt_class), f"DAVIS {options.gt_davis}"
    if options.gt_ytvis:
        return YouTubeVisTruth(options.gt_ytvis, name), f"YouTube-VIS {options.gt_ytvis}"
    return None, ""


class _Timed:
    """Iterates and times each `next` (the time to read and deserialize a message)."""

    def __init__(self, frames: Iterator[BagFrame]) -> None:
        self._frames = frames
        self.last_ms = 0.0

    def __iter__(self) -> Iterator[BagFrame]:
        while True:
            started = time.perf_counter()
            try:
                frame = next(self._frames)
            except StopIteration:
                return
            self.last_ms = (time.perf_counter() - started) * 1e3
            yield frame


def replay(source: str | Path, output: str | Path, pipeline: PerceptionPipeline,
           options: ReplayOptions | None = None, stop: threading.Event | None = None,
           log: Log = print) -> ReplayResult:
    """Replay every bag at `source` through `pipeline` into `output` (see module doc)."""
    options = options or ReplayOptions()
    output = Path(output)
    bags = find_bags(source)
    names = [b.stem if b.is_file() else b.name for b in bags]
    if (output / "results").exists():
        raise FileExistsError(f"{output / 'results'} already exists; choose another --output "
                              f"or remove it")
    mapper = ClassMapper.from_file(options.class_mapping, pipeline.class_names)
    result = ReplayResult([], pipeline.info.description, tuple(pipeline.class_names))
    started = time.perf_counter()
    for bag, name, (results, video_path) in zip(bags, names, output_paths(output, names),
                                                strict=True):
        try:
            with BagReader(bag) as reader:
                record = _replay_bag(reader, name, results, video_path, pipeline, mapper,
                                     options, stop, log)
        except Exception:  # no half-written results left to block the next attempt
            shutil.rmtree(results, ignore_errors=True)
            for path in (video_path, video_path.with_suffix(".gif")):
                path.unlink(missing_ok=True)
            raise
        result.videos.append(record)
        if stop is not None and stop.is_set():
            result.interrupted = True
            break
    scored = [v.scored for v in result.videos if v.scored is not None and v.scored.ground_truth]
    if scored:
        scoring_started = time.perf_counter()
        result.scores = score_videos(scored, len(pipeline.class_names))
        result.per_class_ap = per_class_ap(scored, pipeline.class_names)
        result.scoring_ms = (time.perf_counter() - scoring_started) * 1e3
    elif any(v.truth for v in result.videos):
        log("replay: no frame of the ground truth matched an image; no accuracy metrics")
    result.wall_s = time.perf_counter() - started
    return result


def _replay_bag(reader: BagReader, name: str, results: Path, video_path: Path,
                pipeline: PerceptionPipeline, mapper: ClassMapper, options: ReplayOptions,
                stop: threading.Event | None, log: Log) -> VideoRecord:
    from tqdm import tqdm

    topic = image_topic_of(reader, options.image_topic)
    if topic.count == 0:
        raise ValueError(f"{reader.path}: no messages on {topic.name}; the bag has: "
                         f"{reader.describe()}")
    truth, truth_kind = _truth(reader, name, options)
    record = VideoRecord(name, reader.path, topic.name, topic.msgtype, results,
                         truth=truth_kind, recovered=reader.recovered)
    if truth is not None:
        record.scored = ScoredVideo()
    pipeline.reset()
    guard = StreamGuard(options.stream)
    video = VideoWriter(video_path, 10.0) if options.video else None
    total = min(topic.count, options.max_frames or topic.count)
    frames = _Timed(bag_frames(reader, topic, options.start_s, options.end_s, options.max_frames))
    paced_from: tuple[float, int] | None = None
    with ResultsBagWriter(results, options.storage, options.namespace,
                          topic.name if options.write_images else None, topic.msgtype,
                          options.labels, options.overlay_topic,
                          options.label_encoding) as writer, \
            tqdm(total=total, unit="frame", desc=name, disable=not options.progress,
                 dynamic_ncols=True) as progress:
        for frame in frames:
            if stop is not None and stop.is_set():
                break
            if options.realtime:
                paced_from = _pace(paced_from, frame.log_time)
            timings = {"read": frames.last_ms}
            clock = time.perf_counter()
            try:
                rgb = frame.rgb()
            except ImageConversionError as error:
                if not record.frames and not record.dropped:
                    raise ValueError(f"{reader.path}: cannot decode the first image of "
                                     f"{topic.name}: {error}") from error
                record.dropped += 1
                log(f"replay: dropped image {frame.index} of {topic.name}: {error}")
                continue
            clock = _lap(timings, "decode", clock)
            stamp = stamp_ns(frame.header)
            cause = guard.check(stamp, frame.header.frame_id, rgb.shape[:2])
            if cause is not None:  # as the node does: memory and tracks start again
                pipeline.reset(cause.value)
                record.stream_resets[cause.value] = record.stream_resets.get(cause.value, 0) + 1
                log(f"replay: new stream at image {frame.index} ({cause.value}): model memory "
                    f"and tracks reset")
            tracked = pipeline.step(rgb)
            timings.update(tracked.timings_ms)
            clock = time.perf_counter()
            overlay = overlay_image(rgb, tracked) if video or options.overlay_topic else None
            clock = _lap(timings, "overlay", clock)
            writer.write(frame.log_time, frame.header, tracked,
                         frame.raw if options.write_images else None, overlay)
            clock = _lap(timings, "bag", clock)
            if video is not None:
                if not record.frames and topic.count > 1:
                    video.frame_rate = _frame_rate(reader, topic.name)
                video.write(overlay)
                clock = _lap(timings, "video", clock)
            if overlay is not None:
                record.keep_sample(overlay, len(tracked.instances))
            annotated = False
            if truth is not None:
                annotated = _score_frame(truth, frame, stamp, rgb.shape[:2], tracked, mapper,
                                         record)
                clock = _lap(timings, "truth", clock)
            record.frames.append(FrameRecord(
                frame.index, stamp, frame.log_time, timings,
                [{"track_id": int(i.track_id), "class_id": int(i.class_id),
                  "class_name": i.class_name, "score": round(float(i.score), 4)}
                 for i in tracked.instances], annotated))
            progress.update()
    if video is not None:
        record.video = video.close()
    if not record.frames:
        log(f"replay: {reader.path}: no frame in the chosen window")
    return record


def _lap(timings: dict[str, float], stage: str, since: float) -> float:
    now = time.perf_counter()
    timings[stage] = (now - since) * 1e3
    return now


def _pace(origin: tuple[float, int] | None, log_time: int) -> tuple[float, int]:
    """Sleep until the frame's recorded time, counted from the first paced frame."""
    if origin is None:
        return time.monotonic(), log_time
    wait = origin[0] + (log_time - origin[1]) / 1e9 - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    return origin


def _frame_rate(reader: BagReader, topic: str) -> float:
    """Frames per second of a topic from its first two log times (10 when unknown)."""
    times = []
    for raw in reader.messages([topic]):
        times.append(raw.log_time)
        if len(times) == 2:
            break
    if len(times) < 2 or times[1] <= times[0]:
        return 10.0
    return min(max(1e9 / (times[1] - times[0]), 0.5), 120.0)


def _score_frame(truth: FrameTruth, frame: BagFrame, stamp: int, size: tuple[int, int],
                 tracked, mapper: ClassMapper, record: VideoRecord) -> bool:
    objects = truth.objects(frame.index, stamp)
    if objects is None or record.scored is None:
        return False
    check_size(objects, size[0], size[1], f"{record.bag} image {frame.index} (stamp {stamp} ns)")
    kept = [(o, mapper.class_id(o.class_name)) for o in objects]
    record.unmapped_objects += sum(c is None for _, c in kept)
    kept = [(o, c) for o, c in kept if c is not None]
    record.scored.add(
        FrameObjects.from_masks([o.instance_id for o, _ in kept], [o.mask for o, _ in kept],
                                class_ids=[c for _, c in kept]),
        FrameObjects.from_tracked(tracked.instances), size)
    return True
