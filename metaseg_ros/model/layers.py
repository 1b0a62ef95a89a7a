"""Building blocks shared by the pixel decoder, the transformer decoder and the memory.

Everything here is export-friendly: fixed shapes, no boolean indexing, no NonZero, no einsum,
finite attention biases instead of -inf.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Added to the attention logits of keys a query must not see. Finite (fits float16) and far
# below any real logit, so exp() underflows to exactly 0 as it would for -inf.
MASKED_LOGIT_BIAS = -1.0e4


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections and an additive bias.

    Inputs are batch-first: query (B, Nq, D), key/value (B, Nk, D); bias broadcasts to
    (B, heads, Nq, Nk).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, bias: Tensor | None = None
                ) -> Tensor:
        """Attend from query to key/value; returns (B, Nq, D)."""
        batch, num_q, dim = query.shape
        num_k = key.shape[1]
        q = self.q_proj(query) * (self.head_dim ** -0.5)
        q = q.reshape(batch, num_q, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).reshape(batch, num_k, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).reshape(batch, num_k, self.num_heads, self.head_dim).transpose(1, 2)
        logits = torch.matmul(q, k.transpose(-1, -2))
        if bias is not None:
            logits = logits + bias
        weights = torch.softmax(logits, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, num_q, dim)
        return self.out_proj(out)


class MLP(nn.Module):
    """Linear layers with ReLU between them (Mask2Former's mask-embedding head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layers, ReLU after all but the last."""
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def sine_position_embedding(height: int, width: int, num_feats: int, *,
                            device: torch.device | None = None,
                            dtype: torch.dtype = torch.float32,
                            temperature: float = 10000.0) -> Tensor:
    """DETR/Mask2Former normalised sine embedding of a (height, width) grid: (2*num_feats, H, W).

    Channels are [y features, x features], each interleaving sin (even) and cos (odd).
    """
    work = _compute_dtype(dtype)
    scale = 2 * math.pi
    y_embed = torch.arange(1, height + 1, device=device, dtype=work) / (height + 1e-6) * scale
    x_embed = torch.arange(1, width + 1, device=device, dtype=work) / (width + 1e-6) * scale
    dim_t = torch.arange(num_feats, device=device, dtype=torch.int64).to(work)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos_x = _interleave_sin_cos(x_embed[:, None] / dim_t)  # (W, F)
    pos_y = _interleave_sin_cos(y_embed[:, None] / dim_t)  # (H, F)
    pos = torch.cat((pos_y[:, None, :].expand(height, width, num_feats),
                     pos_x[None, :, :].expand(height, width, num_feats)), dim=-1)
    return pos.permute(2, 0, 1).to(dtype)


def _interleave_sin_cos(angles: Tensor) -> Tensor:
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def video_time_embedding(num_channels: int, *, device: torch.device | None = None,
                         dtype: torch.dtype = torch.float32, temperature: float = 10000.0
                         ) -> Tensor:
    """Time term of Video Mask2Former's 3-D sine embedding for a one-frame clip: (num_channels,)."""
    work = _compute_dtype(dtype)
    z_embed = torch.ones((), device=device, dtype=work) / (1 + 1e-6) * (2 * math.pi)
    dim_t = torch.arange(num_channels, device=device, dtype=torch.int64).to(work)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_channels)
    return _interleave_sin_cos(z_embed / dim_t).to(dtype)


def bilinear_sample_indices(locations: Tensor, height: int, width: int
                            ) -> tuple[Tensor, Tensor]:
    """Corner indices and weights reproducing grid_sample(align_corners=False, zeros padding).

    locations: (..., 2) normalised (x, y) in [0, 1] (outside is allowed: zero padding).
    Returns (indices (..., 4) int64 into a row-major H*W map, weights (..., 4)); corners that
    fall outside the map get weight 0 and a clamped (valid) index, so a plain gather works.
    """
    x = locations[..., 0] * width - 0.5
    y = locations[..., 1] * height - 0.5
    # Clamping to [-1, size] changes nothing (those corners are outside or weigh 0) but keeps
    # the integer conversion well defined for huge offsets.
    x = x.clamp(-1.0, float(width))
    y = y.clamp(-1.0, float(height))
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx = x - x0
    fy = y - y0
    indices = []
    weights = []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi = x0 + dx
            yi = y0 + dy
            inside = ((xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)).to(x.dtype)
            xi = xi.clamp(0, width - 1).to(torch.int64)
            yi = yi.clamp(0, height - 1).to(torch.int64)
            indices.append(yi * width + xi)
            weights.append(wx * wy * inside)
    return torch.stack(indices, dim=-1), torch.stack(weights, dim=-1)


def bilinear_sample(feature: Tensor, locations: Tensor) -> Tensor:
    """Gather-based equivalent of F.grid_sample(feature, 2*locations-1, align_corners=False).

    feature: (N, C, H, W); locations: (N, P, 2) normalised (x, y). Returns (N, C, P).
    """
    n, c, h, w = feature.shape
    indices, weights = bilinear_sample_indices(locations, h, w)  # (N, P, 4)
    flat = feature.reshape(n, c, h * w)
    gathered = torch.gather(flat, 2, indices.reshape(n, 1, -1).expand(n, c, -1))
    gathered = gathered.reshape(n, c, -1, 4)
    return (gathered * weights[:, None]).sum(-1)


def multi_scale_deformable_sample(value: Tensor, spatial_shapes: list[tuple[int, int]],
                                  sampling_locations: Tensor, attention_weights: Tensor
                                  ) -> Tensor:
    """Multi-scale deformable attention core with explicit gathers (no grid_sample).

    value: (B, S, heads, Dh) with S = sum(H*W) over levels (row-major, level after level);
    sampling_locations: (B, Nq, heads, L, P, 2) normalised (x, y);
    attention_weights: (B, Nq, heads, L, P). Returns (B, Nq, heads * Dh).
    """
    batch, total, heads, head_dim = value.shape
    _, num_q, _, levels, points, _ = sampling_locations.shape
    all_indices = []
    all_weights = []
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        indices, weights = bilinear_sample_indices(sampling_locations[:, :, :, level], height,
                                                   width)
        all_indices.append(indices + start)  # (B, Nq, heads, P, 4)
        all_weights.append(weights * attention_weights[:, :, :, level, :, None].to(weights.dtype))
        start += height * width
    if start != total:
        raise ValueError(f"spatial shapes cover {start} positions, value has {total}")
    indices = torch.stack(all_indices, dim=3)  # (B, Nq, heads, L, P, 4)
    weights = torch.stack(all_weights, dim=3)
    samples = levels * points * 4
    # One flat table of (batch, head, position) rows; a single Gather reads every corner.
    table = value.permute(0, 2, 1, 3).reshape(batch * heads * total, head_dim)
    row_offset = (torch.arange(batch * heads, device=value.device, dtype=torch.int64)
                  * total).reshape(batch, 1, heads, 1)
    flat_indices = indices.reshape(batch, num_q, heads, samples) + row_offset
    gathered = table.index_select(0, flat_indices.reshape(-1))
    gathered = gathered.reshape(batch * num_q * heads, samples, head_dim)
    weights = weights.reshape(batch * num_q * heads, 1, samples).to(value.dtype)
    out = torch.bmm(weights, gathered)  # (B*Nq*heads, 1, Dh)
    return out.reshape(batch, num_q, heads * head_dim)


def grid_sample_deformable_sample(value: Tensor, spatial_shapes: list[tuple[int, int]],
                                  sampling_locations: Tensor, attention_weights: Tensor
                                  ) -> Tensor:
    """Same result as multi_scale_deformable_sample, with F.grid_sample (faster in eager CPU;
    not for TensorRT, where grid_sample decompositions have been reported to miscompile)."""
    batch, _, heads, head_dim = value.shape
    _, num_q, _, _, points, _ = sampling_locations.shape
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    out = None
    for level, (height, width) in enumerate(spatial_shapes):
        level_value = per_level[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim,
                                                                   height, width)
        grid = (2 * sampling_locations[:, :, :, level] - 1).transpose(1, 2).flatten(0, 1)
        grid = grid.to(level_value.dtype)
        sampled = F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (B*heads, Dh, Nq, P)
        weights = attention_weights[:, :, :, level].transpose(1, 2).reshape(
            batch * heads, 1, num_q, points)
        contribution = (sampled * weights).sum(-1)
        out = contribution if out is None else out + contribution
    assert out is not None
    return out.reshape(batch, heads * head_dim, num_q).transpose(1, 2)


SAMPLING_MODES = ("gather", "grid_sample")


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention over several feature levels (Deformable DETR / Mask2Former).

    ``sampling`` selects the bilinear sampling implementation: "gather" (default; explicit
    gathers, what exported graphs should contain) or "grid_sample" (same numbers, faster in
    eager CPU). See set_deformable_sampling.
    """

    def __init__(self, dim: int, num_heads: int, num_levels: int, num_points: int) -> None:
        super().__init__()
        self.sampling = "gather"
        # The last level-size tensor made on a GPU, with its key (see _normalizer).
        self._normalizer_cache: tuple[tuple, Tensor] | None = None
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: offsets start on a ring around the reference."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, value_input: Tensor,
                spatial_shapes: list[tuple[int, int]]) -> Tensor:
        """query (B, Nq, D) (position included); reference_points (B|1, Nq, 2) normalised (x, y);
        value_input (B, S, D) flattened levels. Returns (B, Nq, D)."""
        batch, num_q, dim = query.shape
        value = self.value_proj(value_input)
        value = value.reshape(batch, value.shape[1], self.num_heads, dim // self.num_heads)
        offsets = self.sampling_offsets(query).reshape(
            batch, num_q, self.num_heads, self.num_levels, self.num_points, 2)
        weights = self.attention_weights(query).reshape(
            batch, num_q, self.num_heads, self.num_levels * self.num_points)
        weights = torch.softmax(weights, dim=-1).reshape(
            batch, num_q, self.num_heads, self.num_levels, self.num_points)
        # Sampling positions need more precision than float16/bfloat16 give on large maps
        # (Mask2Former runs this module in float32 too): compute them in float32 at least.
        work = _compute_dtype(query.dtype)
        normalizer = self._normalizer(spatial_shapes, work, query.device)  # (L, 2) as (x, y)
        locations = (reference_points.to(work)[:, :, None, None, None, :]
                     + offsets.to(work) / normalizer[None, None, None, :, None, :])
        if self.sampling == "grid_sample":
            out = grid_sample_deformable_sample(value, spatial_shapes, locations, weights)
        else:
            out = multi_scale_deformable_sample(value, spatial_shapes, locations, weights)
        return self.output_proj(out)

    def _normalizer(self, spatial_shapes: list[tuple[int, int]], dtype: torch.dtype,
                    device: torch.device) -> Tensor:
        """(L, 2) level sizes as (w, h). Made from Python numbers, i.e. copied from the host:
        on a GPU the last one is kept, so that a step captured into a CUDA graph (after
        warm-up steps) copies nothing from the host. Never cached while being traced."""
        sizes = [[w, h] for h, w in spatial_shapes]
        if torch.compiler.is_compiling() or device.type != "cuda":
            return torch.tensor(sizes, dtype=dtype, device=device)
        # An inference-mode tensor must not reach training (autograd refuses to save it).
        key = (tuple(spatial_shapes), dtype, device, torch.is_inference_mode_enabled())
        if self._normalizer_cache is None or self._normalizer_cache[0] != key:
            self._normalizer_cache = (key, torch.tensor(sizes, dtype=dtype, device=device))
        return self._normalizer_cache[1]


def set_deformable_sampling(model: nn.Module, mode: str) -> None:
    """Choose the sampling implementation of every deformable attention in model."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling mode {mode!r} not in {SAMPLING_MODES}")
    for module in model.modules():
        if isinstance(module, MultiScaleDeformableAttention):
            module.sampling = mode
