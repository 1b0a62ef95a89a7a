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
from metaseg_ros.inference.preprocess import letterbox_image
from metaseg_ros.inference.runner import ModelRunner
from metaseg_ros.inference.settings import PostprocessSettings
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
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        images, letterbox = letterbox_image(image, self.config.image_size,
                                            self.config.pixel_mean, self.preprocess_device)
        output = self.runner(images, self._memory)
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
