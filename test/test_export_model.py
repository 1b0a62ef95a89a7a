"""Export of the single-frame step: torch.export (.pt2 round trip) and ONNX (opset 18) with
onnxruntime parity over a 5-frame sequence with the memory fed back, and a graph free of
NonZero, ScatterND, Loop, If and Einsum."""

from __future__ import annotations

import pytest
import torch

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.export import (
    FORBIDDEN_ONNX_OPS,
    INPUT_NAMES,
    OUTPUT_NAMES,
    export_onnx,
    export_program,
    find_forbidden_ops,
    onnx_op_types,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SIZE = (128, 128)
FRAMES = 5


def _model(config) -> MetaSegmenter:
    torch.manual_seed(0)
    model = MetaSegmenter(config).eval()
    with torch.no_grad():  # open the memory gates so the memory path is part of the parity
        for index, layer in enumerate(model.transformer_decoder.layers):
            layer.memory_attn.gate.fill_(0.3 + 0.1 * index)
            layer.memory_attn.null_value.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def model():
    return _model(get_config("tiny", image_size=SIZE, num_queries=20, num_decoder_layers=3,
                             pixel_decoder={"encoder_layers": 1}))


def _frames(count: int = FRAMES) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    base = torch.rand(1, 3, *SIZE, generator=generator) * 255
    # A slowly changing scene: each frame is the previous one plus noise, clipped to 0..255.
    frames = [base]
    for _ in range(count - 1):
        frames.append((frames[-1] + torch.randn(1, 3, *SIZE, generator=generator) * 20)
                      .clamp(0, 255))
    return frames


def _eager_sequence(model, frames):
    memory = model.initial_memory(1)
    outputs = []
    with torch.no_grad():
        for frame in frames:
            out = model(frame, memory)
            memory = out.memory
            outputs.append((out.class_logits, out.mask_logits, out.query_embeddings, *memory))
    return outputs


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def test_torch_export_round_trip(tmp_path, model):
    program = export_program(model)
    path = tmp_path / "step.pt2"
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    frames = _frames(3)
    expected = _eager_sequence(model, frames)
    memory = model.initial_memory(1)
    with torch.no_grad():
        for frame, reference in zip(frames, expected, strict=True):
            got = loaded(frame, *memory)
            memory = got[3:]
            for name, a, b in zip(OUTPUT_NAMES, got, reference, strict=True):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)
    assert memory[2].tolist() == [[1.0, 1.0, 1.0, 0.0]]


def test_onnx_parity_over_five_frames_with_memory_fed_back(tmp_path, model):
    path = export_onnx(model, tmp_path / "step.onnx")
    onnx_model = onnx.load(str(path))
    onnx.checker.check_model(onnx_model)
    assert find_forbidden_ops(onnx_model) == []
    assert [i.name for i in onnx_model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in onnx_model.graph.output] == list(OUTPUT_NAMES)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames = _frames()
    expected = _eager_sequence(model, frames)
    memory = [t.numpy() for t in model.initial_memory(1)]
    for index, (frame, reference) in enumerate(zip(frames, expected, strict=True)):
        feeds = dict(zip(INPUT_NAMES, [frame.numpy(), *memory], strict=True))
        got = [torch.from_numpy(x) for x in session.run(list(OUTPUT_NAMES), feeds)]
        memory = [x.numpy() for x in got[3:]]  # ORT's own memory goes into the next frame
        for name, a, b in zip(OUTPUT_NAMES, got, reference, strict=True):
            scale = b.abs().max().clamp_min(1.0)
            assert (a - b).abs().max() / scale <= 1e-3, f"frame {index} {name}"
        # Hard thresholds may flip single pixels between backends: compare masks by IoU.
        iou = mask_iou(got[1] > 0, reference[1] > 0)
        assert iou >= 0.99, f"frame {index} mask IoU {iou:.4f}"
    assert memory[2].tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_forbidden_op_check_detects_forbidden_ops():
    helper = onnx.helper
    nonzero = helper.make_node("NonZero", ["x"], ["y"])
    branch = helper.make_graph([helper.make_node("Einsum", ["a", "b"], ["c"],
                                                 equation="ij,jk->ik")], "branch", [], [])
    conditional = helper.make_node("If", ["cond"], ["z"], then_branch=branch,
                                   else_branch=branch)
    graph = helper.make_graph([nonzero, conditional], "g", [], [])
    model = helper.make_model(graph)
    assert find_forbidden_ops(model) == ["Einsum", "If", "NonZero"]
    assert "Einsum" in onnx_op_types(model)
    assert set(FORBIDDEN_ONNX_OPS) == {"NonZero", "ScatterND", "Loop", "If", "Einsum"}


@pytest.mark.slow
def test_full_tiny_config_at_512_exports_clean(tmp_path):
    """The deployed CPU configuration: full size, every layer, 100 queries."""
    model = _model(get_config("tiny"))
    path = export_onnx(model, tmp_path / "tiny.onnx")
    onnx_model = onnx.load(str(path))
    assert find_forbidden_ops(onnx_model) == []
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)) * 255
    memory = model.initial_memory(1)
    with torch.no_grad():
        first = model(image, memory)
        second = model(image, first.memory)
    feeds = dict(zip(INPUT_NAMES, [image.numpy(), *[t.numpy() for t in first.memory]],
                     strict=True))
    class_logits, mask_logits = session.run(["class_logits", "mask_logits"], feeds)
    scale = second.class_logits.abs().max()
    assert (torch.from_numpy(class_logits) - second.class_logits).abs().max() / scale <= 1e-3
    assert mask_iou(torch.from_numpy(mask_logits) > 0, second.mask_logits > 0) >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize("preset, backbone", [("r50", {}), ("swin-t", {"depths": (2, 2, 2, 2)})])
def test_gpu_configs_export_clean_with_parity(tmp_path, preset, backbone):
    """ResNet and Swin variants (shortened) export without forbidden ops and match eagerly."""
    model = _model(get_config(preset, image_size=SIZE, num_queries=10, num_decoder_layers=3,
                              backbone=backbone, pixel_decoder={"encoder_layers": 1}))
    path = export_onnx(model, tmp_path / f"{preset}.onnx")
    assert find_forbidden_ops(onnx.load(str(path))) == []
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames = _frames(2)
    expected = _eager_sequence(model, frames)
    memory = [t.numpy() for t in model.initial_memory(1)]
    for frame, reference in zip(frames, expected, strict=True):
        feeds = dict(zip(INPUT_NAMES, [frame.numpy(), *memory], strict=True))
        got = [torch.from_numpy(x) for x in session.run(list(OUTPUT_NAMES), feeds)]
        memory = [x.numpy() for x in got[3:]]
        scale = reference[0].abs().max().clamp_min(1.0)
        assert (got[0] - reference[0]).abs().max() / scale <= 1e-3
        assert mask_iou(got[1] > 0, reference[1] > 0) >= 0.99
