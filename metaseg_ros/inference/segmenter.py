"""MetaSegSegmenter: the stateful `step(image) -> FrameDetections` around the network.

It owns the temporal memory (the model's MemoryState ring, fed back every frame), the
letterboxing and the post-processing. The network itself runs behind a `ModelRunner`
(eager PyTorch, ONNX Runtime, a torch.export program or Torch-TensorRT; see backends.py),
all with the same functional signature `(images, memory) -> SegmenterOutput`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from metaseg_ros.inference.postprocess import PostprocessSettings, select_instances
from metaseg_ros.inference.preprocess import letterbox_image
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import SegmenterOutput
from metaseg_ros.results import FrameDetections

if TYPE_CHECKING:
    from metaseg_ros.inference.factory import PipelineSettings

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def shipped_checkpoint(config_name: str) -> Path | None:
    """The checkpoint shipped in the package for a config ("tiny"), if there is one."""
    path = WEIGHTS_DIR / f"metaseg_{config_name.replace('-', '_')}.safetensors"
    return path if path.is_file() else None


class ModelRunner(Protocol):
    """Runs the network's functional step on one batch (any backend)."""

    config: MetaSegConfig

    def __call__(self, images: torch.Tensor, memory: MemoryState) -> SegmenterOutput:
        """(1, 3, H, W) float32 image in 0..255 and the memory -> outputs and new memory."""
        ...

    def initial_memory(self) -> MemoryState:
        """An empty memory ring for a batch of one."""
        ...


class MetaSegSegmenter:
    """Video instance segmentation, frame by frame, with the model's memory kept.

    preprocess_device: where frames are letterboxed: the runner's GPU when it has one (the
    uint8 frame is uploaded and resized there), else None (the CPU).
    """

    def __init__(self, runner: ModelRunner, settings: PostprocessSettings | None = None,
                 random_weights: bool = False, description: str = "") -> None:
        self.runner = runner
        self.config = runner.config
        self.settings = settings or PostprocessSettings()
        self.random_weights = random_weights
        self.description = description or f"MetaSegmenter {self.config.name}"
        self._memory = runner.initial_memory()
        self.frames_since_reset = 0
        # Frames are letterboxed where the network runs when that is a GPU (the uint8 frame
        # is uploaded, a quarter of the float input's bytes); on the CPU otherwise.
        device = getattr(runner, "device", None)
        self.preprocess_device = device if isinstance(device, torch.device) \
            and device.type == "cuda" else None

    @property
    def class_names(self) -> Sequence[str]:
        """The checkpoint's class names, indexed by class id."""
        return self.config.class_names

    def step(self, image: np.ndarray) -> FrameDetections:
        """Segment one (H, W, 3) uint8 RGB frame and advance the memory."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        images, box = letterbox_image(image, self.config.image_size, self.config.pixel_mean,
                                      self.preprocess_device)
        output = self.runner(images, self._memory)
        self._memory = output.memory
        self.frames_since_reset += 1
        # Post-processing runs where the outputs are (the GPU for eager/exported on CUDA).
        return select_instances(output.class_logits[0], output.mask_logits[0],
                                output.query_embeddings[0], box, self.settings)

    def reset(self) -> None:
        """Empty the memory ring (a new video starts)."""
        self._memory = self.runner.initial_memory()
        self.frames_since_reset = 0

    def configure_postprocess(self, **changes: float | int | bool) -> None:
        """Change thresholds while running (validated; unknown names raise TypeError)."""
        self.settings = dataclasses.replace(self.settings, **changes)

    @classmethod
    def from_settings(cls, settings: PipelineSettings,
                      log: Callable[[str], None] = print) -> MetaSegSegmenter:
        """Load the configured checkpoint (or the shipped one) on the configured backend.

        A checkpoint path ending in .onnx, .pt2 or .ep is a ready-made export (metaseg-export)
        and runs as it is on the matching backend (onnxruntime, exported, tensorrt).
        """
        from metaseg_ros.inference.backends import (
            RunnerOptions,
            artifact_backend,
            create_runner,
            is_artifact_path,
            resolve_backend,
            runner_from_artifact,
        )
        from metaseg_ros.model.checkpoint import load_checkpoint
        from metaseg_ros.model.config import get_config
        from metaseg_ros.model.metasegmenter import MetaSegmenter

        if settings.num_threads > 0:
            torch.set_num_threads(settings.num_threads)
        options = RunnerOptions(num_threads=settings.num_threads, precision=settings.precision)
        checkpoint = Path(settings.checkpoint) if settings.checkpoint else \
            shipped_checkpoint(settings.model_config)
        random_weights = checkpoint is None
        backend = settings.backend
        if checkpoint is not None and is_artifact_path(checkpoint):
            runner = runner_from_artifact(checkpoint, backend, settings.device, options)
            backend = artifact_backend(checkpoint)
            source = f"export {checkpoint}"
        else:
            if checkpoint is not None:
                model = load_checkpoint(checkpoint)
                source = f"checkpoint {checkpoint}"
            else:
                torch.manual_seed(0)
                model = MetaSegmenter(get_config(settings.model_config))
                source = "random weights"
            model.eval()
            cache_key = str(checkpoint or f"random-{settings.model_config}")
            backend = resolve_backend(settings.backend, settings.device, settings.precision)
            try:
                runner = create_runner(model, backend, settings.device, cache_key=cache_key,
                                       log=log, options=options)
            except Exception as error:
                if settings.backend != "auto" or backend == "eager":
                    raise
                log(f"backend auto: {backend} failed ({error!r}); running eager instead")
                backend = "eager"
                runner = create_runner(model, backend, settings.device, log=log,
                                       options=options)
        config = runner.config
        postprocess = PostprocessSettings(
            score_threshold=settings.score_threshold, mask_threshold=settings.mask_threshold,
            max_instances=settings.max_instances, resolve_overlaps=settings.resolve_overlaps,
            min_kept_fraction=settings.min_kept_fraction)
        chosen = f"{backend} (auto)" if settings.backend == "auto" else backend
        if settings.precision != "float32":
            chosen += f" {settings.precision}"
        description = (f"MetaSegmenter {config.name} ({source}) on {chosen}/"
                       f"{settings.device}, input {config.image_size[1]}x"
                       f"{config.image_size[0]}, memory of {config.memory_frames} frames")
        log(description)
        return cls(runner, postprocess, random_weights=random_weights,
                   description=description)
