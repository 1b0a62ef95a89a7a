"""StreamingSegmenter: the stateful `step(image) -> FrameDetections` around the network.

It owns the temporal memory (the network's MemoryState ring, fed back every frame), the
letterboxing and the post-processing. The network itself runs behind a `ModelRunner`
(inference/runner.py; eager PyTorch, ONNX Runtime, a torch.export program or
Torch-TensorRT), all with the same functional signature `(images, memory) -> NetworkOutput`.
inference/builder.py makes one from settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from metaseg_ros.inference.postprocess import select_instances
from metaseg_ros.inference.preprocess import Letterbox, letterbox_image
from metaseg_ros.inference.runner import ModelRunner
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import NetworkOutput
from metaseg_ros.results import FrameDetections


class StreamingSegmenter:
    """Video instance segmentation of a stream, frame by frame, with the network's memory
    carried from each frame to the next (implements metaseg_ros.results.Segmenter).

    Frames are letterboxed where the network runs when that is a GPU (the uint8 frame is
    uploaded, a quarter of the float input's bytes), on the CPU otherwise
    (`letterbox_on_gpu` False forces the CPU). The runner's device is read at every step:
    a runner that falls back to another device (runners/fallback.py) is followed.
    """

    def __init__(self, runner: ModelRunner, settings: PostprocessSettings | None = None) -> None:
        self.runner = runner
        self.config = runner.config
        self.settings = settings or PostprocessSettings()
        self._memory = runner.initial_memory()
        self.frames_since_reset = 0
        self.letterbox_on_gpu = True

    @property
    def preprocess_device(self) -> torch.device | None:
        """Where the next frame is letterboxed (None: the CPU)."""
        device = self.runner.device
        return device if device.type == "cuda" and self.letterbox_on_gpu else None

    @property
    def class_names(self) -> Sequence[str]:
        """The checkpoint's class names, indexed by class id."""
        return self.config.class_names

    def step(self, image: np.ndarray) -> FrameDetections:
        """Segment one (H, W, 3) uint8 RGB frame and advance the memory."""
        images, letterbox = self.prepare(image)
        output = self.runner(images, self._memory)
        return self.finish(output, letterbox)

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, Letterbox]:
        """The network input of one frame (1, 3, S, S) and how it was letterboxed."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        return letterbox_image(image, self.config.image_size, self.config.pixel_mean,
                               self.preprocess_device)

    @property
    def memory(self) -> MemoryState:
        """The memory ring the next frame is segmented with (batch of one)."""
        return self._memory

    def finish(self, output: NetworkOutput, letterbox: Letterbox) -> FrameDetections:
        """This frame's instances from the network's output (batch of one), and the new
        memory kept for the next frame."""
        # Read after the call: a runner that fell back restarted from an empty memory.
        memory_fill = min(self.frames_since_reset, self.config.memory_frames)
        self._memory = output.memory
        self.frames_since_reset += 1
        # Post-processing runs where the outputs are (the GPU for eager/exported on CUDA).
        detections = select_instances(output.class_logits[0], output.mask_logits[0],
                                      output.query_embeddings[0], letterbox, self.settings)
        return dataclasses.replace(detections, memory_fill=memory_fill)

    def restart_memory(self) -> None:
        """Count the memory as empty from now on: the runner started a new one itself
        (after falling back to another backend)."""
        self.frames_since_reset = 0

    def reset(self) -> None:
        """Empty the memory ring (a new video starts)."""
        self._memory = self.runner.initial_memory()
        self.frames_since_reset = 0

    def set_postprocess(self, settings: PostprocessSettings) -> None:
        """Use new thresholds from the next frame on (they were validated when made)."""
        self.settings = settings


def step_batch(segmenters: Sequence[StreamingSegmenter], images: Sequence[np.ndarray]
               ) -> list[FrameDetections]:
    """One frame for each segmenter (each its own camera and memory) through their shared
    runner in one call: the inputs and memories stacked along the batch, the outputs split.
    The runner must take a batch (runner_takes_batch)."""
    runner = segmenters[0].runner
    if any(segmenter.runner is not runner for segmenter in segmenters):
        raise ValueError("step_batch needs segmenters that share one runner")
    prepared = [segmenter.prepare(image) for segmenter, image in
                zip(segmenters, images, strict=True)]
    batch = torch.cat([inputs for inputs, _ in prepared])
    memory = MemoryState(*(torch.cat(parts) for parts in
                           zip(*(segmenter.memory for segmenter in segmenters), strict=True)))
    output = runner(batch, memory)
    detections = []
    for index, (segmenter, (_, letterbox)) in enumerate(zip(segmenters, prepared, strict=True)):
        part = slice(index, index + 1)
        single = NetworkOutput(output.class_logits[part], output.mask_logits[part],
                               output.query_embeddings[part],
                               MemoryState(*(t[part] for t in output.memory)))
        detections.append(segmenter.finish(single, letterbox))
    return detections


def runner_takes_batch(runner: ModelRunner) -> bool:
    """Whether a runner takes several frames in one call (eager PyTorch does; exported
    programs, ONNX Runtime, CUDA graphs and TensorRT engines are fixed at one frame)."""
    return bool(getattr(runner, "takes_batch", False))


def step_batch_if_possible(segmenters: Sequence[object], images: Sequence[np.ndarray]
                           ) -> list[FrameDetections] | None:
    """step_batch when the segmenters are StreamingSegmenters sharing one runner that takes a
    batch (checked at every call: a fallback may swap the runner); None otherwise."""
    if not all(isinstance(segmenter, StreamingSegmenter) for segmenter in segmenters):
        return None
    runner = segmenters[0].runner
    if any(segmenter.runner is not runner for segmenter in segmenters) \
            or not runner_takes_batch(runner):
        return None
    return step_batch(segmenters, images)
