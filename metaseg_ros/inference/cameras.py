"""One model for several cameras: a PerceptionPipeline per camera around one set of weights.

    cameras [front, down, ...] -> one runner (weights, backend)
                                  per camera: StreamingSegmenter (its own memory ring),
                                              Tracker (its own tracks; ids from one counter)
    step({front: rgb, down: rgb}) -> {front: TrackedFrame, down: TrackedFrame}

Frames of several cameras given to one `step` run through the network as one batch when
the runner takes a batch (eager PyTorch); exported artifacts (ONNX Runtime, torch.export,
CUDA graphs, TensorRT engines) are fixed at one frame, so they run the frames one after
the other (docs/benchmarks.md compares both). Track ids come from one counter (an id never
names objects of two cameras) or, when asked, from one counter per camera. No ROS here;
torch is imported only for MetaSegmenter (a segmenter plugin runs without it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from metaseg_ros.inference.pipeline import PerceptionPipeline, PipelineInfo
from metaseg_ros.inference.plugin import plugin_pipeline
from metaseg_ros.inference.settings import PipelineSettings, PostprocessSettings
from metaseg_ros.results import FrameDetections, TrackedFrame
from metaseg_ros.tracking import Tracker, TrackIds

Log = Callable[[str], None]
BatchStep = Callable[[Sequence[object], Sequence[np.ndarray]], "list[FrameDetections] | None"]


class CameraPipelines:
    """A pipeline per camera name; `step` segments the frames given together as a batch.

    batching: run frames of several cameras as one batch where the runner allows it
    (False: always one after the other, to compare).
    batch_step: segments one frame per segmenter in one call and returns their detections,
    or None when these segmenters cannot run as a batch (then they run one after the
    other); None for segmenters that never batch (plugins). Given by the builder so that
    this module needs no torch.
    """

    def __init__(self, pipelines: Mapping[str, PerceptionPipeline],
                 ids: Mapping[str, TrackIds], batching: bool = True,
                 batch_step: BatchStep | None = None) -> None:
        if not pipelines:
            raise ValueError("CameraPipelines needs at least one camera")
        self.pipelines = dict(pipelines)
        self.ids = dict(ids)  # camera -> its trackers' id counter (one object when shared)
        self.batching = batching
        self.batch_step = batch_step
        self.last_batch_size = 0

    @property
    def cameras(self) -> tuple[str, ...]:
        """The camera names, in configuration order."""
        return tuple(self.pipelines)

    def __getitem__(self, camera: str) -> PerceptionPipeline:
        return self.pipelines[camera]

    @property
    def info(self) -> PipelineInfo:
        """What runs (the same weights and backend for every camera)."""
        return next(iter(self.pipelines.values())).info

    @property
    def class_names(self) -> Sequence[str]:
        """The model's class names."""
        return next(iter(self.pipelines.values())).class_names

    @property
    def adjustable_postprocess(self) -> bool:
        """Whether post-processing can change while running."""
        return next(iter(self.pipelines.values())).adjustable_postprocess

    @property
    def next_track_ids(self) -> dict[str, int]:
        """Per camera, the id its next confirmed track gets (the same for all cameras when
        they share one counter)."""
        return {camera: ids.next_id for camera, ids in self.ids.items()}

    def set_postprocess(self, settings: PostprocessSettings) -> None:
        """New post-processing settings for every camera."""
        for pipeline in self.pipelines.values():
            pipeline.set_postprocess(settings)

    def backend_fell_back(self, backend: str, reason: str) -> None:
        """The shared runner switched to `backend`: every camera's memory starts empty in the
        new runner's form (frames in flight get theirs from its output); tracks continue."""
        for pipeline in self.pipelines.values():
            pipeline.segmenter.reset()
            pipeline.backend_fell_back(backend, reason)

    def reset(self, cause: str = "requested", cameras: Sequence[str] | None = None) -> None:
        """Forget the memory and tracks of `cameras` (default: all); ids keep increasing."""
        for camera in self.cameras if cameras is None else cameras:
            self.pipelines[camera].reset(cause)

    def step(self, frames: Mapping[str, np.ndarray]) -> dict[str, TrackedFrame]:
        """Segment and track one (H, W, 3) uint8 RGB frame per camera given."""
        cameras = list(frames)
        for camera in cameras:
            rgb = frames[camera]
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"camera {camera}: expected an (H, W, 3) uint8 RGB frame, got "
                                 f"{rgb.shape} {rgb.dtype}")
        detections = None
        start = time.perf_counter()
        if self.batching and self.batch_step is not None and len(cameras) > 1:
            detections = self.batch_step([self.pipelines[c].segmenter for c in cameras],
                                         [frames[c] for c in cameras])
        if detections is None:
            self.last_batch_size = 1
            return {camera: self.pipelines[camera].step(frames[camera]) for camera in cameras}
        elapsed_ms = (time.perf_counter() - start) * 1e3
        self.last_batch_size = len(cameras)
        return {camera: self.pipelines[camera].track(found, elapsed_ms)
                for camera, found in zip(cameras, detections, strict=True)}


def camera_id_counters(cameras: Sequence[str], per_camera: bool,
                       first_ids: Mapping[str, int] | None = None) -> dict[str, TrackIds]:
    """The id counter of each camera's tracker: one shared by all (an id never names
    objects of two cameras), or one per camera (each counts on its own, so the same id may
    appear in two cameras; the topic and frame_id tell them apart). first_ids: where each
    camera's counter continues (a pipeline rebuilt in the same process); missing: 1."""
    first_ids = first_ids or {}
    if per_camera:
        return {camera: TrackIds(first_ids.get(camera, 1)) for camera in cameras}
    shared = TrackIds(max((first_ids.get(camera, 1) for camera in cameras), default=1))
    return {camera: shared for camera in cameras}


def create_camera_pipelines(settings: PipelineSettings, cameras: Sequence[str],
                            log: Log = print, first_ids: Mapping[str, int] | None = None,
                            batching: bool = True, ids_per_camera: bool = False
                            ) -> CameraPipelines:
    """One pipeline per camera: MetaSegmenter's weights and backend loaded once (builder),
    or the segmenter plugin made once per camera; trackers sharing one id counter, or each
    camera its own with `ids_per_camera` (camera_id_counters)."""
    if not cameras or len(set(cameras)) != len(cameras):
        raise ValueError(f"cameras must be distinct names, got {list(cameras)}")
    ids = camera_id_counters(cameras, ids_per_camera, first_ids)
    if settings.model.segmenter:
        return CameraPipelines({camera: plugin_pipeline(settings, ids=ids[camera])
                                for camera in cameras}, ids, batching)
    from metaseg_ros.inference.builder import create_segmenter
    from metaseg_ros.inference.segmenter import StreamingSegmenter, step_batch_if_possible

    pipelines: dict[str, PerceptionPipeline] = {}
    cameras_pipelines: list[CameraPipelines] = []

    def fell_back(backend: str, reason: str) -> None:  # the shared runner switched, later
        cameras_pipelines[0].backend_fell_back(backend, reason)

    first, info = create_segmenter(settings, log=log, on_fallback=fell_back)
    for index, camera in enumerate(cameras):
        segmenter = first if index == 0 else \
            StreamingSegmenter(first.runner, settings.postprocess)
        tracker = Tracker(settings.tracker, class_names=segmenter.class_names, ids=ids[camera])
        pipelines[camera] = PerceptionPipeline(segmenter, tracker, info,
                                               set_postprocess=segmenter.set_postprocess)
    cameras_pipelines.append(CameraPipelines(pipelines, ids, batching,
                                             step_batch_if_possible))
    return cameras_pipelines[0]
