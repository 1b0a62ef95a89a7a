"""The `compiled` backend: the eager step compiled by torch.compile (TorchInductor).

On cuda the compiled kernels are replayed as CUDA graphs (mode "reduce-overhead"), so the
step pays neither Python's per-operator cost nor a kernel launch per operator, and
Inductor fuses the elementwise work the eager step runs as separate kernels. On the cpu
Inductor writes C++/OpenMP kernels (needs a C++ compiler). Shapes are fixed (one frame at
the config's input size, the memory ring), so the step compiles once, when the runner is
created (the shipped tiny model: 80 s on the development VM's 2 cores, 12 s once
TorchInductor's disk cache has it, TORCHINDUCTOR_CACHE_DIR, default
/tmp/torchinductor_<user>; docs/benchmarks.md), and a failure to compile surfaces there, not
at the first frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from metaseg_ros.inference.runner import check_device
from metaseg_ros.inference.runners.eager import EagerRunner, cloned_output
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import MetaSegmenter, NetworkOutput, step_input_shapes


class CompiledRunner:
    """EagerRunner's step (same precision and sampling) through torch.compile, compiled and
    warmed up when created.

    warmup_steps: steps run on an empty frame at creation (the first compiles; on cuda the
        next ones record the CUDA graph), with the memory fed back as in a stream.
    log: where the compile time is reported.
    """

    def __init__(self, model: MetaSegmenter, device: str = "cpu", precision: str = "float32",
                 warmup_steps: int = 3, log: Callable[[str], None] = print) -> None:
        check_device("compiled", device)  # the error names this backend, not eager
        self._eager = EagerRunner(model, device, precision=precision)
        self.config: MetaSegConfig = model.config
        self.device = self._eager.device
        self.precision = precision
        self._on_cuda = self.device.type == "cuda"
        self._step = torch.compile(self._eager.forward, dynamic=False,
                                   mode="reduce-overhead" if self._on_cuda else None)
        started = time.perf_counter()
        images = torch.zeros(step_input_shapes(self.config)[0], device=self.device)
        memory = self.initial_memory()
        for _ in range(warmup_steps):
            memory = self(images, memory).memory
        log(f"backend compiled: step compiled and warmed up in "
            f"{time.perf_counter() - started:.1f} s ({self.device}, {precision})")

    # One frame per call: the step is compiled for batch 1.
    takes_batch = False

    def initial_memory(self) -> MemoryState:
        """An empty memory ring on the runner's device."""
        return self._eager.initial_memory()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, memory: MemoryState) -> NetworkOutput:
        """One compiled step; outputs are fresh tensors on the device."""
        images = images.to(self.device, non_blocking=True)
        with self._eager.sampling_set():
            if self._on_cuda:
                torch.compiler.cudagraph_mark_step_begin()
                return cloned_output(self._step(images, memory))
            return self._step(images, memory)
