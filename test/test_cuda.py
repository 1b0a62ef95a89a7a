"""The GPU paths against the CPU: the eager and exported backends on CUDA compute what the
CPU computes (network outputs over frames with the memory fed back, detections and track ids
of the shipped model), and reduced precision stays close. Skipped without a CUDA device (CI
has none; run on a GPU machine: `pytest test/test_cuda.py`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
from metaseg_ros.inference.builder import auto_candidates, create_pipeline, create_runner
from metaseg_ros.inference.export import compare_step_outputs
from metaseg_ros.inference.preprocess import letterbox_image
from metaseg_ros.inference.runner import RunnerOptions
from metaseg_ros.inference.runners.eager import CudaGraphRunner, EagerRunner
from metaseg_ros.inference.settings import ModelSettings, PipelineSettings
from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.layers import MultiScaleDeformableAttention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

FRAMES = 6


def gated_model(memory: dict | None = None) -> MetaSegmenter:
    """The tiny config with random weights and the memory gates open (the carry's, with
    `memory` turning it on, half open)."""
    torch.manual_seed(0)
    model = MetaSegmenter(get_config("tiny", image_size=(256, 256), memory=memory or {}))
    with torch.no_grad():
        for index, layer in enumerate(model.transformer_decoder.layers):
            layer.memory_attn.gate.fill_(0.3 + 0.05 * index)
        if model.mask_memory is not None:
            model.mask_memory.gate[-1].bias.fill_(0.5)
    return model.eval()


def video(frames: int = FRAMES, size: tuple[int, int] = (360, 480)) -> list[np.ndarray]:
    """A synthetic video of the kind the shipped model was trained on."""
    generator = SyntheticVideoGenerator(SyntheticConfig(image_size=size, num_frames=frames),
                                        seed=5)
    script = generator.script(2)
    return [generator.render(script, index)[0] for index in range(frames)]


def network_inputs(model: MetaSegmenter) -> list[torch.Tensor]:
    return [letterbox_image(frame, model.config.image_size, model.config.pixel_mean)[0]
            for frame in video()]


@pytest.fixture(autouse=True)
def no_tf32():
    """Full float32 on the GPU for the parity checks (TF32 convolutions differ ~1e-3)."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def test_eager_cuda_matches_cpu_with_memory():
    cpu = EagerRunner(gated_model(), "cpu")
    cuda = EagerRunner(gated_model(), "cuda")
    parity = compare_step_outputs(cpu, cuda, cpu.initial_memory(), cuda.initial_memory(),
                                  network_inputs(cpu.model))
    for frame in parity:
        assert max(frame.relative_errors.values()) < 1e-3, frame
        assert frame.mask_iou >= 0.995, frame


def test_exported_program_on_cuda_matches_eager_cpu(tmp_path):
    cpu = EagerRunner(gated_model(), "cpu")
    exported = create_runner(gated_model(), "exported", "cuda",
                             options=RunnerOptions(cache_dir=tmp_path))
    parity = compare_step_outputs(cpu, exported, cpu.initial_memory(),
                                  exported.initial_memory(), network_inputs(cpu.model))
    for frame in parity:
        assert max(frame.relative_errors.values()) < 1e-3, frame
        assert frame.mask_iou >= 0.995, frame


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_reduced_precision_stays_close(precision):
    full = EagerRunner(gated_model(), "cuda")
    reduced = EagerRunner(gated_model(), "cuda", precision=precision)
    parity = compare_step_outputs(full, reduced, full.initial_memory(),
                                  reduced.initial_memory(), network_inputs(full.model))
    # Relative to the largest value; float16 keeps ~3 digits, bfloat16 ~2.
    max_error, min_iou = (0.02, 0.97) if precision == "float16" else (0.08, 0.93)
    for frame in parity:
        assert 0 < frame.relative_errors["class_logits"] < max_error, frame
        assert frame.mask_iou >= min_iou, frame


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_cuda_graph_replays_the_eager_step(precision):
    eager = EagerRunner(gated_model(), "cuda", precision=precision)
    graph = CudaGraphRunner(gated_model(), "cuda", precision=precision)
    parity = compare_step_outputs(eager, graph, eager.initial_memory(), graph.initial_memory(),
                                  network_inputs(eager.model))
    for frame in parity:
        assert max(frame.relative_errors.values()) < 1e-4, frame
        assert frame.mask_iou >= 0.999, frame


def test_cuda_graph_replays_the_carry_moved_on_by_the_flow():
    """memory.past_mask_motion makes its flow offsets on the device: capture works."""
    memory = {"pool_stride": 32, "past_mask_features": True, "past_mask_motion": True}
    eager = EagerRunner(gated_model(memory), "cuda")
    graph = CudaGraphRunner(gated_model(memory), "cuda")
    parity = compare_step_outputs(eager, graph, eager.initial_memory(), graph.initial_memory(),
                                  network_inputs(eager.model))
    for frame in parity:
        assert max(frame.relative_errors.values()) < 1e-4, frame


def test_cuda_graph_results_outlive_later_calls():
    graph = CudaGraphRunner(gated_model(), "cuda")
    first_frame, second_frame = network_inputs(graph._eager.model)[:2]
    first = graph(first_frame, graph.initial_memory())
    kept = first.mask_logits.clone(), first.memory.features.clone()
    second = graph(second_frame, first.memory)
    assert torch.equal(first.mask_logits, kept[0])
    assert torch.equal(first.memory.features, kept[1])
    # Another frame: logits move by far more than rounding (not merely 'not equal').
    assert (second.mask_logits - first.mask_logits).abs().max() > 1e-2


def test_training_on_cuda_after_inference_steps():
    """The deformable attention keeps a small constant per device between GPU steps (so a
    CUDA graph copies nothing from the host); one made under inference_mode must never reach
    a training step."""
    model = gated_model().cuda()
    runner = CudaGraphRunner(model, "cuda")
    runner(network_inputs(model)[0], runner.initial_memory())
    model.train()
    output = model(torch.rand(1, 3, 256, 256, device="cuda") * 255, model.initial_memory(
        1, device=torch.device("cuda")))
    (output.mask_logits.mean() + output.class_logits.mean()).backward()
    deformable = [m for m in model.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert deformable and all(m.sampling_offsets.weight.grad is not None for m in deformable)


def test_auto_on_cuda_measures_eager_the_cuda_graph_and_the_compiled_step():
    assert auto_candidates("cuda")[:3] == ["eager", "cudagraph", "compiled"]


def tracked(device: str, precision: str = "float32",
            backend: str = "auto") -> list[list[tuple[int, int, int]]]:
    """(track id, class id, mask pixels) per instance per frame, shipped model, full pipeline."""
    settings = PipelineSettings(ModelSettings(backend=backend, device=device,
                                              precision=precision))
    pipeline = create_pipeline(settings, log=lambda _: None)
    return [sorted((i.track_id, i.class_id, int(i.mask.sum())) for i in
                   pipeline.step(frame).instances) for frame in video()]


@pytest.mark.parametrize("backend", ["eager", "cudagraph", "compiled"])
def test_shipped_model_tracks_the_same_on_cuda_as_on_cpu(backend):
    cpu, cuda = tracked("cpu"), tracked("cuda", backend=backend)
    assert sum(len(frame) for frame in cpu) >= FRAMES  # the model found the objects
    for expected, got in zip(cpu, cuda, strict=True):
        assert [(t, c) for t, c, _ in got] == [(t, c) for t, c, _ in expected]
        for (_, _, a), (_, _, b) in zip(got, expected, strict=True):
            assert abs(a - b) <= max(0.01 * b, 20)


def test_shipped_model_in_float16_keeps_the_track_ids():
    full, reduced = tracked("cuda"), tracked("cuda", "float16")
    assert [[(t, c) for t, c, _ in frame] for frame in reduced] == \
        [[(t, c) for t, c, _ in frame] for frame in full]


def test_postprocessing_on_the_gpu_selects_what_the_cpu_selects():
    from metaseg_ros.inference.postprocess import select_instances
    from metaseg_ros.inference.preprocess import Letterbox
    from metaseg_ros.inference.settings import PostprocessSettings

    generator = torch.Generator().manual_seed(3)
    class_logits = torch.randn(50, 21, generator=generator) * 3
    embeddings = torch.randn(50, 32, generator=generator)
    # Blobs of random centre and radius (logit > 0 inside), partly overlapping.
    centres = torch.rand(50, 2, 1, 1, generator=generator) * 64
    radii = 3 + torch.rand(50, 1, 1, generator=generator) * 8
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    distance = ((rows - centres[:, 0]) ** 2 + (cols - centres[:, 1]) ** 2).sqrt()
    mask_logits = 2.0 * (radii - distance)
    box = Letterbox.fit(300, 400, (256, 256))
    for settings in (PostprocessSettings(score_threshold=0.0),
                     PostprocessSettings(score_threshold=0.2, resolve_overlaps=False)):
        on_cpu = select_instances(class_logits, mask_logits, embeddings, box, settings)
        on_gpu = select_instances(class_logits.cuda(), mask_logits.cuda(), embeddings.cuda(),
                                  box, settings)
        assert len(on_cpu.detections) >= 10
        assert [d.query_index for d in on_gpu.detections] == \
            [d.query_index for d in on_cpu.detections]
        for a, b in zip(on_gpu.detections, on_cpu.detections, strict=True):
            assert a.class_id == b.class_id and a.score == pytest.approx(b.score, abs=1e-4)
            assert isinstance(a.mask, np.ndarray) and a.mask.shape == (300, 400)
            assert (a.mask != b.mask).mean() < 1e-3
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)


@pytest.mark.parametrize("frame_size", [(480, 640), (256, 256), (100, 150)])
def test_letterboxing_on_the_gpu_equals_the_cpu(frame_size):
    rgb = np.random.default_rng(1).integers(0, 256, (*frame_size, 3), dtype=np.uint8)
    on_cpu, box_cpu = letterbox_image(rgb, (256, 256), (123.7, 116.3, 103.5))
    on_gpu, box_gpu = letterbox_image(rgb, (256, 256), (123.7, 116.3, 103.5), "cuda")
    assert box_gpu == box_cpu and on_gpu.device.type == "cuda"
    # The CPU resizes uint8 (whole grey levels), the GPU in float: within one grey level.
    atol = 0.0 if frame_size == (256, 256) else 1.0
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=atol, rtol=0)


def test_segmenter_letterboxes_where_the_network_runs():
    from metaseg_ros.inference.segmenter import StreamingSegmenter

    assert StreamingSegmenter(EagerRunner(gated_model(), "cuda")).preprocess_device.type == "cuda"
    assert StreamingSegmenter(EagerRunner(gated_model(), "cpu")).preprocess_device is None
