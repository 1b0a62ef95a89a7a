"""What `backend: auto` stands for on this machine, decided by measuring the candidates.

At the first start with a given model, input size, precision, thread count, library versions
and hardware, each candidate backend (CPU: eager, ONNX Runtime; CUDA: eager, CUDA graph, the
compiled step, Torch-TensorRT where installed) runs a few frames with the memory fed back; a
candidate whose outputs disagree with eager PyTorch (relative error above 1e-3 or mask IoU
below 0.99, as the export checks) or that cannot start is rejected; the candidates then take turns
frame by frame (so a burst of load elsewhere slows them alike) and the fastest median step
wins. The
decision and its reasons are cached as JSON beside the exported artifacts and reused until
one of those inputs changes. Measured rather than assumed because the ranking differs between
machines (ONNX Runtime was faster than eager on an AMD EPYC and slower on an Intel Xeon).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metaseg_ros.inference.artifacts import (
    atomic_destination,
    default_cache_dir,
    library_versions,
    weights_digest,
)
from metaseg_ros.inference.export import compare_step_outputs
from metaseg_ros.inference.runner import ModelRunner
from metaseg_ros.model.config import config_to_dict
from metaseg_ros.model.metasegmenter import MetaSegmenter, step_input_shapes

Log = Callable[[str], None]
PARITY_TOLERANCE = 1e-3
PARITY_MIN_IOU = 0.99


@dataclass(frozen=True)
class BackendDecision:
    """The backend chosen, each candidate's median step (ms) and why others were rejected."""

    backend: str
    step_ms: dict[str, float]
    rejected: dict[str, str] = field(default_factory=dict)
    key: str = ""
    measured_on: str = ""

    def summary(self) -> str:
        """One line for the log."""
        timings = ", ".join(f"{name} {ms:.1f} ms" for name, ms in
                            sorted(self.step_ms.items(), key=lambda item: item[1]))
        rejected = "".join(f"; {name} rejected: {why}" for name, why in self.rejected.items())
        return f"backend auto chose {self.backend} ({timings} per step{rejected})"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def decision_key(model: MetaSegmenter, device: str, precision: str,
                 candidates: Sequence[str]) -> str:
    """Hash of everything the ranking depends on: weights, config (input size), precision,
    threads, candidates, library versions and hardware."""
    hardware = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads()}
    if device == "cuda" and torch.cuda.is_available():
        hardware["gpu"] = torch.cuda.get_device_name()
    versions = {}
    for kind in ("onnx", "pt2", "tensorrt"):
        versions.update(library_versions(kind))
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        versions["onnxruntime"] = "unavailable"
    document = {"weights": weights_digest(model), "config": config_to_dict(model.config),
                "device": device, "precision": precision, "candidates": sorted(candidates),
                "hardware": hardware, "versions": versions}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def choose_backend(model: MetaSegmenter, device: str, precision: str, candidates: Sequence[str],
                   make_runner: Callable[[str], ModelRunner], cache_dir: Path | None = None,
                   log: Log = print, frames: int = 6, warmup: int = 2,
                   remeasure: bool = False) -> tuple[BackendDecision, ModelRunner | None]:
    """The fastest agreeing candidate, from the cache or measured now.

    make_runner(name) builds a candidate's runner (exporting it when needed). Returns the
    decision and, when it was measured now, the winner's runner (so it is not built twice);
    None when the decision came from the cache. remeasure: ignore a cached decision.
    """
    key = decision_key(model, device, precision, candidates)
    path = (cache_dir or default_cache_dir()) / f"auto-backend-{key[:24]}.json"
    cached = None if remeasure else _read_decision(path, candidates)
    if cached is not None:
        log(f"{cached.summary()}; measured {cached.measured_on}, cached in {path}")
        return cached, None
    images = _frames(model, frames + warmup)
    runners: dict[str, ModelRunner] = {}
    rejected: dict[str, str] = {}
    reference: ModelRunner | None = None
    for name in candidates:
        try:
            runner = make_runner(name)
            if reference is None:
                reference = runner
            else:
                parity = compare_step_outputs(reference, runner, reference.initial_memory(),
                                              runner.initial_memory(), images[:3])
                worst = max(parity, key=lambda frame: max(frame.relative_errors.values()))
                if not all(frame.passes(PARITY_TOLERANCE, PARITY_MIN_IOU) for frame in parity):
                    rejected[name] = (f"outputs differ from {candidates[0]} (relative error "
                                      f"{max(worst.relative_errors.values()):.1e}, mask IoU "
                                      f"{min(f.mask_iou for f in parity):.3f})")
                    continue
            runners[name] = runner
        except Exception as error:  # a candidate that cannot run is not chosen
            rejected[name] = f"{type(error).__name__}: {error}"
    step_ms = _interleaved_median_ms(runners, images, warmup)
    if not step_ms:
        raise RuntimeError("backend auto: no candidate could run: " +
                           "; ".join(f"{name}: {why}" for name, why in rejected.items()))
    best = min(step_ms, key=step_ms.get)
    decision = BackendDecision(best, {k: round(v, 2) for k, v in step_ms.items()}, rejected,
                               key, time.strftime("%Y-%m-%d %H:%M:%S"))
    with atomic_destination(path) as temporary:
        temporary.write_text(json.dumps(dataclasses.asdict(decision), indent=2) + "\n")
    log(f"{decision.summary()}; measured now, cached in {path}")
    return decision, runners[best]


def _read_decision(path: Path, candidates: Sequence[str]) -> BackendDecision | None:
    """A cached decision that still names one of the candidates (None: measure again)."""
    try:
        decision = BackendDecision(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return decision if decision.backend in candidates else None


def _frames(model: MetaSegmenter, count: int) -> list[torch.Tensor]:
    """Deterministic frames in 0..255 at the network's input size (content does not change
    the cost of a step; different frames keep the memory changing)."""
    generator = torch.Generator().manual_seed(0)
    shape = step_input_shapes(model.config)[0]
    return [torch.rand(shape, generator=generator) * 255 for _ in range(count)]


def _interleaved_median_ms(runners: dict[str, ModelRunner], images: list[torch.Tensor],
                           warmup: int) -> dict[str, float]:
    """Median wall time of one step per runner, memory fed back, after `warmup` untimed
    steps. The runners take turns frame by frame, so a burst of load from elsewhere on the
    machine slows them alike instead of deciding the ranking."""
    memories = {name: runner.initial_memory() for name, runner in runners.items()}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for index, frame in enumerate(images):
        for name, runner in runners.items():
            synchronize = torch.cuda.synchronize if runner.device.type == "cuda" \
                else (lambda: None)
            synchronize()
            start = time.perf_counter()
            memories[name] = runner(frame, memories[name]).memory
            synchronize()
            if index >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items() if values}
