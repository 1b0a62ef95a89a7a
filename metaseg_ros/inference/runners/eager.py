"""Eager PyTorch runners: the model on a device, and that step captured as a CUDA graph.

    eager      PyTorch on cpu or cuda (deformable sampling with grid_sample: same numbers
               as the export-friendly gathers, faster in eager mode), float32 or autocast
    cudagraph  the eager step captured once into a CUDA graph and replayed (cuda only): the
               same kernels without Python's per-operator launch cost, which is most of a
               step's time on a fast GPU
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from metaseg_ros.inference.runner import BackendUnavailableError, check_device, check_precision
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.layers import SAMPLING_MODES, MultiScaleDeformableAttention
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import MetaSegmenter, NetworkOutput, step_input_shapes

# The dtype each precision runs the network in under autocast (None: plain float32).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
        self.device = check_device("eager", device)
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling {sampling!r} not in {SAMPLING_MODES}")
        check_precision(precision)
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"backend 'eager' runs {tuple(AUTOCAST_DTYPES)}, not {precision!r}")
        self.precision = precision
        self.model = model.eval().to(self.device)
        self.sampling = sampling
        self._deformable = [m for m in self.model.modules()
                            if isinstance(m, MultiScaleDeformableAttention)]
        self.config: MetaSegConfig = model.config

    # Any batch of frames in one call (several cameras: inference/cameras.py).
    takes_batch = True

    def initial_memory(self) -> MemoryState:
        """An empty memory ring on the runner's device."""
        return self.model.initial_memory(1, device=self.device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> NetworkOutput:
        """One step on the device; outputs stay on the device (memory is fed back there)."""
        with self.sampling_set():
            return self.forward(images.to(self.device, non_blocking=True), memory)

    @contextlib.contextmanager
    def sampling_set(self) -> Iterator[None]:
        """The runner's deformable sampling on the model inside, the model's own after."""
        previous = [module.sampling for module in self._deformable]
        for module in self._deformable:
            module.sampling = self.sampling
        try:
            yield
        finally:
            for module, mode in zip(self._deformable, previous, strict=True):
                module.sampling = mode

    def forward(self, images: torch.Tensor, memory: MemoryState) -> NetworkOutput:
        """The network at the runner's precision (inputs on the device; outputs float32)."""
        autocast_dtype = AUTOCAST_DTYPES[self.precision]
        if autocast_dtype is None:
            return self.model(images, memory)
        # No cast cache: each weight is cast once per step anyway, and a cache breaks
        # replaying the step as a CUDA graph.
        with torch.autocast(self.device.type, dtype=autocast_dtype, cache_enabled=False):
            output = self.model(images, memory)
        return NetworkOutput(
            output.class_logits.float(), output.mask_logits.float(),
            output.query_embeddings.float(), MemoryState(*(t.float() for t in output.memory)))


class CudaGraphRunner:
    """The eager step captured into a CUDA graph when created, then replayed on every call.

    Shapes are fixed (one frame at the config's input size, the memory ring), so one graph
    serves the whole run. Inputs are copied into the graph's buffers and outputs copied out
    of them: a result stays valid after later calls. Capture failures surface here, at
    creation, not at the first frame.
    """

    def __init__(self, model: MetaSegmenter, device: str = "cuda", precision: str = "float32",
                 warmup_steps: int = 3) -> None:
        if check_device("cudagraph", device).type != "cuda":
            raise BackendUnavailableError("backend 'cudagraph' runs on device 'cuda' only")
        self._eager = EagerRunner(model, device, precision=precision)
        self.config: MetaSegConfig = model.config
        self.device = self._eager.device
        self._images = torch.zeros(step_input_shapes(self.config)[0], device=self.device)
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
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> NetworkOutput:
        """One replay of the captured step; outputs are fresh tensors on the GPU."""
        self._images.copy_(images, non_blocking=True)
        for buffer, value in zip(self._memory, memory, strict=True):
            buffer.copy_(value, non_blocking=True)
        self._graph.replay()
        return cloned_output(self._outputs)


def cloned_output(output: NetworkOutput) -> NetworkOutput:
    """Fresh copies of a step's outputs (a CUDA graph's outputs are overwritten by its next
    replay)."""
    return NetworkOutput(output.class_logits.clone(), output.mask_logits.clone(),
                         output.query_embeddings.clone(),
                         MemoryState(*(t.clone() for t in output.memory)))
