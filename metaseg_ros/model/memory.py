"""Space-time memory bank: a fixed-size ring of the last T frames, passed as explicit tensors.

Slot order: slot 0 holds the most recent past frame, slot T-1 the oldest. Writing a frame
shifts every slot one place older and drops the oldest (a concatenation, no scatter), so the
state keeps fixed shapes and exports cleanly. ``valid`` marks filled slots (1.0) and empty
ones (0.0); after a reset every slot is empty and the memory attention sees only its learned
null token, which keeps the first frame well defined.

What a slot stores (computed once, when its frame is written; nothing is recomputed later):
  features  the frame's stride-32 pixel-decoder features (stride 16 when pool_stride is 16),
            projected to C_mem channels and average-pooled to (h_mem, w_mem) =
            image_size / pool_stride
  queries   the decoder's final (normalised) query embeddings of that frame

Beside the ring, ``mask_features`` holds the last frame's stride-4 mask features (as the
mask head used them) when memory.past_mask_features is on (model/mask_memory.py); without
it, a (B, 1, 1, 1) placeholder passed through unchanged, so every backend sees one layout.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from metaseg_ros.model.layers import MASKED_LOGIT_BIAS, MLP, Attention, sine_position_embedding

CONTENT_GATE_HIDDEN = 32  # hidden width of MemoryAttention's content and keep gates


class MemoryState(NamedTuple):
    """The ring of the last T frames (slot 0 = most recent).

    features: (B, T, C_mem, h_mem, w_mem) low-resolution pixel features
    queries:  (B, T, Q, D) decoder query embeddings
    valid:    (B, T) float32, 1.0 = filled slot, 0.0 = empty
    mask_features: (B, mask_dim, H/4, W/4) the last frame's mask features (valid with
        slot 0; with memory.past_mask_motion two more channels: its flow to the frame
        before, model/mask_motion.py), or (B, 1, 1, 1) when the model does not keep them
    """

    features: Tensor
    queries: Tensor
    valid: Tensor
    mask_features: Tensor


def empty_memory(batch_size: int, frames: int, feature_dim: int, memory_size: tuple[int, int],
                 num_queries: int, hidden_dim: int, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None,
                 mask_shape: tuple[int, int, int] = (1, 1, 1)) -> MemoryState:
    """A memory with every slot empty (zeros, valid = 0); mask_shape: (mask_dim, H/4, W/4)
    of the kept mask features, (1, 1, 1) for the placeholder."""
    dtype = torch.float32 if dtype is None else dtype
    h_mem, w_mem = memory_size
    return MemoryState(
        features=torch.zeros(batch_size, frames, feature_dim, h_mem, w_mem, device=device,
                             dtype=dtype),
        queries=torch.zeros(batch_size, frames, num_queries, hidden_dim, device=device,
                            dtype=dtype),
        valid=torch.zeros(batch_size, frames, device=device, dtype=torch.float32),
        mask_features=torch.zeros(batch_size, *mask_shape, device=device, dtype=dtype),
    )


def write_frame(memory: MemoryState, features: Tensor, queries: Tensor,
                mask_features: Tensor | None = None) -> MemoryState:
    """Push one frame into slot 0, shifting older slots by one and dropping the oldest.

    features (B, C_mem, h_mem, w_mem); queries (B, Q, D); mask_features (B, mask_dim, H/4,
    W/4) replace the kept ones (None: the placeholder passes through).
    """
    ones = torch.ones_like(memory.valid[:, :1])
    return MemoryState(
        features=torch.cat([features[:, None].to(memory.features.dtype),
                            memory.features[:, :-1]], dim=1),
        queries=torch.cat([queries[:, None].to(memory.queries.dtype), memory.queries[:, :-1]],
                          dim=1),
        valid=torch.cat([ones, memory.valid[:, :-1]], dim=1),
        mask_features=memory.mask_features if mask_features is None
        else mask_features.to(memory.mask_features.dtype),
    )


def reset_memory(memory: MemoryState, keep: Tensor) -> MemoryState:
    """Mark the slots of the batch entries with keep == 0 as empty (keep: (B,) 0/1 floats)."""
    return MemoryState(memory.features, memory.queries, memory.valid * keep[:, None],
                       memory.mask_features)


class MemoryTokens(NamedTuple):
    """The memory flattened for attention: key inputs, value inputs (B, M, D), bias (B, 1, 1, M)."""

    keys: Tensor
    values: Tensor
    bias: Tensor


class MemoryReader(nn.Module):
    """Turns a MemoryState into attention tokens, once per forward (shared by all layers).

    Pixel tokens get a sine position embedding, query tokens their query slot's learned
    position embedding; both get a learned embedding of their slot (the frame's age).
    Tokens of empty slots are blocked by a finite bias.
    """

    def __init__(self, frames: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, hidden_dim)
        self.slot_embed = nn.Parameter(torch.randn(frames, hidden_dim) * 0.02)

    def forward(self, memory: MemoryState, query_pos: Tensor) -> MemoryTokens:
        """query_pos (Q, D): the decoder's learned query position embedding."""
        features, queries, valid = memory.features, memory.queries, memory.valid
        batch, frames, channels, h_mem, w_mem = features.shape
        num_queries, dim = queries.shape[2], queries.shape[3]
        dtype = queries.dtype
        pixels = self.feature_proj(features.permute(0, 1, 3, 4, 2).reshape(
            batch, frames, h_mem * w_mem, channels))  # (B, T, hw, D)
        pixel_pos = sine_position_embedding(h_mem, w_mem, dim // 2, device=features.device,
                                            dtype=dtype).flatten(1).transpose(0, 1)  # (hw, D)
        slot = self.slot_embed[:, None, :]  # (T, 1, D)
        pixel_keys = pixels + (pixel_pos[None] + slot)[None]
        query_keys = queries + (query_pos[None] + slot)[None]
        keys = torch.cat([pixel_keys.reshape(batch, -1, dim), query_keys.reshape(batch, -1, dim)],
                         dim=1)
        values = torch.cat([pixels.reshape(batch, -1, dim), queries.reshape(batch, -1, dim)],
                           dim=1)
        valid = valid.to(dtype)
        token_valid = torch.cat([valid[:, :, None].expand(batch, frames, h_mem * w_mem)
                                 .reshape(batch, -1),
                                 valid[:, :, None].expand(batch, frames, num_queries)
                                 .reshape(batch, -1)], dim=1)
        bias = ((1.0 - token_valid) * MASKED_LOGIT_BIAS)[:, None, None, :]
        return MemoryTokens(keys, values, bias)


class MemoryAttention(nn.Module):
    """Gated cross-frame attention: query + tanh(gate) * Attn(LN(query) + pos, memory).

    A learned null key/value token is always attendable, so an empty memory is well defined.
    The gate starts at 0, where the layer is exactly the identity (the image model).

    With content_gate, the gate also depends on each token and what it read:
    tanh(gate + MLP([LN(query), read])) per token (a query, or a pixel for the pixel read),
    so a token can take the past where it disagrees with it (a lost row) and keep its own
    where it needs no help (a clean frame). The MLP's last layer starts at zero: the scalar
    gate exactly.

    With keep_gate, the read can also scale the token's own features:
    (1 + tanh(MLP([LN(query), read]))) * query + tanh(gate) * read, so a token whose frame
    is damaged (a lost row) can give up what it carries instead of only adding the past to
    it. The MLP's last layer starts at zero: a factor of exactly 1.
    """

    def __init__(self, dim: int, num_heads: int, content_gate: bool = False,
                 keep_gate: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.null_key = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.null_value = nn.Parameter(torch.zeros(1, 1, dim))
        self.gate = nn.Parameter(torch.zeros(1))
        self.content_gate = zero_output_mlp(dim) if content_gate else None
        self.keep_gate = zero_output_mlp(dim) if keep_gate else None

    def forward(self, query: Tensor, query_pos: Tensor, tokens: MemoryTokens) -> Tensor:
        """query (B, Q, D), query_pos (1|B, Q, D) -> (B, Q, D)."""
        return self.read(query, query_pos, tokens)[0]

    def read(self, query: Tensor, query_pos: Tensor, tokens: MemoryTokens
             ) -> tuple[Tensor, Tensor | None]:
        """The output (B, Q, D) and the factor (B, Q, 1) on the token's own features
        (None without keep_gate)."""
        batch = query.shape[0]
        keys = torch.cat([self.null_key.expand(batch, 1, -1).to(query.dtype), tokens.keys], 1)
        values = torch.cat([self.null_value.expand(batch, 1, -1).to(query.dtype), tokens.values],
                           1)
        bias = torch.cat([torch.zeros_like(tokens.bias[..., :1]), tokens.bias], dim=-1)
        normed = self.norm(query)
        attended = self.attn(normed + query_pos, keys, values, bias)
        gate = self.gate
        if self.content_gate is not None:
            gate = gate + self.content_gate(torch.cat([normed, attended], dim=-1))
        if self.keep_gate is None:
            return query + torch.tanh(gate) * attended, None
        keep = 1.0 + torch.tanh(self.keep_gate(torch.cat([normed, attended], dim=-1)))
        return keep * query + torch.tanh(gate) * attended, keep


def zero_output_mlp(dim: int) -> MLP:
    """A gate's MLP over [LN(token), read] whose last layer starts at zero."""
    mlp = MLP(2 * dim, CONTENT_GATE_HIDDEN, 1, 2)
    nn.init.zeros_(mlp.layers[-1].weight)
    nn.init.zeros_(mlp.layers[-1].bias)
    return mlp
