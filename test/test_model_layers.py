"""Layer-level checks: gather-based bilinear sampling equals grid_sample, deformable attention
equals a grid_sample reference, the masked-attention rule, sine embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaseg_ros.model.layers import (
    MASKED_LOGIT_BIAS,
    Attention,
    MultiScaleDeformableAttention,
    bilinear_sample,
    multi_scale_deformable_sample,
    sine_position_embedding,
)
from metaseg_ros.model.transformer_decoder import masked_attention_bias


def test_bilinear_gather_matches_grid_sample_inside_and_outside():
    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(3, 5, 7, 9, generator=generator, dtype=torch.float64)
    # Locations from well outside to well inside, plus exact pixel centres and borders.
    locations = torch.rand(3, 400, 2, generator=generator, dtype=torch.float64) * 1.6 - 0.3
    centres = torch.tensor([[0.5 / 9, 0.5 / 7], [0.0, 0.0], [1.0, 1.0], [8.5 / 9, 6.5 / 7]],
                           dtype=torch.float64)
    locations = torch.cat([locations, centres.expand(3, -1, -1)], dim=1)
    expected = F.grid_sample(feature, (2 * locations - 1)[:, :, None, :], mode="bilinear",
                             padding_mode="zeros", align_corners=False)[..., 0]
    ours = bilinear_sample(feature, locations)
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=1e-12)
    assert (ours[:, :, :400].abs() > 0).any() and (expected.abs() == 0).any()


def _grid_sample_reference(value, shapes, locations, weights):
    batch, _, heads, head_dim = value.shape
    _, num_q, _, levels, points, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    sampled = []
    for level, (h, w) in enumerate(shapes):
        v = per_level[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w)
        grid = (2 * locations[:, :, :, level] - 1).transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # (B*heads, Dh, Nq, P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*heads, Dh, Nq, L*P)
    w = weights.transpose(1, 2).reshape(batch * heads, 1, num_q, levels * points)
    out = (stacked * w).sum(-1).view(batch, heads * head_dim, num_q)
    return out.transpose(1, 2)


def test_multi_scale_deformable_sample_matches_grid_sample_reference():
    generator = torch.Generator().manual_seed(1)
    shapes = [(4, 6), (8, 12), (16, 24)]
    total = sum(h * w for h, w in shapes)
    value = torch.randn(2, total, 4, 8, generator=generator, dtype=torch.float64)
    locations = torch.rand(2, 30, 4, 3, 5, 2, generator=generator, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(2, 30, 4, 3, 5, generator=generator, dtype=torch.float64)
    ours = multi_scale_deformable_sample(value, shapes, locations, weights)
    expected = _grid_sample_reference(value, shapes, locations, weights)
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=1e-12)


def test_deformable_attention_runs_with_its_initialisation():
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(32, 4, 3, 4)
    shapes = [(2, 2), (4, 4), (8, 8)]
    total = sum(h * w for h, w in shapes)
    src = torch.randn(1, total, 32)
    reference = torch.rand(1, total, 2)
    out = attention(src, reference, src, shapes)
    assert out.shape == (1, total, 32) and torch.isfinite(out).all()


def test_masked_attention_unmasks_rows_that_block_everything():
    logits = torch.full((1, 3, 8, 8), -5.0)
    logits[0, 0, :4, :4] = 5.0   # query 0: a quarter of the image
    logits[0, 2] = 5.0           # query 2: everything allowed
    # query 1: nothing allowed -> attends everywhere
    bias = masked_attention_bias(logits, (4, 4))
    assert bias.shape == (1, 1, 3, 16)
    assert (bias[0, 0, 1] == 0).all() and (bias[0, 0, 2] == 0).all()
    allowed = (bias[0, 0, 0] == 0).reshape(4, 4)
    assert allowed[:2, :2].all() and not allowed[2:].any() and not allowed[:, 2:].any()
    assert set(bias.unique().tolist()) == {0.0, MASKED_LOGIT_BIAS}


def test_attention_bias_is_finite_and_equals_hard_masking():
    torch.manual_seed(0)
    attention = Attention(16, 2)
    query, key = torch.randn(1, 5, 16), torch.randn(1, 7, 16)
    blocked = torch.zeros(1, 1, 5, 7)
    blocked[..., 3:] = 1
    ours = attention(query, key, key, blocked * MASKED_LOGIT_BIAS)
    reference = attention(query, key[:, :3], key[:, :3])
    # Softmax over 7 vs 3 keys may sum in another order: equal to rounding, not bit for bit;
    # without the mask the outputs are far from the reference.
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert (attention(query, key, key) - reference).abs().max() > 1e-2


def test_sine_position_embedding_layout():
    pos = sine_position_embedding(3, 5, 8)
    assert pos.shape == (16, 3, 5)
    # First half encodes y (constant along x), second half x (constant along y).
    assert torch.equal(pos[:8, :, 0:1].expand(8, 3, 5), pos[:8])
    assert torch.equal(pos[8:, 0:1, :].expand(8, 3, 5), pos[8:])
    # Channel 0 is sin(y) with y = row / (H + eps) * 2 pi, rows counted from 1.
    assert abs(pos[0, 1, 0].item() - torch.sin(torch.tensor(2 / 3 * 2 * torch.pi)).item()) < 1e-5


def test_video_time_term_completes_the_3d_sine_embedding_of_one_frame():
    """Video Mask2Former's PositionEmbeddingSine3D for T=1 = 2-D embedding + a constant."""
    import math

    from metaseg_ros.model.layers import video_time_embedding

    feats, height, width = 16, 3, 5
    # The 3-D formula, written out: cumulative counts normalised by the last one, 2 pi scale.
    ones = torch.ones(1, height, width, dtype=torch.float64)
    z = ones.cumsum(0) / (ones.cumsum(0)[-1:] + 1e-6) * 2 * math.pi
    y = ones.cumsum(1) / (ones.cumsum(1)[:, -1:] + 1e-6) * 2 * math.pi
    x = ones.cumsum(2) / (ones.cumsum(2)[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(feats, dtype=torch.float64) // 2) / feats)
    dim_t_z = 10000 ** (2 * (torch.arange(2 * feats, dtype=torch.float64) // 2) / (2 * feats))

    def sincos(values, dims):
        angles = values[..., None] / dims
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), -1).flatten(-2)

    pos3d = (torch.cat((sincos(y, dim_t), sincos(x, dim_t)), -1) + sincos(z, dim_t_z))[0]
    ours = (sine_position_embedding(height, width, feats, dtype=torch.float64).permute(1, 2, 0)
            + video_time_embedding(2 * feats, dtype=torch.float64))
    torch.testing.assert_close(ours, pos3d, atol=1e-12, rtol=1e-12)


def test_grid_sample_mode_gives_the_same_model_outputs():
    from metaseg_ros.model import MetaSegmenter, get_config
    from metaseg_ros.model.layers import set_deformable_sampling

    torch.manual_seed(0)
    model = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=10)).eval()
    images = torch.rand(1, 3, 64, 64) * 255

    def run_and_list_ops():
        with torch.no_grad(), torch.profiler.profile() as profile:
            out = model(images, model.initial_memory(1))
        return out, {event.key for event in profile.key_averages()}

    gathered, gather_ops = run_and_list_ops()
    set_deformable_sampling(model, "grid_sample")
    sampled, grid_ops = run_and_list_ops()
    set_deformable_sampling(model, "gather")
    # The switch really changes the sampling: grid_sample runs only in that mode.
    assert "aten::grid_sampler_2d" in grid_ops
    assert "aten::grid_sampler_2d" not in gather_ops
    assert {m.sampling for m in model.modules() if hasattr(m, "sampling")} == {"gather"}
    torch.testing.assert_close(sampled.class_logits, gathered.class_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sampled.mask_logits, gathered.mask_logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="nearest"):
        set_deformable_sampling(model, "nearest")
