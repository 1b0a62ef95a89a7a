"""Serialized TensorRT engines of the step (backend `tensorrt_engine`): what binds to what,
the sidecar file that says what an engine was built from and for, and its checks.

The engine is built on the robot from the ONNX export (`metaseg-export --format onnx`) by
`trtexec` or by `build_engine` here; TensorRT engines only run with the TensorRT version and
the GPU model they were built with. Beside `<name>.engine` lies `<name>.engine.json`:

    tensorrt_version, gpu, compute_capability   where the engine was built
    precision                                   float16 (trtexec --fp16) or float32
    image_size                                  the network's input (height, width)
    weights_sha256                              the ONNX initializers' digest (onnx_weights_digest)
    onnx_file, config, bindings                 the export it came from, MetaSegConfig as a dict,
                                                the I/O tensors by name, shape and dtype

`check_engine` compares a sidecar with the machine and the request and refuses any mismatch
with the command that rebuilds the engine. No torch here (the runner is in
inference/runners/tensorrt_engine.py); onnx is imported where a graph is read.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metaseg_ros.errors import ArtifactError

ENGINE_SUFFIX = ".engine"
ENGINE_FORMAT = "metaseg-tensorrt-engine"
ENGINE_FORMAT_VERSION = 1
ENGINE_PRECISIONS = ("float16", "float32")
# The step's tensors (model/export.py INPUT_NAMES / OUTPUT_NAMES, repeated here without torch;
# test_tensorrt_engine.py checks they agree). Each memory output feeds the input it names.
INPUT_NAMES = ("images", "memory_features", "memory_queries", "memory_valid",
               "memory_mask_features")
OUTPUT_NAMES = ("class_logits", "mask_logits", "query_embeddings", "next_memory_features",
                "next_memory_queries", "next_memory_valid", "next_memory_mask_features")
MEMORY_FEEDBACK = {"next_memory_features": "memory_features",
                   "next_memory_queries": "memory_queries", "next_memory_valid": "memory_valid",
                   "next_memory_mask_features": "memory_mask_features"}
FLOAT16_MAX = 65504.0
# ONNX TensorProto element types the step may bind, by numpy name.
ONNX_DTYPES = {1: "float32", 10: "float16", 6: "int32", 7: "int64", 9: "bool"}


@dataclass(frozen=True)
class Binding:
    """One I/O tensor of the engine: name, fixed shape, numpy dtype name, direction."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    is_input: bool


@dataclass(frozen=True)
class BindingPlan:
    """The engine's I/O in the step's order, and which output feeds which input."""

    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]

    def by_name(self) -> dict[str, Binding]:
        """Every binding by tensor name."""
        return {b.name: b for b in (*self.inputs, *self.outputs)}


def binding_plan(onnx_model: Any) -> BindingPlan:
    """The bindings of an ONNX step graph; ArtifactError unless the names are the step's
    (in order), every dimension is static and each memory output has its input's shape."""
    def bindings(values: Iterable[Any], is_input: bool) -> tuple[Binding, ...]:
        found = []
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            if any(d is None or d <= 0 for d in dims):
                raise ArtifactError(f"tensor {value.name} has a dynamic shape "
                                    f"{[d.dim_param or d.dim_value for d in tensor.shape.dim]}: "
                                    "the engine needs static shapes (export with fixed sizes)")
            if tensor.elem_type not in ONNX_DTYPES:
                raise ArtifactError(f"tensor {value.name} has ONNX type {tensor.elem_type}")
            found.append(Binding(value.name, tuple(dims), ONNX_DTYPES[tensor.elem_type],
                                 is_input))
        return tuple(found)

    graph = onnx_model.graph
    initializers = {t.name for t in graph.initializer}
    plan = BindingPlan(bindings([v for v in graph.input if v.name not in initializers], True),
                       bindings(graph.output, False))
    names = ([b.name for b in plan.inputs], [b.name for b in plan.outputs])
    if names != (list(INPUT_NAMES), list(OUTPUT_NAMES)):
        raise ArtifactError(f"inputs {names[0]} / outputs {names[1]} are not the step's "
                            f"{list(INPUT_NAMES)} / {list(OUTPUT_NAMES)}")
    by_name = plan.by_name()
    for output, input_name in MEMORY_FEEDBACK.items():
        if by_name[output].shape != by_name[input_name].shape:
            raise ArtifactError(f"{output} {by_name[output].shape} cannot feed {input_name} "
                                f"{by_name[input_name].shape}")
    return plan


def float16_range_problems(onnx_model: Any, limit: float = FLOAT16_MAX) -> list[str]:
    """Float initializers and Constant values that float16 cannot hold (|x| > 65504, inf,
    nan): what an engine built with --fp16 would turn into inf. Empty when all fit."""
    from onnx import numpy_helper

    def tensors() -> Iterable[tuple[str, Any]]:
        for tensor in onnx_model.graph.initializer:
            yield f"initializer {tensor.name}", tensor
        for node in onnx_model.graph.node:
            if node.op_type == "Constant":
                for attribute in node.attribute:
                    if attribute.name == "value":
                        yield f"Constant {node.output[0]}", attribute.t
                    elif attribute.name in ("value_float", "value_floats"):
                        values = [attribute.f] if attribute.name == "value_float" \
                            else list(attribute.floats)
                        yield f"Constant {node.output[0]}", values

    problems = []
    for where, tensor in tensors():
        if isinstance(tensor, list):
            values = tensor
        elif tensor.data_type in (1, 10, 11, 16):  # float, float16, double, bfloat16
            values = numpy_helper.to_array(tensor).reshape(-1).tolist()
        else:
            continue
        worst = max((abs(v) if math.isfinite(v) else math.inf for v in values), default=0.0)
        if worst > limit:
            problems.append(f"{where}: |value| up to {worst:g} > {limit:g}")
    return problems


def onnx_weights_digest(onnx_model: Any) -> str:
    """sha256 over the ONNX initializers (names, types, dims, bytes): the weights exported."""
    from onnx import numpy_helper

    digest = hashlib.sha256()
    for tensor in sorted(onnx_model.graph.initializer, key=lambda t: t.name):
        array = numpy_helper.to_array(tensor)
        digest.update(f"{tensor.name}|{tensor.data_type}|{tuple(tensor.dims)}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def sidecar_path(engine: str | Path) -> Path:
    """<engine>.json beside the engine."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def rebuild_command(onnx_file: str | Path, engine: str | Path, precision: str) -> str:
    """The commands that rebuild an engine and its sidecar on this machine."""
    fp16 = " --fp16" if precision == "float16" else ""
    onnx_q, engine_q = shlex.quote(str(onnx_file)), shlex.quote(str(engine))
    return (f"trtexec --onnx={onnx_q} --saveEngine={engine_q}{fp16} && metaseg-export "
            f"--describe-engine {engine_q} --onnx-file {onnx_q} --precision {precision}")


@dataclass(frozen=True)
class EngineDescription:
    """The sidecar's content (see the module docstring)."""

    tensorrt_version: str
    gpu: str
    compute_capability: str
    precision: str
    image_size: tuple[int, int]
    weights_sha256: str
    onnx_file: str
    config: dict[str, Any] = field(repr=False)
    bindings: tuple[Binding, ...] = ()

    def to_json(self) -> str:
        """The sidecar text."""
        document = asdict(self)
        document.update(format=ENGINE_FORMAT, version=ENGINE_FORMAT_VERSION)
        return json.dumps(document, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> EngineDescription:
        """Parse a sidecar; ArtifactError naming `source` when it is not one."""
        try:
            document = json.loads(text)
            if document.pop("format", None) != ENGINE_FORMAT:
                raise ArtifactError(f"{source}: not a {ENGINE_FORMAT} sidecar")
            if document.pop("version", None) != ENGINE_FORMAT_VERSION:
                raise ArtifactError(f"{source}: unsupported sidecar version")
            document["image_size"] = tuple(document["image_size"])
            document["bindings"] = tuple(
                Binding(b["name"], tuple(b["shape"]), b["dtype"], b["is_input"])
                for b in document["bindings"])
            return cls(**document)
        except (ValueError, KeyError, TypeError) as error:
            raise ArtifactError(f"{source}: malformed engine sidecar ({error})") from error

    def plan(self) -> BindingPlan:
        """The recorded bindings as a plan."""
        return BindingPlan(tuple(b for b in self.bindings if b.is_input),
                           tuple(b for b in self.bindings if not b.is_input))


@dataclass(frozen=True)
class RuntimeFacts:
    """What the machine that loads an engine has."""

    tensorrt_version: str
    gpu: str
    compute_capability: str


def describe_engine(engine: str | Path, onnx_file: str | Path, precision: str,
                    facts: RuntimeFacts) -> EngineDescription:
    """Write the sidecar of an engine built from `onnx_file` here; returns it."""
    import onnx

    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f"precision must be one of {ENGINE_PRECISIONS}, got {precision!r}")
    engine, onnx_file = Path(engine), Path(onnx_file)
    for path in (engine, onnx_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
    model = onnx.load(str(onnx_file))
    plan = binding_plan(model)
    metadata = {p.key: p.value for p in model.metadata_props}
    if "metaseg_artifact" not in metadata:
        raise ArtifactError(f"{onnx_file} carries no metaseg_artifact metadata: export it "
                            "with metaseg-export --format onnx")
    config = json.loads(metadata["metaseg_artifact"])["config"]
    height, width = plan.inputs[0].shape[2:]
    description = EngineDescription(
        facts.tensorrt_version, facts.gpu, facts.compute_capability, precision,
        (height, width), onnx_weights_digest(model), str(onnx_file.resolve()), config,
        (*plan.inputs, *plan.outputs))
    sidecar_path(engine).write_text(description.to_json())
    return description


def read_engine_sidecar(engine: str | Path) -> EngineDescription:
    """The sidecar beside an engine; ArtifactError saying how to write it when missing."""
    engine = Path(engine)
    sidecar = sidecar_path(engine)
    if not sidecar.is_file():
        raise ArtifactError(
            f"{sidecar} not found: describe the engine where it was built with "
            f"`metaseg-export --describe-engine {engine} --onnx-file <the .onnx it was built "
            "from> --precision float16` (float32 without --fp16)")
    return EngineDescription.from_json(sidecar.read_text(), str(sidecar))


def check_engine(engine: str | Path, description: EngineDescription, facts: RuntimeFacts,
                 precision: str | None = None, image_size: tuple[int, int] | None = None,
                 weights_sha256: str | None = None) -> None:
    """Refuse an engine that does not fit this machine or the request (ArtifactError with
    every mismatch and the rebuild command). None skips that comparison; when the ONNX file
    it was built from is still there, its weights must be the recorded ones."""
    mismatches = []
    for what, built, here in (("TensorRT", description.tensorrt_version,
                               facts.tensorrt_version),
                              ("GPU", description.gpu, facts.gpu),
                              ("compute capability", description.compute_capability,
                               facts.compute_capability)):
        if built != here:
            mismatches.append(f"{what} {built!r} at build, {here!r} here")
    if precision is not None and precision != description.precision:
        mismatches.append(f"precision {description.precision}, {precision} requested")
    if image_size is not None and tuple(image_size) != tuple(description.image_size):
        mismatches.append(f"input {description.image_size}, {tuple(image_size)} requested")
    if weights_sha256 is None and Path(description.onnx_file).is_file():
        import onnx

        weights_sha256 = onnx_weights_digest(onnx.load(description.onnx_file))
    if weights_sha256 is not None and weights_sha256 != description.weights_sha256:
        mismatches.append(f"weights changed since the build ({description.weights_sha256[:12]}"
                          f" at build, {weights_sha256[:12]} now)")
    if mismatches:
        raise ArtifactError(
            f"engine {engine} does not fit: {'; '.join(mismatches)}. Rebuild it: "
            f"{rebuild_command(description.onnx_file, engine, precision or description.precision)}")
