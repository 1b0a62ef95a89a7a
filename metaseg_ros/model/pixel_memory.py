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

from metaseg_ros.model.layers import MASKED_LOGIT_BIAS, sine_position_embedding
from metaseg_ros.model.memory import MemoryAttention, MemoryState, MemoryTokens


class PixelMemoryRead(nn.Module):
    """level + tanh(gate) * Attn(LN(level) + pos, stored pixel features of the last frames):
    the decoder's MemoryAttention (null token, norm, gate), over pixel positions.

    Keys carry the stored map's sine position (normalised: the same place on the image gives
    the same embedding on both grids) and a learned embedding of the slot (the frame's age);
    empty slots are blocked. With keep_gate, each pixel's factor on its own features is
    returned too, for the FPN's stride-4 input (PixelDecoder).
    """

    def __init__(self, dim: int, feature_dim: int, frames: int, num_heads: int,
                 content_gate: bool = False, keep_gate: bool = False) -> None:
        super().__init__()
        self.key_proj = nn.Linear(feature_dim, dim)
        self.value_proj = nn.Linear(feature_dim, dim)
        self.slot_embed = nn.Parameter(torch.randn(frames, dim) * 0.02)
        self.attention = MemoryAttention(dim, num_heads, content_gate, keep_gate)

    @property
    def gate(self) -> nn.Parameter:
        """The read's gate (tanh(gate) of the attention passes)."""
        return self.attention.gate

    def forward(self, level: Tensor, memory: MemoryState) -> tuple[Tensor, Tensor | None]:
        """level (B, D, h, w) pixel features of the current frame -> the same shape, and the
        factor on each pixel's own features (B, 1, h, w), None without keep_gate."""
        batch, dim, height, width = level.shape
        features, valid = memory.features, memory.valid
        frames, channels, h_mem, w_mem = features.shape[1:]
        dtype = level.dtype
        stored = features.permute(0, 1, 3, 4, 2).reshape(
            batch, frames, h_mem * w_mem, channels).to(dtype)
        stored_pos = sine_position_embedding(h_mem, w_mem, dim // 2, device=level.device,
                                             dtype=dtype).flatten(1).transpose(0, 1)
        keys = self.key_proj(stored) + stored_pos[None, None] + self.slot_embed[None, :, None]
        token_valid = valid.to(dtype)[:, :, None].expand(batch, frames, h_mem * w_mem)
        tokens = MemoryTokens(
            keys.reshape(batch, -1, dim), self.value_proj(stored).reshape(batch, -1, dim),
            ((1.0 - token_valid) * MASKED_LOGIT_BIAS).reshape(batch, 1, 1, -1))
        query = level.flatten(2).transpose(1, 2)  # (B, hw, D)
        pos = sine_position_embedding(height, width, dim // 2, device=level.device,
                                      dtype=dtype).flatten(1).transpose(0, 1)[None]
        out, keep = self.attention.read(query, pos, tokens)
        if keep is not None:
            keep = keep.transpose(1, 2).reshape(batch, 1, height, width)
        return out.transpose(1, 2).reshape(batch, dim, height, width), keep
