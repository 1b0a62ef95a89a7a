"""Torch-TensorRT runner: a serialised Torch-TensorRT program (float16 engine, fixed shapes)
on CUDA. The program is built by inference/export.py (`build_tensorrt_artifact`)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from metaseg_ros.inference.artifacts import ArtifactError, read_sidecar_description
from metaseg_ros.inference.runner import BackendUnavailableError
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import NetworkOutput, initial_memory


def import_torch_tensorrt(device: str = "cuda") -> ModuleType:
    """torch_tensorrt, usable on a CUDA device; else one error naming everything missing.

    Without TensorRT's libraries (libnvinfer) `import torch_tensorrt` raises a plain
    Exception, so any exception counts as unusable.
    """
    problems = []
    if device != "cuda":
        problems.append(f"TensorRT runs on device 'cuda' only (device is '{device}')")
    module = None
    try:
        import torch_tensorrt as module
    except Exception as error:  # a plain Exception without libnvinfer (see docstring)
        problems.append(f"torch_tensorrt cannot be imported ({type(error).__name__}: {error})")
    if not torch.cuda.is_available():
        problems.append(f"torch {torch.__version__} sees no CUDA device")
    if problems or module is None:
        raise BackendUnavailableError(
            "backend 'tensorrt' is unavailable: " + "; ".join(problems) + ". It needs an NVIDIA "
            "GPU, TensorRT and the torch_tensorrt build that matches this torch; otherwise use "
            "backend 'onnxruntime' or 'exported'.")
    return module


class TensorRTRunner:
    """A serialised Torch-TensorRT program (float16 engine, fixed shapes) on CUDA."""

    def __init__(self, path: str | Path, torch_tensorrt: ModuleType | None = None) -> None:
        torch_tensorrt = torch_tensorrt or import_torch_tensorrt("cuda")
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"TensorRT program {self.path} not found")
        self.description = read_sidecar_description(self.path)
        if self.description.settings.kind != "tensorrt":
            raise ArtifactError(f"{self.path} is a {self.description.settings.kind} artifact")
        self.config: MetaSegConfig = self.description.config
        self.device = torch.device("cuda")
        # Only load TensorRT programs built here (metaseg-export or this cache): their engine
        # is stored as a TorchScript custom object.
        loader = getattr(torch_tensorrt, "load", None) or torch.export.load
        loaded = loader(str(self.path))
        self.module = loaded.module() if hasattr(loaded, "module") else loaded

    def initial_memory(self) -> MemoryState:
        """An empty float16 memory ring on the GPU."""
        return initial_memory(self.config, 1, self.device, torch.float16)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> NetworkOutput:
        """One step on the GPU; outputs (float16 logits and memory) stay there."""
        outputs = self.module(images.to(self.device, torch.float32), *memory)
        return NetworkOutput(outputs[0], outputs[1], outputs[2], MemoryState(*outputs[3:]))
