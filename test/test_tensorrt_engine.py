"""The TensorRT path Jetson users take, up to the engine: `metaseg-export --format onnx`
writes a graph TensorRT's ONNX parser accepts (ops and attributes against TensorRT's
published support table, static shapes, the memory ring as named I/O, constants within
float16), and the tensorrt_engine backend's sidecar, binding plan and checks. Running an
engine needs TensorRT and a GPU: not here (runners/tensorrt_engine.py says so)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from metaseg_ros.cli.export import main as export_main
from metaseg_ros.errors import ArtifactError, BackendUnavailableError
from metaseg_ros.inference import engine as engine_module
from metaseg_ros.inference.builder import artifact_backend, is_artifact_path, runner_from_artifact
from metaseg_ros.inference.engine import (
    EngineDescription,
    RuntimeFacts,
    binding_plan,
    check_engine,
    describe_engine,
    float16_range_problems,
    onnx_weights_digest,
    read_engine_sidecar,
    sidecar_path,
)
from metaseg_ros.inference.runners.tensorrt_engine import import_tensorrt
from metaseg_ros.model.config import config_from_dict, get_config
from metaseg_ros.model.export import INPUT_NAMES, OUTPUT_NAMES
from metaseg_ros.model.metasegmenter import step_input_shapes
from metaseg_ros.settings import BACKENDS

# TensorRT's ONNX operator support, as published in onnx/onnx-tensorrt docs/operators.md
# ("TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24"): the
# operators marked Y (the stored version of that file; JetPack 6.1/6.2 ship TensorRT 10.3).
# Every operator the export uses is also Y in the TensorRT 8.4 version of the table (opset 13)
# except LayerNormalization (opset 17).
TRT_TABLE = "onnx/onnx-tensorrt docs/operators.md, TensorRT 10.15"
TRT_OPSETS = range(9, 25)
_SUPPORTED_ROWS = """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape
Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum
Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile
TopK Transpose Trilu Unsqueeze Upsample Where Xor
"""
TRT_SUPPORTED = frozenset(_SUPPORTED_ROWS.split())
# The table's restrictions on attributes and inputs that apply to operators the export uses.
RESIZE_ALLOWED = {
    "coordinate_transformation_mode": {"half_pixel", "pytorch_half_pixel",
                                       "tf_half_pixel_for_nn", "asymmetric", "align_corners"},
    "mode": {"nearest", "linear"},
    "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
    "keep_aspect_ratio_policy": {"stretch"},
    "antialias": {0},
}
# Cast targets among TensorRT's types: FLOAT, UINT8, INT32, INT64, BOOL, FLOAT16, BFLOAT16.
CAST_TARGETS = {1, 2, 6, 7, 9, 10, 16}
# Operators whose `axes` input must be a build-time constant.
CONSTANT_AXES = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                 "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
                 "Squeeze", "Unsqueeze"}
POOLS = {"AveragePool", "MaxPool", "LpPool"}
SIZE = (128, 128)
FACTS = RuntimeFacts("10.3.0", "Orin", "8.7")


def parser_problems(model: onnx.ModelProto) -> list[str]:
    """Every op or attribute of the graph outside TensorRT's published support (empty: ok)."""
    problems = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if set(opsets) != {"ai.onnx"} or opsets["ai.onnx"] not in TRT_OPSETS:
        problems.append(f"opsets {opsets}, TensorRT reads ai.onnx {TRT_OPSETS}")
    if model.functions:
        problems.append(f"local functions {[f.name for f in model.functions]}")
    constants = {t.name for t in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attributes = {k: v.decode() if isinstance(v, bytes) else v for k, v in attributes.items()}
        where = f"{node.op_type} {node.name}"
        if node.op_type not in TRT_SUPPORTED:
            problems.append(f"{where}: not supported by TensorRT's parser")
        if node.op_type == "Resize":
            for name, allowed in RESIZE_ALLOWED.items():
                if name in attributes and attributes[name] not in allowed:
                    problems.append(f"{where}: {name}={attributes[name]}")
            if "axes" in attributes:
                problems.append(f"{where}: axes attribute")
        if node.op_type in POOLS:
            if len(attributes.get("kernel_shape", ())) not in (2, 3):
                problems.append(f"{where}: only 2D or 3D pooling")
            if any(d != 1 for d in attributes.get("dilations", ())):
                problems.append(f"{where}: dilations must be ones")
        if node.op_type in CONSTANT_AXES and len(node.input) > 1 and node.input[1] and \
                node.input[1] not in constants:
            problems.append(f"{where}: axes {node.input[1]} is not a constant")
        if node.op_type == "LayerNormalization" and any(node.output[1:]):
            problems.append(f"{where}: only the first output is supported")
        if node.op_type == "Cast" and attributes["to"] not in CAST_TARGETS:
            problems.append(f"{where}: cast to ONNX type {attributes['to']}")
        if node.op_type == "Constant" and not {"value", "value_float", "value_floats",
                                               "value_int", "value_ints"} >= set(attributes):
            problems.append(f"{where}: attributes {sorted(attributes)}")
    return problems


@pytest.fixture(scope="module")
def export_run(tmp_path_factory) -> tuple[Path, str]:
    """`metaseg-export --config tiny --format onnx` at 128x128 (the tiny model, every layer):
    the ONNX file and what the command printed."""
    folder = tmp_path_factory.mktemp("export")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert export_main(["--config", "tiny", "--format", "onnx", "--image-size",
                            *map(str, SIZE), "--frames", "0", "--output-dir", str(folder)]) == 0
    return folder / f"tiny-{SIZE[0]}x{SIZE[1]}.onnx", printed.getvalue()


@pytest.fixture
def exported(export_run: tuple[Path, str]) -> Path:
    """The exported ONNX file."""
    return export_run[0]


@pytest.mark.slow
def test_export_passes_tensorrts_parser_support(export_run: tuple[Path, str]) -> None:
    path, printed = export_run
    model = onnx.load(str(path))
    assert len(model.graph.node) > 500  # the whole network, not a stub
    assert parser_problems(model) == [], TRT_TABLE
    assert float16_range_problems(model) == []
    assert "TensorRT: static shapes, step tensor names, constants within float16: ok" in printed


def test_the_support_check_finds_what_tensorrt_refuses() -> None:
    """The checks above can fail: an unsupported op, an unsupported Resize mode, a
    non-constant axes input and a pool with dilations are each reported."""
    nodes = [helper.make_node("Unique", ["x"], ["u"]),
             helper.make_node("Resize", ["x", "", "s"], ["r"], mode="cubic"),
             helper.make_node("ReduceMin", ["x", "axes_in"], ["m"]),
             helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], dilations=[2, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        n, onnx.TensorProto.FLOAT, [1]) for n in ("x", "s", "axes_in")], [])
    problems = parser_problems(helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 18)]))
    assert len(problems) == 4
    assert {p.split()[0] for p in problems} == {"Unique", "Resize", "ReduceMin", "MaxPool"}


@pytest.mark.slow
def test_static_shapes_and_the_memory_ring_as_named_io(exported: Path) -> None:
    model = onnx.load(str(exported))
    plan = binding_plan(model)
    config = get_config("tiny", image_size=SIZE)
    assert [b.name for b in plan.inputs] == list(INPUT_NAMES) == list(engine_module.INPUT_NAMES)
    assert [b.name for b in plan.outputs] == list(OUTPUT_NAMES) == \
        list(engine_module.OUTPUT_NAMES)
    assert [b.shape for b in plan.inputs] == [tuple(s) for s in step_input_shapes(config)]
    assert all(b.dtype == "float32" for b in (*plan.inputs, *plan.outputs))
    by_name = plan.by_name()
    for output, input_name in engine_module.MEMORY_FEEDBACK.items():
        assert by_name[output].shape == by_name[input_name].shape

    dynamic = onnx.load(str(exported))
    dynamic.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(ArtifactError, match="dynamic shape"):
        binding_plan(dynamic)
    renamed = onnx.load(str(exported))
    renamed.graph.output[3].name = "memory_out"
    with pytest.raises(ArtifactError, match="not the step's"):
        binding_plan(renamed)


def test_float16_range_check_reads_initializers_and_constants() -> None:
    ok = numpy_helper.from_array(np.array([65504.0, -1.0], np.float32), "ok")
    big = numpy_helper.from_array(np.array([1.0, -7.0e4], np.float32), "big")
    ints = numpy_helper.from_array(np.array([10**6], np.int64), "ints")
    nodes = [helper.make_node("Constant", [], ["c"], value_float=float("inf")),
             helper.make_node("Constant", [], ["d"], value=numpy_helper.from_array(
                 np.array([1e5], np.float32)))]
    graph = helper.make_graph(nodes, "g", [], [], initializer=[ok, big, ints])
    problems = float16_range_problems(helper.make_model(graph))
    assert [p.split(":")[0] for p in problems] == ["initializer big", "Constant c",
                                                  "Constant d"]


@pytest.mark.slow
def test_sidecar_round_trip_and_every_mismatch_refused(exported: Path, tmp_path: Path) -> None:
    onnx_file = tmp_path / exported.name
    shutil.copy(exported, onnx_file)
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"serialized engine")  # the sidecar describes it; nothing parses it here
    written = describe_engine(engine, onnx_file, "float16", FACTS)
    description = read_engine_sidecar(engine)
    assert description == written
    assert (description.image_size, description.precision, description.gpu) == \
        (SIZE, "float16", "Orin")
    assert description.weights_sha256 == onnx_weights_digest(onnx.load(str(onnx_file)))
    assert description.plan() == binding_plan(onnx.load(str(onnx_file)))
    assert config_from_dict(description.config) == get_config("tiny", image_size=SIZE)
    check_engine(engine, description, FACTS, precision="float16", image_size=SIZE)

    mismatches = {
        "TensorRT '10.3.0' at build, '10.7.0' here":
            dict(facts=RuntimeFacts("10.7.0", "Orin", "8.7")),
        "GPU 'Orin' at build, 'NVIDIA H200' here":
            dict(facts=RuntimeFacts("10.3.0", "NVIDIA H200", "8.7")),
        "precision float16, float32 requested": dict(precision="float32"),
        "input (128, 128), (256, 256) requested": dict(image_size=(256, 256)),
    }
    for expected, change in mismatches.items():
        with pytest.raises(ArtifactError) as error:
            check_engine(engine, description, change.pop("facts", FACTS), **change)
        message = str(error.value)
        assert expected in message and "\n" not in message
        precision = change.get("precision", "float16")  # the rebuild makes what is asked for
        fp16 = " --fp16" if precision == "float16" else ""
        assert f"trtexec --onnx={onnx_file.resolve()} --saveEngine={engine}{fp16} && " \
            f"metaseg-export --describe-engine {engine}" in message
        assert message.endswith(f"--precision {precision}")

    model = onnx.load(str(onnx_file))  # new weights exported over the same file
    weights = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    changed = numpy_helper.to_array(weights) + 1.0
    weights.CopyFrom(numpy_helper.from_array(changed, weights.name))
    onnx.save(model, str(onnx_file))
    with pytest.raises(ArtifactError, match="weights changed since the build"):
        check_engine(engine, description, FACTS)


def test_missing_or_foreign_sidecar_says_how_to_write_one(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="metaseg-export --describe-engine"):
        read_engine_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ArtifactError, match="not a metaseg-tensorrt-engine sidecar"):
        read_engine_sidecar(engine)
    with pytest.raises(ArtifactError, match="malformed"):
        EngineDescription.from_json("{", "x.json")


def test_without_tensorrt_the_backend_says_so_in_one_line(tmp_path: Path, capsys) -> None:
    assert "tensorrt_engine" in BACKENDS
    engine = tmp_path / "tiny-512x512.engine"
    engine.write_bytes(b"x")
    assert is_artifact_path(engine) and artifact_backend(engine) == "tensorrt_engine"
    for call in (lambda: import_tensorrt("cuda"),
                 lambda: runner_from_artifact(engine, "auto", "cuda")):
        with pytest.raises(BackendUnavailableError) as error:
            call()
        message = str(error.value)
        assert message.startswith("backend 'tensorrt_engine' is unavailable")
        assert "tensorrt Python package" in message and "\n" not in message
    assert export_main(["--describe-engine", str(engine), "--onnx-file", "m.onnx",
                        "--precision", "float16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metaseg-export: error: backend 'tensorrt_engine' is unavailable")
    assert err.count("\n") == 1
    assert export_main(["--describe-engine", str(engine)]) == 2
    assert "needs --onnx-file and --precision" in capsys.readouterr().err
