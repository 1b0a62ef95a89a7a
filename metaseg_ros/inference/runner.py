"""What every backend provides: a `ModelRunner` running the network's functional step.

    (images, memory) -> NetworkOutput(class_logits, mask_logits, query_embeddings, memory)

The runner families live in inference/runners/ (eager and its CUDA graph, ONNX Runtime,
torch.export programs, Torch-TensorRT); inference/builder.py chooses one from settings.
Every runner keeps the memory in the form its engine consumes (numpy-backed tensors for
ONNX Runtime, device tensors otherwise), so feeding it back costs no copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from metaseg_ros.errors import BackendUnavailableError  # re-exported: raised here
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import NetworkOutput
from metaseg_ros.settings import DEVICES, PRECISIONS


class ModelRunner(Protocol):
    """Runs the network's functional step on one frame (any backend).

    device: where the runner wants its inputs; frames are letterboxed there when it is a GPU.
    """

    config: MetaSegConfig
    device: torch.device

    def __call__(self, images: torch.Tensor, memory: MemoryState) -> NetworkOutput:
        """(1, 3, H, W) float32 image in 0..255 and the memory -> outputs and new memory."""
        ...

    def initial_memory(self) -> MemoryState:
        """An empty memory ring for a batch of one."""
        ...


@dataclass(frozen=True)
class RunnerOptions:
    """Settings shared by the backends.

    num_threads: CPU threads of ONNX Runtime's intra-op pool (0 = its default); torch's are
        set by the builder (torch.set_num_threads).
    cache_dir: where exported artifacts are cached (None = $METASEG_CACHE_DIR or
        ~/.cache/metaseg_ros).
    spin_wait: let ONNX Runtime's threads busy-wait for work between operators; off by
        default, as they would compete for the cores with pre- and post-processing (and
        everything else on a robot) after each step.
    precision: the eager backend's arithmetic (float16/bfloat16 run the network under
        autocast, for GPUs with tensor cores), or int8 for onnxruntime on the CPU (its
        matrix products with weights in int8: inference/quantize.py). The other exporting
        backends have their own: float32 for exported, float16 weights for tensorrt.
    """

    num_threads: int = 0
    cache_dir: Path | None = None
    spin_wait: bool = False
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")
        check_precision(self.precision)


def check_precision(precision: str) -> None:
    """Raise ValueError unless `precision` is one the backends know."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def check_device(backend: str, device: str, torch_needs_cuda: bool = True) -> torch.device:
    """The torch device for `device` ('cpu' or 'cuda'); raises ValueError for another name
    and, when torch itself will run on it, BackendUnavailableError if torch sees no GPU."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and torch_needs_cuda and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"backend '{backend}' on device 'cuda': torch {torch.__version__} sees no CUDA device")
    return torch.device(device)
