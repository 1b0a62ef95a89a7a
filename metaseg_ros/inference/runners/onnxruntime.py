"""ONNX Runtime runner: an ONNX artifact of the step in an inference session (CPU, or CUDA
with onnxruntime-gpu). The artifact is written by inference/export.py and cached."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from metaseg_ros.inference.artifacts import ArtifactError, description_from_metadata
from metaseg_ros.inference.runner import BackendUnavailableError, check_device
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.export import INPUT_NAMES, OUTPUT_NAMES
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import NetworkOutput, initial_memory, step_input_shapes


def import_onnxruntime(device: str = "cpu") -> ModuleType:
    """onnxruntime, checked to offer the execution provider `device` needs."""
    check_device("onnxruntime", device, torch_needs_cuda=False)  # its own CUDA provider
    try:
        import onnxruntime
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend 'onnxruntime' needs the onnxruntime package ({error}); install "
            "onnxruntime (CPU) or onnxruntime-gpu (CUDA)") from error
    if device == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise BackendUnavailableError(
            "backend 'onnxruntime' on device 'cuda' needs CUDAExecutionProvider (onnxruntime-gpu);"
            f" this onnxruntime {onnxruntime.__version__} offers "
            f"{', '.join(onnxruntime.get_available_providers())}")
    return onnxruntime


class OnnxRuntimeRunner:
    """An ONNX artifact of the step in an ONNX Runtime session.

    Inputs and outputs cross as numpy arrays that share memory with torch tensors
    (torch.from_numpy / Tensor.numpy), so the memory ring is fed back without copies. With
    the CUDA execution provider the memory (well under a megabyte for `tiny`) still crosses
    the host each frame.
    """

    def __init__(self, path: str | Path, device: str = "cpu", num_threads: int = 0,
                 spin_wait: bool = False) -> None:
        ort = import_onnxruntime(device)
        self.path = Path(path)
        self.device = torch.device("cpu")  # inputs and outputs cross as host arrays
        if not self.path.is_file():
            raise ArtifactError(f"ONNX file {self.path} not found")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if num_threads > 0:
            options.intra_op_num_threads = num_threads
        # Pre- and post-processing run in torch right after each step: by default ONNX
        # Runtime's pool must not keep spinning on the same cores meanwhile.
        options.add_session_config_entry("session.intra_op.allow_spinning",
                                         "1" if spin_wait else "0")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.description = description_from_metadata(metadata, str(self.path))
        self.config: MetaSegConfig = self.description.config
        self._check_signature()

    def _check_signature(self) -> None:
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        names = [i.name for i in inputs]
        if names != list(INPUT_NAMES) or outputs != list(OUTPUT_NAMES):
            raise ArtifactError(f"{self.path}: inputs {names} / outputs {outputs} are not "
                                f"{list(INPUT_NAMES)} / {list(OUTPUT_NAMES)}")
        shapes = [list(i.shape) for i in inputs]
        expected = [list(shape) for shape in step_input_shapes(self.config)]
        if shapes != expected:
            raise ArtifactError(f"{self.path}: input shapes {shapes} do not match its config "
                                f"{expected}")

    def initial_memory(self) -> MemoryState:
        """An empty memory ring (CPU tensors over numpy-compatible storage)."""
        return initial_memory(self.config, 1, "cpu", torch.float32)

    def __call__(self, images: torch.Tensor, memory: MemoryState) -> NetworkOutput:
        """One step; outputs are CPU tensors sharing memory with ONNX Runtime's arrays."""
        feeds = {name: _as_numpy(tensor)
                 for name, tensor in zip(INPUT_NAMES, (images, *memory), strict=True)}
        outputs = [torch.from_numpy(array) for array in self.session.run(None, feeds)]
        return NetworkOutput(outputs[0], outputs[1], outputs[2], MemoryState(*outputs[3:]))


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float32 contiguous numpy view of a CPU tensor (a copy only when it must convert)."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu" or tensor.dtype != torch.float32:
        tensor = tensor.to("cpu", torch.float32)
    return np.ascontiguousarray(tensor.numpy())
