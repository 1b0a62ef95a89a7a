"""Writing artifacts of the network's step: ONNX, torch.export programs (.pt2) and
Torch-TensorRT programs, each exported once into the cache (`ensure_artifact`) or written by
metaseg-export; and the parity check of an artifact against eager PyTorch.

What an artifact holds and how it is read back: inference/artifacts.py.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from metaseg_ros.inference.artifacts import (
    DESCRIPTION_KEY,
    PROGRAM_DESCRIPTION_FILE,
    ArtifactDescription,
    ExportSettings,
    artifact_fingerprint,
    atomic_destination,
    cached_artifact_path,
    default_cache_dir,
    sidecar_path,
)
from metaseg_ros.inference.postprocess import select_instances
from metaseg_ros.inference.preprocess import Letterbox
from metaseg_ros.inference.quantize import quantize_onnx
from metaseg_ros.inference.runners.tensorrt import import_torch_tensorrt
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.export import example_inputs, export_onnx, export_program
from metaseg_ros.model.layers import set_deformable_sampling
from metaseg_ros.model.metasegmenter import MetaSegmenter

Log = Callable[[str], None]


def export_copy(model: MetaSegmenter, settings: ExportSettings) -> MetaSegmenter:
    """A copy of the model in eval mode on the settings' device, dtype and sampling."""
    clone = copy.deepcopy(model).eval()
    clone.to(device=settings.device, dtype=settings.dtype)
    set_deformable_sampling(clone, settings.sampling)
    return clone


def write_onnx_artifact(model: MetaSegmenter, path: str | Path,
                        settings: ExportSettings | None = None,
                        fingerprint: str | None = None) -> Path:
    """Export the step to ONNX with its description embedded (precision int8: then its
    matrix products quantised, inference/quantize.py); returns the path."""
    settings = settings or ExportSettings("onnx")
    if settings.kind != "onnx":
        raise ValueError(f"write_onnx_artifact needs kind 'onnx', got {settings.kind!r}")
    path = Path(path)
    description = ArtifactDescription(model.config, settings,
                                      fingerprint or artifact_fingerprint(model, settings))
    clone = export_copy(model, settings)
    metadata = {DESCRIPTION_KEY: description.to_json()}
    with atomic_destination(path) as temporary:
        if settings.precision == "int8":
            float_file = temporary.with_name(f"{temporary.stem}.float32.onnx")
            try:
                export_onnx(clone, float_file, opset=settings.opset, metadata=metadata)
                quantize_onnx(float_file, temporary)
            finally:
                float_file.unlink(missing_ok=True)
        else:
            export_onnx(clone, temporary, opset=settings.opset, metadata=metadata)
    return path


def write_program_artifact(model: MetaSegmenter, path: str | Path,
                           settings: ExportSettings | None = None,
                           fingerprint: str | None = None) -> Path:
    """torch.export the step and save it (.pt2) with its description; returns the path."""
    settings = settings or ExportSettings("pt2")
    if settings.kind != "pt2":
        raise ValueError(f"write_program_artifact needs kind 'pt2', got {settings.kind!r}")
    path = Path(path)
    description = ArtifactDescription(model.config, settings,
                                      fingerprint or artifact_fingerprint(model, settings))
    program = export_program(export_copy(model, settings))
    with atomic_destination(path) as temporary:
        torch.export.save(program, str(temporary),
                          extra_files={PROGRAM_DESCRIPTION_FILE: description.to_json()})
    return path



# --- Torch-TensorRT programs ------------------------------------------------------------

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


@dataclass(frozen=True)
class CachedArtifact:
    """An artifact in the cache: its path, and whether this call created it."""

    path: Path
    created: bool


def ensure_artifact(model: MetaSegmenter, settings: ExportSettings, label: str = "",
                    cache_dir: Path | None = None, log: Log = print,
                    writer: Callable[[MetaSegmenter, Path, ExportSettings, str], Any]
                    | None = None) -> CachedArtifact:
    """The cached artifact for (model, settings), exported first when it is not there yet.

    writer: how to write a missing artifact (default: by kind, ONNX or .pt2).
    """
    cache_dir = cache_dir or default_cache_dir()
    fingerprint = artifact_fingerprint(model, settings)
    path = cached_artifact_path(cache_dir, label or model.config.name, settings, fingerprint)
    if path.is_file() and path.stat().st_size > 0:
        log(f"using cached {settings.kind} artifact {path}")
        return CachedArtifact(path, created=False)
    if writer is None:
        writer = {"onnx": write_onnx_artifact, "pt2": write_program_artifact,
                  "tensorrt": build_tensorrt_artifact}[settings.kind]
    log(f"exporting {model.config.name} to {settings.kind} ({path}); this happens once per "
        "checkpoint, config and library version")
    writer(model, path, settings, fingerprint)
    return CachedArtifact(path, created=True)


@dataclass(frozen=True)
class FrameParity:
    """One frame of a backend compared with eager PyTorch.

    relative_errors: max |got - expected| / max(|expected|, 1) per output name.
    mask_iou: IoU of all queries' binary masks (logit > 0) between the two.
    """

    frame: int
    relative_errors: dict[str, float]
    mask_iou: float

    def passes(self, tolerance: float, min_iou: float) -> bool:
        """Within the tolerance on every output and at least min_iou on the masks."""
        return max(self.relative_errors.values()) <= tolerance and self.mask_iou >= min_iou


def compare_step_outputs(reference: Callable, candidate: Callable, reference_memory: Any,
                         candidate_memory: Any, frames: list[torch.Tensor]
                         ) -> list[FrameParity]:
    """Run both runners over the frames, each feeding back its own memory, and compare.

    reference / candidate: ModelRunner-like callables `(images, memory) -> NetworkOutput`.
    """
    return output_parity(step_output_pairs(reference, candidate, reference_memory,
                                           candidate_memory, frames))


def step_output_pairs(reference: Callable, candidate: Callable, reference_memory: Any,
                      candidate_memory: Any, frames: list[torch.Tensor]) -> list[tuple[Any, Any]]:
    """(reference output, candidate output) of each frame, each runner feeding back its own
    memory (the runners as in compare_step_outputs)."""
    pairs = []
    for frame in frames:
        expected = reference(frame, reference_memory)
        got = candidate(frame, candidate_memory)
        reference_memory, candidate_memory = expected.memory, got.memory
        pairs.append((expected, got))
    return pairs


def output_parity(outputs: list[tuple[Any, Any]]) -> list[FrameParity]:
    """FrameParity of each (reference, candidate) output pair (step_output_pairs)."""
    results = []
    for index, (expected, got) in enumerate(outputs):
        pairs = {"class_logits": (got.class_logits, expected.class_logits),
                 "mask_logits": (got.mask_logits, expected.mask_logits),
                 "query_embeddings": (got.query_embeddings, expected.query_embeddings),
                 "memory_features": (got.memory.features, expected.memory.features),
                 "memory_queries": (got.memory.queries, expected.memory.queries),
                 "memory_valid": (got.memory.valid, expected.memory.valid),
                 "memory_mask_features": (got.memory.mask_features,
                                          expected.memory.mask_features)}
        errors = {}
        for name, (a, b) in pairs.items():
            a = a.detach().float().cpu()
            b = b.detach().float().cpu()
            errors[name] = ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()
        a_masks = got.mask_logits.detach().float().cpu() > 0
        b_masks = expected.mask_logits.detach().float().cpu() > 0
        union = (a_masks | b_masks).sum().item()
        iou = 1.0 if union == 0 else (a_masks & b_masks).sum().item() / union
        results.append(FrameParity(index, errors, iou))
    return results


@dataclass(frozen=True)
class DetectionParity:
    """Detections of a backend compared with eager PyTorch's, matched by query slot (the
    check for int8, whose raw outputs differ by design).

    matched / unmatched: detections found by both / by one of the two only;
    median_iou: median mask IoU of the matched pairs (1.0 when none);
    score_gap_p90: 90th percentile of their score differences (0.0 when none).
    """

    matched: int
    unmatched: int
    median_iou: float
    score_gap_p90: float

    def passes(self, min_iou: float, max_score_gap: float) -> bool:
        """Some detections matched, their masks and scores within the limits."""
        return self.matched > 0 and self.median_iou >= min_iou \
            and self.score_gap_p90 <= max_score_gap


def compare_detections(outputs: list[tuple[Any, Any]], letterbox: Letterbox,
                       settings: PostprocessSettings) -> DetectionParity:
    """Instances selected with `settings` from each (reference, candidate) output pair
    (step_output_pairs over frames letterboxed by `letterbox`), compared query slot by
    slot."""
    ious: list[float] = []
    gaps: list[float] = []
    unmatched = 0
    for pair in outputs:
        expected, got = (_detections_by_query(output, letterbox, settings) for output in pair)
        unmatched += len(expected.keys() ^ got.keys())
        for query in expected.keys() & got.keys():
            a, b = expected[query].mask, got[query].mask
            union = np.count_nonzero(a | b)
            ious.append(np.count_nonzero(a & b) / union if union else 1.0)
            gaps.append(abs(expected[query].score - got[query].score))
    return DetectionParity(len(ious), unmatched,
                           float(np.median(ious)) if ious else 1.0,
                           float(np.percentile(gaps, 90)) if gaps else 0.0)


def _detections_by_query(output: Any, letterbox: Letterbox, settings: PostprocessSettings
                         ) -> dict[int, Any]:
    """The instances selected from one output (batch of one), by decoder query slot."""
    selected = select_instances(output.class_logits[0], output.mask_logits[0],
                                output.query_embeddings[0], letterbox, settings)
    return {detection.query_index: detection for detection in selected.detections}
