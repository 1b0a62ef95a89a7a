"""The carry's frame context (memory.past_mask_frame_context): at its start the carry's gate
without it, with it a pixel's gate depends on the whole frame (not only its 3x3 window), it
trains, a checkpoint without it initialises a model with it, it exports, and the config
refuses it without the carry."""

from __future__ import annotations

import pytest
import torch
from memory_parts import (
    assert_loads_without_part,
    assert_onnx_runs_as_pytorch,
    assert_part_trains,
    random_frames,
)

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.mask_memory import MaskFeatureCarry

SIZE = (128, 128)
CONTEXT = "mask_memory.frame_context."


def config(context: bool, carry: bool = True):
    return get_config("tiny", image_size=SIZE, num_queries=20,
                      memory={"pool_stride": 32, "past_mask_features": carry,
                              "past_mask_motion": carry, "past_mask_frame_context": context})


def features(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, 8, 12, 12, generator=generator) for _ in range(2))


def trained_gate(carry: MaskFeatureCarry, seed: int) -> None:
    """Random weights in the gate's last layer (and the context, if any)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        carry.gate[-1].weight.copy_(torch.randn(carry.gate[-1].weight.shape,
                                                generator=generator))
        if carry.frame_context is not None:
            carry.frame_context.weight.copy_(
                torch.randn(carry.frame_context.weight.shape, generator=generator))


def test_at_its_start_the_context_is_the_gate_without_it():
    torch.manual_seed(0)
    with_context, without = MaskFeatureCarry(8, frame_context=True), MaskFeatureCarry(8)
    trained_gate(without, seed=1)
    missing, unexpected = with_context.load_state_dict(without.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == ["frame_context.bias", "frame_context.weight"]
    current, past = features(2)
    valid = torch.ones(1)
    torch.testing.assert_close(with_context.weight(current, past, valid),
                               without.weight(current, past, valid), atol=1e-6, rtol=0)


def test_with_the_context_a_pixel_s_gate_follows_the_whole_frame():
    current, past = features(3)
    far = current.clone()
    far[:, :, 6:, 6:] += 3.0  # changed only far from pixel (0, 0) and its 3x3 window
    valid = torch.ones(1)
    for context in (False, True):
        torch.manual_seed(4)
        carry = MaskFeatureCarry(8, frame_context=context)
        trained_gate(carry, seed=5)
        change = (carry.weight(far, past, valid)[0, 0, :3, :3]
                  - carry.weight(current, past, valid)[0, 0, :3, :3]).abs().max()
        if context:
            assert change > 0.01
        else:
            assert change < 1e-6  # outside its window: not computed from the changed cells


def test_the_context_trains():
    torch.manual_seed(6)
    model = MetaSegmenter(config(True))
    trained_gate(model.mask_memory, seed=7)
    with torch.no_grad():
        model.mask_memory.frame_context.weight.zero_()  # at its start
    assert_part_trains(model, random_frames(SIZE, 2, seed=8), CONTEXT, expected_count=2)


def test_a_checkpoint_without_the_context_initialises_a_model_with_it(tmp_path):
    torch.manual_seed(9)
    assert_loads_without_part(config(False), config(True), CONTEXT,
                              "carry's frame context new", tmp_path)


def test_the_context_exports_to_onnx_and_runs_there_as_in_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(10)
    model = MetaSegmenter(config(True)).eval()
    with torch.no_grad():
        model.mask_memory.gate[-1].weight.normal_(0, 0.5)
        model.mask_memory.frame_context.weight.normal_(0, 0.5)
    assert_onnx_runs_as_pytorch(model, random_frames(SIZE, 3, seed=11), tmp_path)


def test_the_config_refuses_the_context_without_the_carry():
    with pytest.raises(ValueError, match=r"past_mask_frame_context needs memory\.past_mask_f"):
        MetaSegmenter(config(True, carry=False))
