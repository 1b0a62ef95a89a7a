"""Mask2Former's multi-scale deformable-attention pixel decoder, in plain PyTorch.

Backbone features at strides 8/16/32 are projected to conv_dim, refined jointly by a
deformable-attention encoder, then an FPN step adds the stride-4 level; a 1x1 convolution of
the stride-4 map gives the per-pixel mask features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaseg_ros.model.config import PixelDecoderConfig
from metaseg_ros.model.layers import MultiScaleDeformableAttention, sine_position_embedding

NUM_LEVELS = 3  # deformable encoder levels: strides 32, 16, 8


class PixelDecoderOutput(NamedTuple):
    """mask_features (B, mask_dim, H/4, W/4); multi_scale: strides 32, 16, 8 (B, conv_dim, h, w)."""

    mask_features: Tensor
    multi_scale: list[Tensor]


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention over all levels, then FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, num_points: int) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dim, num_heads, NUM_LEVELS, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor,
                spatial_shapes: list[tuple[int, int]]) -> Tensor:
        """src (B, S, D), pos (1|B, S, D) -> (B, S, D)."""
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


def encoder_reference_points(spatial_shapes: list[tuple[int, int]], device: torch.device,
                             dtype: torch.dtype) -> Tensor:
    """Pixel centres of every level, normalised to [0, 1] as (x, y): (1, S, 2)."""
    points = []
    for height, width in spatial_shapes:
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, height - 0.5, height, device=device, dtype=dtype),
            torch.linspace(0.5, width - 0.5, width, device=device, dtype=dtype),
            indexing="ij")
        points.append(torch.stack((ref_x.reshape(-1) / width, ref_y.reshape(-1) / height), -1))
    return torch.cat(points, 0)[None]


class PixelDecoder(nn.Module):
    """Multi-scale deformable-attention pixel decoder (MSDeformAttnPixelDecoder)."""

    def __init__(self, config: PixelDecoderConfig, in_channels: tuple[int, ...]) -> None:
        super().__init__()
        dim = config.conv_dim
        # input_proj[0] is for stride 32, [1] stride 16, [2] stride 8 (low to high resolution).
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, dim, 1), nn.GroupNorm(32, dim))
            for channels in reversed(in_channels[1:]))
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        self.level_embed = nn.Parameter(torch.randn(NUM_LEVELS, dim))
        self.encoder = nn.ModuleList(
            DeformableEncoderLayer(dim, config.num_heads, config.ffn_dim, config.num_points)
            for _ in range(config.encoder_layers))
        self.lateral_conv = nn.Sequential(nn.Conv2d(in_channels[0], dim, 1, bias=False),
                                          nn.GroupNorm(32, dim))
        self.output_conv = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False),
                                         nn.GroupNorm(32, dim), nn.ReLU())
        self.mask_features = nn.Conv2d(dim, config.mask_dim, 1)
        for conv in (self.lateral_conv[0], self.output_conv[0], self.mask_features):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, features: list[Tensor],
                refine_finest: Callable[[Tensor], tuple[Tensor, Tensor | None]] | None = None
                ) -> PixelDecoderOutput:
        """features: backbone maps at strides 4, 8, 16, 32. refine_finest: applied to the
        encoder's stride-8 output before the FPN step (the pixel memory read); the factor it
        may return (B, 1, h, w) also scales the stride-4 input, upsampled."""
        sources = []
        positions = []
        spatial_shapes: list[tuple[int, int]] = []
        for level, feature in enumerate(reversed(features[1:])):
            projected = self.input_proj[level](feature)
            batch, dim, height, width = projected.shape
            spatial_shapes.append((height, width))
            sources.append(projected.flatten(2).transpose(1, 2))
            pos = sine_position_embedding(height, width, dim // 2, device=projected.device,
                                          dtype=projected.dtype)
            positions.append(pos.flatten(1).transpose(0, 1)[None] + self.level_embed[level])
        src = torch.cat(sources, 1)
        pos = torch.cat(positions, 1)
        reference_points = encoder_reference_points(spatial_shapes, src.device, src.dtype)
        for layer in self.encoder:
            src = layer(src, pos, reference_points, spatial_shapes)
        batch = src.shape[0]
        multi_scale = []
        for chunk, (height, width) in zip(
                torch.split(src, [h * w for h, w in spatial_shapes], dim=1), spatial_shapes,
                strict=True):
            multi_scale.append(chunk.transpose(1, 2).reshape(batch, -1, height, width))
        keep = None
        if refine_finest is not None:
            multi_scale[-1], keep = refine_finest(multi_scale[-1])
        lateral = self.lateral_conv(features[0])
        if keep is not None:
            lateral = lateral * F.interpolate(keep, size=lateral.shape[-2:], mode="bilinear",
                                              align_corners=False)
        top_down = F.interpolate(multi_scale[-1], size=lateral.shape[-2:], mode="bilinear",
                                 align_corners=False)
        finest = self.output_conv(lateral + top_down)
        return PixelDecoderOutput(self.mask_features(finest), multi_scale)
