"""Backends that run the network's functional step: `(images, memory) -> SegmenterOutput`.

    eager        PyTorch on cpu or cuda (deformable sampling with grid_sample: same numbers
                 as the export-friendly gathers, faster in eager mode)
    cudagraph    the eager step captured once into a CUDA graph and replayed (cuda only): the
                 same kernels without Python's per-operator launch cost, which is most of a
                 step's time on a fast GPU
    onnxruntime  the step exported to ONNX once and cached; CPU execution provider, or CUDA
                 when device=cuda and onnxruntime-gpu provides it
    exported     a torch.export program (.pt2), cached the same way, run on cpu or cuda
    tensorrt     Torch-TensorRT: the exported program compiled with float16 weights and fixed
                 shapes (cuda only), serialised into the cache

Every runner keeps the memory in the form its engine consumes (numpy-backed tensors for ONNX
Runtime, device tensors otherwise), so feeding it back costs no copy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from metaseg_ros.inference.export import (
    ARTIFACT_SUFFIXES,
    ArtifactDescription,
    ArtifactError,
    ExportSettings,
    atomic_destination,
    description_from_metadata,
    ensure_artifact,
    export_copy,
    load_program_artifact,
    read_sidecar_description,
    sidecar_path,
)
from metaseg_ros.inference.segmenter import ModelRunner
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.export import INPUT_NAMES, OUTPUT_NAMES, example_inputs, export_program
from metaseg_ros.model.layers import SAMPLING_MODES, MultiScaleDeformableAttention
from metaseg_ros.model.memory import MemoryState, empty_memory
from metaseg_ros.model.metasegmenter import MetaSegmenter, SegmenterOutput

BACKENDS = ("eager", "cudagraph", "onnxruntime", "exported", "tensorrt")
DEVICES = ("cpu", "cuda")
# Arithmetic precision of the eager backend (autocast); the memory and outputs stay float32.
PRECISIONS = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Which artifact each backend runs, and the backend a ready-made artifact file needs.
BACKEND_ARTIFACTS = {"onnxruntime": "onnx", "exported": "pt2", "tensorrt": "tensorrt"}

Log = Callable[[str], None]


class BackendUnavailableError(RuntimeError):
    """A backend cannot run here; the message names everything that is missing."""


@dataclass(frozen=True)
class RunnerOptions:
    """Settings shared by the backends.

    num_threads: CPU threads of ONNX Runtime's intra-op pool (0 = its default); torch's are
        set by the caller (torch.set_num_threads).
    cache_dir: where exported artifacts are cached (None = $METASEG_CACHE_DIR or
        ~/.cache/metaseg_ros).
    spin_wait: let ONNX Runtime's threads busy-wait for work between operators; off by
        default, as they would compete for the cores with pre- and post-processing (and
        everything else on a robot) after each step.
    precision: the eager backend's arithmetic (one of PRECISIONS; float16/bfloat16 run the
        network under autocast, for GPUs with tensor cores). The exporting backends have
        their own: float32 for onnxruntime/exported, float16 weights for tensorrt.
    """

    num_threads: int = 0
    cache_dir: Path | None = None
    spin_wait: bool = False
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")
        _check_precision(self.precision)


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")


def _check_device(backend: str, device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"backend '{backend}' on device 'cuda': torch {torch.__version__} sees no CUDA device")


class EagerRunner:
    """Plain PyTorch on a device, under inference_mode.

    precision: "float32" (default), or "float16"/"bfloat16" to run under autocast (tensor
        cores on a GPU); outputs and the memory fed back are float32 either way.
    sampling: deformable-attention sampling during this runner's calls; "grid_sample" (default)
        computes the same numbers as the export-friendly "gather" (tested) and is faster in
        eager mode. The model's own setting is restored after each call, so a model shared
        with training (evaluation during training) is left as it was.
    """

    def __init__(self, model: MetaSegmenter, device: str = "cpu",
                 sampling: str = "grid_sample", precision: str = "float32") -> None:
        _check_device("eager", device)
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling {sampling!r} not in {SAMPLING_MODES}")
        _check_precision(precision)
        self.device = torch.device(device)
        self.precision = precision
        self.model = model.eval().to(self.device)
        self.sampling = sampling
        self._deformable = [m for m in self.model.modules()
                            if isinstance(m, MultiScaleDeformableAttention)]
        self.config: MetaSegConfig = model.config

    def initial_memory(self) -> MemoryState:
        """An empty memory ring on the runner's device."""
        return self.model.initial_memory(1, device=self.device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> SegmenterOutput:
        """One step on the device; outputs stay on the device (memory is fed back there)."""
        previous = [module.sampling for module in self._deformable]
        for module in self._deformable:
            module.sampling = self.sampling
        try:
            images = images.to(self.device, non_blocking=True)
            autocast_dtype = PRECISIONS[self.precision]
            if autocast_dtype is None:
                return self.model(images, memory)
            # No cast cache: each weight is cast once per step anyway, and a cache breaks
            # replaying the step as a CUDA graph.
            with torch.autocast(self.device.type, dtype=autocast_dtype, cache_enabled=False):
                output = self.model(images, memory)
            return SegmenterOutput(
                output.class_logits.float(), output.mask_logits.float(),
                output.query_embeddings.float(), MemoryState(*(t.float() for t in output.memory)))
        finally:
            for module, mode in zip(self._deformable, previous, strict=True):
                module.sampling = mode


class CudaGraphRunner:
    """The eager step captured into a CUDA graph when created, then replayed on every call.

    Shapes are fixed (one frame at the config's input size, the memory ring), so one graph
    serves the whole run. Inputs are copied into the graph's buffers and outputs copied out
    of them: a result stays valid after later calls. Capture failures surface here, at
    creation, not at the first frame.
    """

    def __init__(self, model: MetaSegmenter, device: str = "cuda", precision: str = "float32",
                 warmup_steps: int = 3) -> None:
        _check_device("cudagraph", device)
        if torch.device(device).type != "cuda":
            raise BackendUnavailableError("backend 'cudagraph' runs on device 'cuda' only")
        self._eager = EagerRunner(model, device, precision=precision)
        self.config: MetaSegConfig = model.config
        self.device = self._eager.device
        height, width = self.config.image_size
        self._images = torch.zeros((1, 3, height, width), device=self.device)
        self._memory = MemoryState(*(t.clone() for t in self._eager.initial_memory()))
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # allocator and kernels warmed up off the main stream
            for _ in range(warmup_steps):
                self._eager(self._images, self._memory)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._outputs = self._eager(self._images, self._memory)

    def initial_memory(self) -> MemoryState:
        """An empty memory ring on the GPU."""
        return self._eager.initial_memory()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> SegmenterOutput:
        """One replay of the captured step; outputs are fresh tensors on the GPU."""
        self._images.copy_(images, non_blocking=True)
        for buffer, value in zip(self._memory, memory, strict=True):
            buffer.copy_(value, non_blocking=True)
        self._graph.replay()
        out = self._outputs
        return SegmenterOutput(out.class_logits.clone(), out.mask_logits.clone(),
                               out.query_embeddings.clone(),
                               MemoryState(*(t.clone() for t in out.memory)))


def _initial_memory(config: MetaSegConfig, device: torch.device | str,
                    dtype: torch.dtype) -> MemoryState:
    return empty_memory(1, config.memory_frames, config.memory.feature_dim, config.memory_size,
                        config.num_queries, config.hidden_dim, device=device, dtype=dtype)


def _input_shapes(config: MetaSegConfig) -> list[list[int]]:
    """Shapes of the ONNX inputs, in INPUT_NAMES order, for a batch of one."""
    h_mem, w_mem = config.memory_size
    return [[1, 3, *config.image_size],
            [1, config.memory_frames, config.memory.feature_dim, h_mem, w_mem],
            [1, config.memory_frames, config.num_queries, config.hidden_dim],
            [1, config.memory_frames]]


def import_onnxruntime(device: str = "cpu") -> ModuleType:
    """onnxruntime, checked to offer the execution provider `device` needs."""
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
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
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
        if shapes != _input_shapes(self.config):
            raise ArtifactError(f"{self.path}: input shapes {shapes} do not match its config "
                                f"{_input_shapes(self.config)}")

    def initial_memory(self) -> MemoryState:
        """An empty memory ring (CPU tensors over numpy-compatible storage)."""
        return _initial_memory(self.config, "cpu", torch.float32)

    def __call__(self, images: torch.Tensor, memory: MemoryState) -> SegmenterOutput:
        """One step; outputs are CPU tensors sharing memory with ONNX Runtime's arrays."""
        feeds = {name: _as_numpy(tensor)
                 for name, tensor in zip(INPUT_NAMES, (images, *memory), strict=True)}
        outputs = [torch.from_numpy(array) for array in self.session.run(None, feeds)]
        return SegmenterOutput(outputs[0], outputs[1], outputs[2], MemoryState(*outputs[3:]))


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float32 contiguous numpy view of a CPU tensor (a copy only when it must convert)."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu" or tensor.dtype != torch.float32:
        tensor = tensor.to("cpu", torch.float32)
    return np.ascontiguousarray(tensor.numpy())


class ExportedProgramRunner:
    """A torch.export program (.pt2 artifact) run as a module on its device."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        _check_device("exported", device)
        program, description = load_program_artifact(path)
        if description.settings.device != device:
            raise ArtifactError(f"{path} was exported for device "
                                f"'{description.settings.device}', not '{device}'")
        self.path = Path(path)
        self.description = description
        self.config: MetaSegConfig = description.config
        self.device = torch.device(device)
        self.module = program.module()

    def initial_memory(self) -> MemoryState:
        """An empty memory ring on the program's device and dtype."""
        return _initial_memory(self.config, self.device, self.description.settings.dtype)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> SegmenterOutput:
        """One step; outputs stay on the device."""
        outputs = self.module(images.to(self.device, torch.float32), *memory)
        return SegmenterOutput(outputs[0], outputs[1], outputs[2], MemoryState(*outputs[3:]))


# --- Torch-TensorRT ------------------------------------------------------------------------

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


@dataclass(frozen=True)
class TensorRTBuildPlan:
    """What Torch-TensorRT compiles: the exported step and its fixed-shape example inputs.

    The model is exported with float16 weights and memory (images stay float32 and are
    normalised inside the graph; deformable sampling positions stay float32), gather-based
    sampling, on `device`.
    """

    program: torch.export.ExportedProgram
    inputs: tuple[torch.Tensor, ...]
    settings: ExportSettings


def tensorrt_settings(device: str = "cuda") -> ExportSettings:
    """Export settings of the tensorrt backend."""
    return ExportSettings("tensorrt", device=device, sampling="gather", precision="float16")


def plan_tensorrt_build(model: MetaSegmenter, device: str = "cuda") -> TensorRTBuildPlan:
    """Export the step for Torch-TensorRT (runs without TensorRT; `device` 'cpu' for checks)."""
    settings = tensorrt_settings(device)
    clone = export_copy(model, settings)
    inputs = example_inputs(clone)
    return TensorRTBuildPlan(export_program(clone), tuple(inputs), settings)


def tensorrt_compile_options(compile_fn: Callable, inputs: tuple[torch.Tensor, ...]
                             ) -> dict[str, object]:
    """Keyword arguments for torch_tensorrt.dynamo.compile, by what its signature accepts.

    Fixed shapes (the example tensors). Precision: Torch-TensorRT >= 2.9 types the network
    explicitly (use_explicit_typing), so the float16 weights make it a float16 engine;
    older versions choose kernels from enabled_precisions, here float16 and float32.
    """
    parameters = inspect.signature(compile_fn).parameters
    options: dict[str, object] = {}
    options["arg_inputs" if "arg_inputs" in parameters else "inputs"] = list(inputs)
    if "use_explicit_typing" in parameters:
        options["use_explicit_typing"] = True
    else:
        options["enabled_precisions"] = {torch.float16, torch.float32}
    for name, value in (("truncate_double", True), ("require_full_compilation", False),
                        ("min_block_size", 1)):
        if name in parameters:
            options[name] = value
    return options


def build_tensorrt_artifact(model: MetaSegmenter, path: Path, settings: ExportSettings,
                            fingerprint: str, torch_tensorrt: ModuleType | None = None) -> Path:
    """Compile the step with Torch-TensorRT and save it (ExportedProgram format + sidecar)."""
    torch_tensorrt = torch_tensorrt or import_torch_tensorrt(settings.device)
    plan = plan_tensorrt_build(model, settings.device)
    compile_fn = torch_tensorrt.dynamo.compile
    compiled = compile_fn(plan.program, **tensorrt_compile_options(compile_fn, plan.inputs))
    description = ArtifactDescription(model.config, settings, fingerprint)
    sidecar_path(path).write_text(description.to_json())
    save_parameters = inspect.signature(torch_tensorrt.save).parameters
    input_name = "arg_inputs" if "arg_inputs" in save_parameters else "inputs"
    with atomic_destination(path) as temporary:
        torch_tensorrt.save(compiled, str(temporary), output_format="exported_program",
                            **{input_name: list(plan.inputs)})
    return path


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
        return _initial_memory(self.config, self.device, torch.float16)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> SegmenterOutput:
        """One step on the GPU; outputs (float16 logits and memory) stay there."""
        outputs = self.module(images.to(self.device, torch.float32), *memory)
        return SegmenterOutput(outputs[0], outputs[1], outputs[2], MemoryState(*outputs[3:]))


# --- Selection -----------------------------------------------------------------------------

def create_runner(model: MetaSegmenter, backend: str, device: str, cache_key: str = "",
                  log: Log = print, options: RunnerOptions | None = None) -> ModelRunner:
    """A runner for `backend` (one of BACKENDS) on `device`.

    Exporting backends reuse the cached artifact of this model and export once otherwise;
    `cache_key` labels the cached file (the checkpoint's path or name), the content
    fingerprint decides reuse.
    """
    options = options or RunnerOptions()
    if backend not in BACKENDS:
        raise ValueError(f"backend '{backend}' is not available (available: "
                         f"{', '.join(BACKENDS)})")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if backend == "eager":
        return EagerRunner(model, device, precision=options.precision)
    if backend == "cudagraph":
        return CudaGraphRunner(model, device, precision=options.precision)
    if options.precision != "float32":
        raise ValueError(f"precision {options.precision!r} applies to backends 'eager' and "
                         f"'cudagraph' only (backend '{backend}' has its own)")
    if backend == "onnxruntime":
        import_onnxruntime(device)  # fail before a long export
        artifact = ensure_artifact(model, ExportSettings("onnx"), cache_key, options.cache_dir,
                                   log)
        return OnnxRuntimeRunner(artifact.path, device, options.num_threads, options.spin_wait)
    if backend == "exported":
        _check_device(backend, device)
        artifact = ensure_artifact(model, ExportSettings("pt2", device=device), cache_key,
                                   options.cache_dir, log)
        return ExportedProgramRunner(artifact.path, device)
    torch_tensorrt = import_torch_tensorrt(device)
    artifact = ensure_artifact(model, tensorrt_settings(device), cache_key, options.cache_dir,
                               log, writer=partial(build_tensorrt_artifact,
                                                   torch_tensorrt=torch_tensorrt))
    return TensorRTRunner(artifact.path, torch_tensorrt)


def resolve_backend(backend: str, device: str, precision: str = "float32") -> str:
    """The backend 'auto' stands for on `device` (any other backend is returned as it is).

    CPU: ONNX Runtime when it is installed (about 2x faster than eager PyTorch here, see
    docs/benchmarks.md; it exports once into the artifact cache), else eager; a reduced
    `precision` (an eager setting) makes it eager. CUDA: the eager step as a CUDA graph
    (measured faster than eager on an H200; Torch-TensorRT is chosen only when asked for,
    as no GPU machine here had it to verify).
    """
    if backend != "auto":
        return backend
    if device == "cuda":
        return "cudagraph"
    if precision == "float32":
        try:
            import_onnxruntime(device)
        except BackendUnavailableError:
            return "eager"
        return "onnxruntime"
    return "eager"


def artifact_backend(path: str | Path) -> str:
    """The backend that runs a ready-made artifact file, from its suffix."""
    suffix = Path(path).suffix
    for backend, kind in BACKEND_ARTIFACTS.items():
        if ARTIFACT_SUFFIXES[kind] == suffix:
            return backend
    raise ValueError(f"{path}: not an artifact ({', '.join(ARTIFACT_SUFFIXES.values())})")


def is_artifact_path(path: str | Path) -> bool:
    """Whether a path names an exported artifact (.onnx, .pt2, .ep) rather than a checkpoint."""
    return Path(path).suffix in ARTIFACT_SUFFIXES.values()


def runner_from_artifact(path: str | Path, backend: str, device: str,
                         options: RunnerOptions | None = None) -> ModelRunner:
    """A runner for a ready-made artifact (e.g. shipped with the robot), no export needed."""
    options = options or RunnerOptions()
    needed = artifact_backend(path)
    backend = needed if backend == "auto" else backend
    if backend != needed:
        raise ValueError(f"{path} runs on backend '{needed}', not '{backend}'")
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(path, device, options.num_threads, options.spin_wait)
    if backend == "exported":
        return ExportedProgramRunner(path, device)
    return TensorRTRunner(path, import_torch_tensorrt(device))
