"""TensorRT engine runner (backend `tensorrt_engine`): a serialized engine, built by
`trtexec` or by `build_engine` from the ONNX export, run through the `tensorrt` Python API
(TensorRT 10: tensors bound by name with set_tensor_address, execute_async_v3).

NOT YET VERIFIED ON A DEVICE: no machine here has TensorRT (it is not installable from the
registries this project reaches). Everything before the engine is tested (export, binding
plan, sidecar and its checks: inference/engine.py); this module's TensorRT calls follow
TensorRT 10's Python API documentation and wait for a run on a Jetson or an NVIDIA GPU.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from metaseg_ros.errors import ArtifactError, BackendUnavailableError
from metaseg_ros.inference.engine import (
    ENGINE_PRECISIONS,
    INPUT_NAMES,
    MEMORY_FEEDBACK,
    OUTPUT_NAMES,
    BindingPlan,
    RuntimeFacts,
    check_engine,
    read_engine_sidecar,
)
from metaseg_ros.model.config import MetaSegConfig, config_from_dict
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import NetworkOutput

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int32": torch.int32,
                "int64": torch.int64, "bool": torch.bool}
# TensorRT DataType names by the sidecar's dtype names.
TRT_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64",
                   "BOOL": "bool"}


def import_tensorrt(device: str = "cuda") -> ModuleType:
    """The tensorrt module on a CUDA device; else BackendUnavailableError in one line."""
    problems = []
    if device != "cuda":
        problems.append(f"it runs on device 'cuda' only (device is '{device}')")
    module = None
    try:
        import tensorrt as module
    except Exception as error:  # ImportError, or an OSError without libnvinfer
        problems.append(f"the tensorrt Python package is not installed ({type(error).__name__}:"
                        f" {error}; JetPack ships it as python3-libnvinfer)")
    if not torch.cuda.is_available():
        problems.append(f"torch {torch.__version__} sees no CUDA device")
    if problems or module is None:
        raise BackendUnavailableError("backend 'tensorrt_engine' is unavailable: "
                                      + "; ".join(problems))
    return module


def runtime_facts(tensorrt: ModuleType) -> RuntimeFacts:
    """TensorRT version and GPU of this machine (as an engine's sidecar records them)."""
    major, minor = torch.cuda.get_device_capability()
    return RuntimeFacts(str(tensorrt.__version__), torch.cuda.get_device_name(),
                        f"{major}.{minor}")


def build_engine(onnx_file: str | Path, engine: str | Path, precision: str,
                 tensorrt: ModuleType) -> Path:
    """Parse the ONNX export and build a serialized engine (what `trtexec --onnx=...
    --saveEngine=... [--fp16]` does); the caller writes the sidecar (describe_engine)."""
    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f"precision must be one of {ENGINE_PRECISIONS}, got {precision!r}")
    trt = tensorrt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(str(trt.__version__).split(".")[0]) < 10:  # explicit batch is implicit from 10 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT cannot parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    if precision == "float16":
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError(f"TensorRT could not build an engine from {onnx_file}")
    engine = Path(engine)
    engine.write_bytes(bytes(serialized))
    return engine


class TensorRTEngineRunner:
    """A serialized engine with its sidecar, on CUDA. Every I/O tensor is a torch CUDA
    tensor allocated once and bound by name; a step copies the image and the memory in,
    runs the engine on torch's current stream and returns copies of the outputs."""

    def __init__(self, path: str | Path, tensorrt: ModuleType | None = None,
                 precision: str | None = None) -> None:
        trt = tensorrt or import_tensorrt("cuda")
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"TensorRT engine {self.path} not found")
        self.description = read_engine_sidecar(self.path)
        check_engine(self.path, self.description, runtime_facts(trt), precision=precision)
        self.config: MetaSegConfig = config_from_dict(self.description.config)
        self.device = torch.device("cuda")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {self.path}: "
                                "rebuild it on this machine")
        self._check_io(trt, self.description.plan())
        self._context = self._engine.create_execution_context()
        self._buffers = {b.name: torch.empty(b.shape, dtype=TORCH_DTYPES[b.dtype],
                                             device=self.device)
                         for b in self.description.bindings}
        for name, buffer in self._buffers.items():
            if not self._context.set_tensor_address(name, buffer.data_ptr()):
                raise ArtifactError(f"{self.path}: cannot bind tensor {name}")

    def _check_io(self, trt: ModuleType, plan: BindingPlan) -> None:
        """The engine's I/O tensors are the sidecar's: name, direction, shape and dtype (an
        engine built with --fp16 keeps float32 I/O unless told otherwise)."""
        found = {}
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = TRT_DTYPE_NAMES.get(self._engine.get_tensor_dtype(name).name, "other")
            found[name] = (is_input, tuple(self._engine.get_tensor_shape(name)), dtype)
        wanted = {name: (b.is_input, b.shape, b.dtype) for name, b in plan.by_name().items()}
        if found != wanted:
            raise ArtifactError(f"{self.path}: engine tensors {found} are not the sidecar's "
                                f"{wanted}")

    def initial_memory(self) -> MemoryState:
        """An empty memory ring on the GPU, in the engine's input dtypes."""
        return MemoryState(*(torch.zeros_like(self._buffers[name]) for name in INPUT_NAMES[1:]))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> NetworkOutput:
        """One engine run; outputs are fresh CUDA tensors (valid after later calls)."""
        for name, value in zip(INPUT_NAMES, (images, *memory), strict=True):
            self._buffers[name].copy_(value, non_blocking=True)
        stream = torch.cuda.current_stream(self.device)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT engine {self.path} failed to run")
        outputs = [self._buffers[name].clone() for name in OUTPUT_NAMES]
        next_memory = [outputs[OUTPUT_NAMES.index(name)] for name in MEMORY_FEEDBACK]
        return NetworkOutput(outputs[0], outputs[1], outputs[2], MemoryState(*next_memory))
