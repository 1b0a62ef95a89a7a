"""The kept mask features (memory.past_mask_features): at its start the model without it,
a pixel with its gate open takes the last frame's mask features, a reset memory ignores
them, a run of frames carries them, the state keeps fixed shapes, it trains, exports, and a
checkpoint without it initialises a model with it."""

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
from memory_parts import run_clip as run

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.mask_memory import MaskFeatureCarry
from metaseg_ros.model.memory import reset_memory
from metaseg_ros.model.metasegmenter import memory_shapes
from metaseg_ros.train.config import OptimConfig
from metaseg_ros.train.optimizer import build_optimizer

SIZE = (128, 128)
GATE_OUT = "mask_memory.gate.2."  # the gate's last convolution (zero at the start)


def config(carry: bool):
    return get_config("tiny", image_size=SIZE, num_queries=20,
                      memory={"pool_stride": 32, "past_mask_features": carry})


def frames(count: int, seed: int = 0) -> list[torch.Tensor]:
    return random_frames(SIZE, count, seed)


def open_gate(model: MetaSegmenter, bias: float) -> None:
    """Every pixel's gate at tanh(bias) whatever it sees."""
    with torch.no_grad():
        model.mask_memory.gate[-1].weight.zero_()
        model.mask_memory.gate[-1].bias.fill_(bias)


def test_at_its_start_the_carry_is_the_model_without_it():
    torch.manual_seed(0)
    # two convolutions, weight and bias
    assert_starts_as_model_without(config(False), config(True), frames(3), "mask_memory.",
                                   expected_missing=4)


def test_the_state_keeps_the_last_mask_features_and_a_placeholder_without_them():
    with_carry, without = config(True), config(False)
    assert memory_shapes(with_carry, 2).mask_features == (2, 96, 32, 32)
    assert memory_shapes(without, 2).mask_features == (2, 1, 1, 1)
    torch.manual_seed(1)
    model = MetaSegmenter(without).eval()
    start = model.initial_memory(1)
    placeholder = start.mask_features.clone().fill_(7.0)
    outputs = run(model, frames(2), start._replace(mask_features=placeholder))
    assert torch.equal(outputs[-1].memory.mask_features, placeholder)


def test_an_open_gate_carries_the_last_good_frame_and_a_closed_one_keeps_its_own():
    torch.manual_seed(2)
    model = MetaSegmenter(config(True)).eval()
    images = frames(4, seed=3)
    open_gate(model, 20.0)  # tanh(20) is 1 in float32
    opened = run(model, images)
    first = opened[0].memory.mask_features
    assert first.abs().max() > 0.1  # frame 1 had no past: its own features
    for output in opened[1:]:
        torch.testing.assert_close(output.memory.mask_features, first, atol=1e-5, rtol=0)
    open_gate(model, 0.0)
    closed = run(model, images)
    # Different frames have different features of their own: nothing carried.
    assert (closed[1].memory.mask_features - first).abs().max() > 0.1
    # With the gate open, frame 2's masks are made on frame 1's mask features.
    assert (opened[1].mask_logits - closed[1].mask_logits).abs().max() > 0.1


def test_a_reset_memory_ignores_the_kept_features():
    torch.manual_seed(4)
    model = MetaSegmenter(config(True)).eval()
    open_gate(model, 20.0)
    images = frames(3, seed=5)
    memory = model.initial_memory(1)
    reference = MetaSegmenter(config(False)).eval()
    reference.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        for image in images:
            ours = model(image, memory)
            memory = reset_memory(ours.memory, torch.zeros(1))
            theirs = reference(image, reference.initial_memory(1))
            torch.testing.assert_close(ours.mask_logits, theirs.mask_logits, atol=1e-5, rtol=0)


def test_the_gate_is_per_pixel_and_follows_both_frames():
    torch.manual_seed(6)
    carry = MaskFeatureCarry(8)
    with torch.no_grad():
        carry.gate[-1].weight.normal_(0, 1.0)
    generator = torch.Generator().manual_seed(7)
    current, past = (torch.randn(2, 8, 6, 6, generator=generator) for _ in range(2))
    valid = torch.ones(2)
    weight = carry.weight(current, past, valid)
    assert weight.shape == (2, 1, 6, 6)
    assert weight.max() - weight.min() > 0.05  # pixels differ
    assert (carry.weight(current, current, valid) - weight).abs().max() > 0.05  # the past counts
    blended, kept = carry(current, past, valid)
    torch.testing.assert_close(blended, current + weight * (past - current), atol=1e-6, rtol=0)
    assert kept is blended  # without motion the state is the blended features alone
    assert torch.equal(carry(current, past, torch.tensor([0.0, 1.0]))[0][0], current[0])


def test_the_carry_is_trained_at_the_memory_learning_rate():
    torch.manual_seed(8)
    model = MetaSegmenter(config(True))
    assert_part_trains(model, frames(2, seed=9), GATE_OUT, expected_count=2)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-4, memory_lr_multiplier=10.0))
    carry = {id(p) for p in model.mask_memory.parameters()}
    rates = [group["lr"] for group in optimizer.param_groups
             if any(id(p) in carry for p in group["params"])]
    assert rates and all(rate == pytest.approx(1e-3) for rate in rates)


def test_a_checkpoint_without_the_carry_initialises_a_model_with_it(tmp_path):
    torch.manual_seed(10)
    assert_loads_without_part(config(False), config(True), GATE_OUT, "mask-feature carry new",
                              tmp_path)


def test_the_carry_exports_to_onnx_and_runs_there_as_in_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(11)
    model = MetaSegmenter(config(True)).eval()
    with torch.no_grad():
        model.mask_memory.gate[-1].weight.normal_(0, 0.5)
    assert_onnx_runs_as_pytorch(model, frames(3, seed=12), tmp_path)
