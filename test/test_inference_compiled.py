"""The `compiled` backend (torch.compile, TorchInductor) on the CPU: the eager step's outputs,
compiled once at creation, never again while frames stream (the GPU half, with CUDA graphs,
is in test_cuda.py)."""

from __future__ import annotations

import shutil

import pytest
import torch
from gated_models import gated_tiny

from metaseg_ros.inference.builder import create_runner
from metaseg_ros.inference.export import compare_step_outputs
from metaseg_ros.inference.runner import BackendUnavailableError, RunnerOptions
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.model import MetaSegmenter

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="TorchInductor's CPU kernels need a C++ compiler")

SIZE = (128, 128)


def gated_model() -> MetaSegmenter:
    """A reduced tiny config with the memory gates open, so the step depends on the past."""
    return gated_tiny(SIZE, gate=0.4, null_value_std=0.5)


def test_compiled_step_equals_eager_with_the_memory_fed_back_and_compiles_once():
    model = gated_model()
    logs: list[str] = []
    compiled = create_runner(model, "compiled", "cpu", log=logs.append)
    assert len(logs) == 1 and "compiled and warmed up" in logs[0], logs
    eager = EagerRunner(model, "cpu")
    generator = torch.Generator().manual_seed(1)
    frames = [torch.rand(1, 3, *SIZE, generator=generator) * 255 for _ in range(5)]
    # Every frame after creation reuses the compiled step: a recompile would raise.
    with torch.compiler.set_stance("fail_on_recompile"):
        parity = compare_step_outputs(eager, compiled, eager.initial_memory(),
                                      compiled.initial_memory(), frames)
    for frame in parity:
        assert max(frame.relative_errors.values()) <= 1e-4, frame
        assert frame.mask_iou >= 0.99, frame
    # The memory was in use: the last frame differs from the same frame with an empty memory.
    last_alone = eager(frames[-1], eager.initial_memory())
    last_streamed = compiled(frames[-1], compiled(frames[-2], compiled.initial_memory()).memory)
    assert not torch.allclose(last_alone.class_logits, last_streamed.class_logits, atol=1e-3)


def test_compiled_refuses_what_it_cannot_run():
    model = gated_model()
    with pytest.raises(ValueError, match="precision 'int8' runs on backend 'onnxruntime'"):
        create_runner(model, "compiled", "cpu", options=RunnerOptions(precision="int8"))
    with pytest.raises(ValueError, match="device"):
        create_runner(model, "compiled", "tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="sees no CUDA device"):
            create_runner(model, "compiled", "cuda")
