"""Pixel features read the memory (memory.pixel_read): the current frame's stride-8 pixel
features attend to the pixel features stored for the last frames, before the FPN step makes
the mask features from them (the decoder's masked attention reads the refined level too).
Gated like the decoder's memory attention: at gate 0 the layer is exactly the identity (the
model without it).

Why: the decoder's memory attention lets the *queries* borrow the past, but a mask is the
product of a query with the current frame's pixel embeddings, so a frame that is blurred,
dark or half lost cannot get its pixels back that way (docs/benchmarks.md, "Training the
memory"). This read brings the past into the pixel features themselves.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metaseg_ros.model.layers import MASKED_LOGIT_BIAS, Attention, sine_position_embedding
from metaseg_ros.model.memory import MemoryState


class PixelMemoryRead(nn.Module):
    """level + tanh(gate) * Attn(LN(level) + pos, stored pixel features of the last frames).

    Keys carry the stored map's sine position (normalised: the same place on the image gives
    the same embedding on both grids) and a learned embedding of the slot (the frame's age);
    empty slots are blocked; a learned null token keeps an empty memory well defined.
    """

    def __init__(self, dim: int, feature_dim: int, frames: int, num_heads: int) -> None:
        super().__init__()
        self.key_proj = nn.Linear(feature_dim, dim)
        self.value_proj = nn.Linear(feature_dim, dim)
        self.slot_embed = nn.Parameter(torch.randn(frames, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.null_key = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.null_value = nn.Parameter(torch.zeros(1, 1, dim))
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, level: Tensor, memory: MemoryState) -> Tensor:
        """level (B, D, h, w) pixel features of the current frame -> the same shape."""
        batch, dim, height, width = level.shape
        features, valid = memory.features, memory.valid
        frames, channels, h_mem, w_mem = features.shape[1:]
        dtype = level.dtype
        stored = features.permute(0, 1, 3, 4, 2).reshape(
            batch, frames, h_mem * w_mem, channels).to(dtype)
        stored_pos = sine_position_embedding(h_mem, w_mem, dim // 2, device=level.device,
                                             dtype=dtype).flatten(1).transpose(0, 1)
        keys = self.key_proj(stored) + stored_pos[None, None] + self.slot_embed[None, :, None]
        values = self.value_proj(stored)
        keys = torch.cat([self.null_key.expand(batch, 1, -1).to(dtype),
                          keys.reshape(batch, -1, dim)], dim=1)
        values = torch.cat([self.null_value.expand(batch, 1, -1).to(dtype),
                            values.reshape(batch, -1, dim)], dim=1)
        token_valid = valid.to(dtype)[:, :, None].expand(batch, frames, h_mem * w_mem)
        bias = torch.cat([torch.zeros_like(token_valid[:, :1, 0]),
                          ((1.0 - token_valid) * MASKED_LOGIT_BIAS).reshape(batch, -1)], dim=1)
        query = level.flatten(2).transpose(1, 2)  # (B, hw, D)
        pos = sine_position_embedding(height, width, dim // 2, device=level.device,
                                      dtype=dtype).flatten(1).transpose(0, 1)[None]
        attended = self.attn(self.norm(query) + pos, keys, values, bias[:, None, None, :])
        out = query + torch.tanh(self.gate) * attended
        return out.transpose(1, 2).reshape(batch, dim, height, width)
