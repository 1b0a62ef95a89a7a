"""Mask2Former's masked-attention transformer decoder plus gated cross-frame memory attention.

Each layer: masked cross-attention to one pixel-decoder level (32, 16, 8, 32, ...) ->
gated memory attention (identity while the gate is 0) -> self-attention -> FFN.
Predictions (class logits, mask logits) are made from the learned queries before the first
layer and after every layer; each prediction's mask, resized to the next layer's level and
thresholded, restricts that layer's cross-attention. A query whose mask would block every
key attends everywhere instead (Mask2Former's rule), done arithmetically.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.model.layers import (
    MASKED_LOGIT_BIAS,
    MLP,
    Attention,
    sine_position_embedding,
    video_time_embedding,
)
from metaseg_ros.model.memory import MemoryAttention, MemoryTokens

NUM_LEVELS = 3


class Prediction(NamedTuple):
    """One decoder stage's output: class logits (B, Q, C+1), mask logits (B, Q, H/4, W/4)."""

    class_logits: Tensor
    mask_logits: Tensor


class DecoderOutput(NamedTuple):
    """Predictions before layer 1 and after every layer; final normalised queries (B, Q, D)."""

    predictions: list[Prediction]
    query_embeddings: Tensor


def masked_attention_bias(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Cross-attention bias (B, 1, Q, h*w) from mask logits resized to size.

    Keys where sigmoid(mask) < 0.5 get MASKED_LOGIT_BIAS; rows that would block every key are
    left unblocked.
    """
    resized = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    blocked = (resized.sigmoid() < 0.5).to(mask_logits.dtype).flatten(2)  # (B, Q, hw)
    all_blocked = blocked.amin(dim=-1, keepdim=True)
    return (blocked * (1.0 - all_blocked) * MASKED_LOGIT_BIAS)[:, None]


class DecoderLayer(nn.Module):
    """Masked cross-attention, gated memory attention, self-attention, FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, memory_heads: int,
                 pre_norm: bool, content_gate: bool = False) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.cross_attn = Attention(dim, num_heads)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.memory_attn = MemoryAttention(dim, memory_heads, content_gate)
        self.self_attn = Attention(dim, num_heads)
        self.self_attn_norm = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        for module in (self.cross_attn, self.self_attn):
            for linear in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
                nn.init.xavier_uniform_(linear.weight)
                nn.init.zeros_(linear.bias)
        for linear in (self.linear1, self.linear2):
            nn.init.xavier_uniform_(linear.weight)

    def forward(self, queries: Tensor, query_pos: Tensor, keys: Tensor, key_pos: Tensor,
                cross_bias: Tensor, memory: MemoryTokens) -> Tensor:
        """queries (B, Q, D); keys (B, hw, D); key_pos (1, hw, D); cross_bias (B, 1, Q, hw)."""
        if self.pre_norm:
            normed = self.cross_attn_norm(queries)
            queries = queries + self.cross_attn(normed + query_pos, keys + key_pos, keys,
                                                cross_bias)
            queries = self.memory_attn(queries, query_pos, memory)
            normed = self.self_attn_norm(queries)
            queries = queries + self.self_attn(normed + query_pos, normed + query_pos, normed)
            normed = self.ffn_norm(queries)
            return queries + self.linear2(F.relu(self.linear1(normed)))
        queries = self.cross_attn_norm(
            queries + self.cross_attn(queries + query_pos, keys + key_pos, keys, cross_bias))
        queries = self.memory_attn(queries, query_pos, memory)
        with_pos = queries + query_pos
        queries = self.self_attn_norm(queries + self.self_attn(with_pos, with_pos, queries))
        return self.ffn_norm(queries + self.linear2(F.relu(self.linear1(queries))))


class TransformerDecoder(nn.Module):
    """Learned queries refined over the pixel decoder's levels, with class and mask heads."""

    def __init__(self, config: MetaSegConfig) -> None:
        super().__init__()
        dim = config.hidden_dim
        conv_dim = config.pixel_decoder.conv_dim
        dec = config.decoder
        self.video_pos_embedding = dec.video_pos_embedding
        if conv_dim != dim or dec.enforce_input_projection:
            self.input_proj = nn.ModuleList(nn.Conv2d(conv_dim, dim, 1) for _ in range(NUM_LEVELS))
            for conv in self.input_proj:
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)
        else:
            self.input_proj = nn.ModuleList(nn.Identity() for _ in range(NUM_LEVELS))
        self.level_embed = nn.Parameter(torch.randn(NUM_LEVELS, dim))
        self.query_feat = nn.Parameter(torch.randn(config.num_queries, dim))
        self.query_embed = nn.Parameter(torch.randn(config.num_queries, dim))
        self.layers = nn.ModuleList(
            DecoderLayer(dim, dec.num_heads, dec.ffn_dim, config.memory.num_heads, dec.pre_norm,
                         config.memory.content_gate)
            for _ in range(config.num_decoder_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, config.num_classes + 1)
        self.mask_embed = MLP(dim, dim, config.pixel_decoder.mask_dim, 3)

    def predict(self, queries: Tensor, mask_features: Tensor) -> tuple[Prediction, Tensor]:
        """Heads on normalised queries; also returns the normalised queries (B, Q, D)."""
        normed = self.decoder_norm(queries)
        class_logits = self.class_embed(normed)
        embedding = self.mask_embed(normed)  # (B, Q, mask_dim)
        batch, channels, height, width = mask_features.shape
        mask_logits = torch.matmul(embedding, mask_features.reshape(batch, channels, -1))
        return (Prediction(class_logits, mask_logits.reshape(batch, -1, height, width)), normed)

    def forward(self, multi_scale: list[Tensor], mask_features: Tensor,
                memory: MemoryTokens) -> DecoderOutput:
        """multi_scale: pixel-decoder maps at strides 32, 16, 8; mask_features at stride 4."""
        keys, key_pos, sizes = [], [], []
        for level, feature in enumerate(multi_scale[:NUM_LEVELS]):
            projected = self.input_proj[level](feature)
            batch, dim, height, width = projected.shape
            sizes.append((height, width))
            keys.append(projected.flatten(2).transpose(1, 2) + self.level_embed[level])
            pos = sine_position_embedding(height, width, dim // 2, device=projected.device,
                                          dtype=projected.dtype)
            pos = pos.flatten(1).transpose(0, 1)[None]
            if self.video_pos_embedding:
                pos = pos + video_time_embedding(dim, device=projected.device,
                                                 dtype=projected.dtype)
            key_pos.append(pos)
        batch = mask_features.shape[0]
        queries = self.query_feat[None].expand(batch, -1, -1)
        query_pos = self.query_embed[None]
        prediction, normed = self.predict(queries, mask_features)
        predictions = [prediction]
        for index, layer in enumerate(self.layers):
            level = index % NUM_LEVELS
            bias = masked_attention_bias(prediction.mask_logits, sizes[level])
            queries = layer(queries, query_pos, keys[level], key_pos[level], bias, memory)
            prediction, normed = self.predict(queries, mask_features)
            predictions.append(prediction)
        return DecoderOutput(predictions, normed)
