"""A runner that survives its backend failing at run time (CUDA out of memory, an ONNX
Runtime or TensorRT error): the frame is run again on the next runner of a fallback chain
(eager PyTorch on the same device, then on the CPU), which serves every later frame.

The memory formats of the runners differ (numpy-backed for ONNX Runtime, device tensors
otherwise), so the fallback starts from an empty memory ring: the model forgets the past
frames once, the tracks are kept. `on_switch` tells the pipeline (for /diagnostics).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from metaseg_ros.inference.runner import ModelRunner
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import NetworkOutput

Log = Callable[[str], None]
# (name for logs and diagnostics, how to make the runner when it is needed)
Fallback = tuple[str, Callable[[], ModelRunner]]


class FallbackRunner:
    """`primary` until it raises, then each fallback in turn (made when first needed).

    on_switch(name, reason): called after a switch, with the new runner's name and what
    failed. A failure of the last runner is raised to the caller.
    """

    def __init__(self, primary: ModelRunner, name: str, fallbacks: Sequence[Fallback],
                 log: Log = print,
                 on_switch: Callable[[str, str], None] | None = None) -> None:
        self._active = primary
        self.name = name
        self._fallbacks = list(fallbacks)
        self._log = log
        self._on_switch = on_switch
        self.config: MetaSegConfig = primary.config
        self.failures: list[str] = []

    @property
    def device(self) -> torch.device:
        """The device of the runner in use."""
        return self._active.device

    @property
    def active(self) -> ModelRunner:
        """The runner in use."""
        return self._active

    @property
    def takes_batch(self) -> bool:
        """Whether the runner in use takes several frames in one call."""
        return bool(getattr(self._active, "takes_batch", False))

    def initial_memory(self) -> MemoryState:
        """An empty memory ring in the form the runner in use consumes."""
        return self._active.initial_memory()

    def _empty_memory(self, batch_size: int) -> MemoryState:
        """An empty memory of the runner in use for `batch_size` frames."""
        empty = self._active.initial_memory()
        if batch_size == 1:
            return empty
        return MemoryState(*(torch.cat([part] * batch_size) for part in empty))

    def __call__(self, images: torch.Tensor, memory: MemoryState) -> NetworkOutput:
        """One step; on a failure, the same frame on the next runner, from an empty memory."""
        while True:
            try:
                return self._active(images, memory)
            except Exception as error:
                reason = f"backend {self.name} failed: {type(error).__name__}: {error}"
                self.failures.append(reason)
                if not self._fallbacks:
                    raise
                self._log(reason)
                self._switch(reason)
                memory = self._empty_memory(int(images.shape[0]))

    def _switch(self, reason: str) -> None:
        while self._fallbacks:
            name, make = self._fallbacks.pop(0)
            try:
                runner = make()
            except Exception as error:
                self._log(f"fallback {name} unavailable: {type(error).__name__}: {error}")
                continue
            self._active, self.name = runner, name
            self._log(f"running on {name} from now on (the model's memory starts empty)")
            if self._on_switch is not None:
                self._on_switch(name, reason)
            return
        raise RuntimeError(f"{reason}; no fallback backend could be started")
