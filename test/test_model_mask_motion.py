"""Motion for the kept mask features (memory.past_mask_motion): the flow between two frames
is measured, the kept features are moved on by it before the blend (constant velocity),
uncovered cells take no past; at its start the model is the one without the carry, the
state keeps its shapes, it exports, and the config refuses motion without the carry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from memory_parts import assert_onnx_runs_as_pytorch, assert_starts_as_model_without, random_frames

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.mask_memory import MaskFeatureCarry
from metaseg_ros.model.mask_motion import estimate_flow, splat
from metaseg_ros.model.metasegmenter import memory_shapes

SIZE = (128, 128)
CHANNELS = 16


def config(carry: bool, motion: bool):
    return get_config("tiny", image_size=SIZE, num_queries=20,
                      memory={"pool_stride": 32, "past_mask_features": carry,
                              "past_mask_motion": motion})


def textured(shift_x: int, shift_y: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    """(1, CHANNELS, size, size) smooth random features, the content moved by (x, y) cells."""
    generator = torch.Generator().manual_seed(seed)
    base = F.avg_pool2d(torch.randn(1, CHANNELS, size + 32, size + 32, generator=generator),
                        5, stride=1, padding=2)
    return base[:, :, 16 - shift_y:16 - shift_y + size, 16 - shift_x:16 - shift_x + size]


def square(left: int, top: int, size: int = 32, side: int = 10) -> torch.Tensor:
    """(1, CHANNELS, size, size) features: one vector inside a square, another outside."""
    inside = torch.zeros(1, size, size, dtype=torch.bool)
    inside[:, top:top + side, left:left + side] = True
    features = torch.where(inside, 1.0, -1.0)[:, None].expand(1, CHANNELS, size, size)
    return features + 0.05 * torch.linspace(-1, 1, CHANNELS)[None, :, None, None]


def test_the_flow_between_two_frames_is_the_content_s_motion():
    past, current = textured(0, 0), textured(3, -2)  # the content moved 3 right, 2 up
    flow = estimate_flow(current, past)[0, :, 8:-8, 8:-8]
    # backward flow: where each cell's content was in the past frame
    assert (flow[0] + 3).abs().mean() < 0.25 and (flow[1] - 2).abs().mean() < 0.25
    still = estimate_flow(past, past)[0]
    assert still.abs().max() < 0.25


def test_splatting_moves_the_content_and_marks_what_nothing_moved_into():
    values = square(8, 8)
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0, 8:18, 8:18] = 4.0  # only the square moves, 4 cells right
    moved, coverage = splat(values, flow)
    assert torch.equal(moved[0, 0, 8:18, 12:22] > 0, torch.ones(10, 10, dtype=torch.bool))
    assert coverage[0, 0, 8:18, 8:12].max() == 0  # the ground the square left
    assert coverage[0, 0, 20:, :].min() == 1  # the still background
    assert moved[0, 0, 20:, :].max() < 0  # stays background


def set_gate(carry: MaskFeatureCarry, bias: float) -> None:
    """Every pixel's gate at tanh(bias) whatever it sees."""
    with torch.no_grad():
        carry.gate[-1].weight.zero_()
        carry.gate[-1].bias.fill_(bias)


def centre_column(features: torch.Tensor) -> float:
    """The mean column of the cells whose first channel is positive (inside the square)."""
    inside = (features[0, 0] > 0).float()
    return float((inside * torch.arange(inside.shape[1])).sum() / inside.sum())


def test_a_moving_square_is_carried_to_where_it_is_now():
    carry = MaskFeatureCarry(CHANNELS, motion=True)
    valid = torch.ones(1)
    kept = torch.cat([square(4, 10), torch.zeros(1, 2, 32, 32)], dim=1)
    set_gate(carry, 0.0)  # a good frame: its own features; the square moved 4 cells right
    _, kept = carry(square(8, 10), kept, valid)
    assert kept[0, CHANNELS, 10:20, 12:18].mean() < -1.5  # it came from the left
    # the next frame is blank (lost) and takes the past everywhere: the last frame moved on
    # by the last flow stands in for it, near where the square is now (columns 12..21)
    set_gate(carry, 20.0)
    blank = torch.zeros(1, CHANNELS, 32, 32)
    moved = carry(blank, kept, valid)[0]
    unmoved = MaskFeatureCarry(CHANNELS)
    unmoved.load_state_dict(carry.state_dict())
    stayed = unmoved(blank, kept[:, :CHANNELS], valid)[0]
    assert centre_column(stayed) == pytest.approx(12.5)  # where it was (columns 8..17)
    # on it by at least a cell (a uniform square's inside matches every step alike: its
    # flow comes from the edges, smoothed, so it moves less than the 4 cells it should)
    assert centre_column(moved) > 13.5
    now = square(12, 10)[0, 0] > 0
    overlap = {name: float(((f[0, 0] > 0) & now).sum() / ((f[0, 0] > 0) | now).sum())
               for name, f in (("moved", moved), ("stayed", stayed))}
    assert overlap["moved"] > overlap["stayed"] + 0.1, overlap


def test_a_reset_memory_gives_no_flow():
    carry = MaskFeatureCarry(CHANNELS, motion=True)
    kept = torch.cat([square(4, 10), torch.full((1, 2, 32, 32), 3.0)], dim=1)
    _, new_kept = carry(square(7, 10), kept, torch.zeros(1))
    assert torch.equal(new_kept[:, CHANNELS:], torch.zeros(1, 2, 32, 32))


def test_at_its_start_the_moving_carry_is_the_model_without_it():
    torch.manual_seed(0)
    assert_starts_as_model_without(config(False, False), config(True, True),
                                   random_frames(SIZE, 3), "mask_memory.", expected_missing=4)


def test_the_state_keeps_the_flow_after_the_features():
    assert memory_shapes(config(True, True), 2).mask_features == (2, 98, 32, 32)
    with pytest.raises(ValueError, match=r"past_mask_motion needs memory\.past_mask_features"):
        MetaSegmenter(config(False, True))


def test_the_moving_carry_exports_to_onnx_and_runs_there_as_in_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(11)
    model = MetaSegmenter(config(True, True)).eval()
    with torch.no_grad():
        model.mask_memory.gate[-1].weight.normal_(0, 0.5)
    assert_onnx_runs_as_pytorch(model, random_frames(SIZE, 3, seed=12), tmp_path)
