"""memory.pool_stride 16: each frame stores the pixel decoder's stride-16 level (4x the keys
of stride 32), the weights carry over from a stride-32 checkpoint, and it exports."""

from __future__ import annotations

import pytest
import torch

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.checkpoint import save_checkpoint
from metaseg_ros.model.metasegmenter import memory_shapes
from metaseg_ros.train.initialization import init_from_checkpoint
from metaseg_ros.train.trainer import set_memory_gates

SIZE = (64, 96)


def config(stride: int):
    return get_config("tiny", image_size=SIZE, num_queries=8, num_decoder_layers=2,
                      memory={"pool_stride": stride, "pixel_read": True})


def images(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, *SIZE, generator=generator) * 255 for _ in range(count)]


def test_the_stored_map_is_the_projected_stride_16_level() -> None:
    torch.manual_seed(0)
    model = MetaSegmenter(config(16)).eval()
    levels = []
    handle = model.pixel_decoder.register_forward_hook(
        lambda _m, _i, out: levels.append(out.multi_scale[1]))
    with torch.no_grad():
        output = model(images(1, 0)[0], model.initial_memory(1))
    handle.remove()
    assert tuple(output.memory.features.shape) == memory_shapes(model.config).features
    assert tuple(output.memory.features.shape[-2:]) == (SIZE[0] // 16, SIZE[1] // 16)
    expected = model.memory_write_proj(levels[0])
    torch.testing.assert_close(output.memory.features[:, 0], expected, atol=1e-6, rtol=1e-6)
    assert float(output.memory.valid[0, 0]) == 1.0 and float(output.memory.valid[0, 1]) == 0.0


def test_a_stride_32_checkpoint_initialises_every_weight_and_the_finer_map_is_read(
        tmp_path) -> None:
    torch.manual_seed(1)
    coarse = MetaSegmenter(config(32)).eval()
    set_memory_gates(coarse, 0.5)
    save_checkpoint(coarse, tmp_path / "coarse")
    fine = MetaSegmenter(config(16)).eval()
    init_from_checkpoint(fine, tmp_path / "coarse")
    own = fine.state_dict()
    for name, value in coarse.state_dict().items():
        assert torch.equal(own[name], value), name
    frames = images(3, 2)
    with torch.no_grad():
        memory = fine(frames[0], fine.initial_memory(1)).memory
        memory = fine(frames[1], memory).memory
        with_memory = fine(frames[2], memory).mask_logits
        without = fine(frames[2], fine.initial_memory(1)).mask_logits
    assert (with_memory - without).abs().max() > 0.01  # far above rounding


def test_stride_16_exports_to_onnx_and_runs_there_as_in_pytorch(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from metaseg_ros.inference.export import write_onnx_artifact
    from metaseg_ros.inference.runners.onnxruntime import OnnxRuntimeRunner

    torch.manual_seed(3)
    model = MetaSegmenter(config(16)).eval()
    set_memory_gates(model, 1.0)
    runner = OnnxRuntimeRunner(write_onnx_artifact(model, tmp_path / "step.onnx"))
    memory, reference_memory = runner.initial_memory(), model.initial_memory(1)
    for image in images(3, 4):
        output = runner(image, memory)
        with torch.no_grad():
            reference = model(image, reference_memory)
        memory, reference_memory = output.memory, reference.memory
        torch.testing.assert_close(output.mask_logits, reference.mask_logits, atol=1e-3,
                                   rtol=1e-3)
