"""Backends that run the network's functional step: `(images, memory) -> SegmenterOutput`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import MetaSegmenter, SegmenterOutput

BACKENDS = ("eager",)


class EagerRunner:
    """Plain PyTorch on a device, under inference_mode."""

    def __init__(self, model: MetaSegmenter, device: str = "cpu") -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.config: MetaSegConfig = model.config

    def initial_memory(self) -> MemoryState:
        """An empty memory ring on the runner's device."""
        return self.model.initial_memory(1, device=self.device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> SegmenterOutput:
        """One step on the device; outputs stay on the device (memory is fed back there)."""
        return self.model(images.to(self.device, non_blocking=True), memory)


def create_runner(model: MetaSegmenter, backend: str, device: str, cache_key: str = "",
                  log: Callable[[str], None] = print) -> EagerRunner:
    """A runner for `backend` (one of BACKENDS)."""
    if backend == "eager":
        return EagerRunner(model, device)
    raise ValueError(f"backend '{backend}' is not available (available: {', '.join(BACKENDS)})")
