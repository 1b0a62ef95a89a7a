"""The pixel read's keep gate (memory.keep_gate): at its start the model without it, it
scales each pixel's own features by what that pixel read, the factor reaches the FPN's
stride-4 input, it trains, exports, and a checkpoint without it initialises a model with it."""

from __future__ import annotations

import pytest
import torch
from memory_parts import (
    assert_loads_without_part,
    assert_onnx_runs_as_pytorch,
    assert_part_trains,
    assert_starts_as_model_without,
    random_frames,
)

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.memory import MemoryAttention, MemoryTokens
from metaseg_ros.model.pixel_decoder import PixelDecoder
from metaseg_ros.train.trainer import set_memory_gates

SIZE = (128, 128)


def config(keep_gate: bool, **memory):
    return get_config("tiny", image_size=SIZE, num_queries=20,
                      memory={"pool_stride": 32, "pixel_read": True, "content_gate": True,
                              "keep_gate": keep_gate, **memory})


def frames(count: int, seed: int = 0) -> list[torch.Tensor]:
    return random_frames(SIZE, count, seed)


def randomise_keep_gates(model: MetaSegmenter, scale: float = 0.5) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".keep_gate.layers.1." in name:
                parameter.normal_(0, scale)


def test_at_its_start_the_keep_gate_keeps_every_pixel_whole():
    torch.manual_seed(0)
    # the pixel read's MLP only: two layers, weight and bias
    assert_starts_as_model_without(config(False), config(True), frames(3), ".keep_gate.",
                                   expected_missing=4)


def test_the_factor_follows_each_token_and_scales_only_its_own_features():
    torch.manual_seed(1)
    attention = MemoryAttention(32, 4, keep_gate=True)
    generator = torch.Generator().manual_seed(2)
    memory = MemoryTokens(torch.randn(2, 10, 32, generator=generator),
                          torch.randn(2, 10, 32, generator=generator),
                          torch.zeros(2, 1, 1, 10))
    with torch.no_grad():
        attention.gate.fill_(0.3)
        attention.keep_gate.layers[-1].weight.normal_(0, 1.0)
        query, pos = torch.randn(2, 6, 32), torch.zeros(1, 6, 32)
        out, keep = attention.read(query, pos, memory)
        gated_read = out - keep * query
        attention.keep_gate.layers[-1].weight.zero_()
        whole, none_kept = attention.read(query, pos, memory)
    assert keep.shape == (2, 6, 1) and torch.equal(none_kept, torch.ones(2, 6, 1))
    # The read's share is the same with or without the factor: only the token's own part moves.
    torch.testing.assert_close(gated_read, whole - query, atol=1e-5, rtol=0)
    # One factor per token, well away from 1 and from each other, inside (0, 2).
    assert (keep - 1.0).abs().max() > 0.05
    assert keep.max() - keep.min() > 0.05
    assert keep.min() > 0.0 and keep.max() < 2.0


def test_a_zero_factor_cuts_the_stride4_input_out_of_the_mask_features():
    torch.manual_seed(3)
    model = MetaSegmenter(config(True)).eval()
    decoder: PixelDecoder = model.pixel_decoder
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, *SIZE, generator=generator))
        other = [torch.randn(features[0].shape, generator=generator) * 3, *features[1:]]

        def factor(value: float):
            return lambda level: (level, torch.full_like(level[:, :1], value))

        cut = [decoder(f, factor(0.0)).mask_features for f in (features, other)]
        kept = [decoder(f, factor(1.0)).mask_features for f in (features, other)]
    # With the factor at 0 the stride-4 map no longer matters; at 1 it changes the output.
    torch.testing.assert_close(cut[0], cut[1], atol=1e-5, rtol=0)
    assert (kept[0] - kept[1]).abs().max() > 0.1


def test_every_keep_gate_is_trained():
    torch.manual_seed(5)
    assert_part_trains(MetaSegmenter(config(True)), frames(2, seed=6),
                       ".keep_gate.layers.1.", expected_count=2)


def test_a_checkpoint_without_keep_gates_initialises_a_model_with_them(tmp_path):
    torch.manual_seed(7)
    assert_loads_without_part(config(False), config(True), ".keep_gate.layers.1.",
                              "keep gates new", tmp_path)


def test_the_keep_gate_needs_the_pixel_read():
    with pytest.raises(ValueError, match=r"keep_gate needs memory\.pixel_read"):
        config(True, pixel_read=False)


def test_the_keep_gate_exports_to_onnx_and_runs_there_as_in_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(8)
    model = MetaSegmenter(config(True)).eval()
    set_memory_gates(model, 1.0)
    randomise_keep_gates(model)
    assert_onnx_runs_as_pytorch(model, frames(3, seed=9), tmp_path)
