"""The memory's content gate (memory.content_gate): at its start it is the scalar gate, it
gates each token by what that token read, it trains, and a checkpoint without it
initialises a model with it."""

from __future__ import annotations

import torch
from memory_parts import (
    assert_loads_without_part,
    assert_part_trains,
    assert_starts_as_model_without,
    random_frames,
)

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.memory import MemoryAttention, MemoryTokens

SIZE = (128, 128)


def config(content_gate: bool):
    return get_config("tiny", image_size=SIZE, num_queries=20,
                      memory={"pool_stride": 32, "pixel_read": True,
                              "content_gate": content_gate})


def frames(count: int, seed: int = 0) -> list[torch.Tensor]:
    return random_frames(SIZE, count, seed)


def tokens(batch: int, count: int, dim: int, seed: int) -> MemoryTokens:
    generator = torch.Generator().manual_seed(seed)
    return MemoryTokens(torch.randn(batch, count, dim, generator=generator),
                        torch.randn(batch, count, dim, generator=generator),
                        torch.zeros(batch, 1, 1, count))


def test_at_its_start_the_content_gate_is_the_scalar_gate():
    torch.manual_seed(0)
    # every decoder layer and the pixel read carry one
    layers = config(True).num_decoder_layers
    assert_starts_as_model_without(config(False), config(True), frames(3), ".content_gate.",
                                   expected_missing=4 * (layers + 1))


def gate_shares(attention: MemoryAttention, query, pos, memory: MemoryTokens):
    """tanh(gate) per token, recovered from the output and the read alone."""
    batch = query.shape[0]
    read = attention.attn(
        attention.norm(query) + pos,
        torch.cat([attention.null_key.expand(batch, 1, -1), memory.keys], 1),
        torch.cat([attention.null_value.expand(batch, 1, -1), memory.values], 1),
        torch.cat([torch.zeros(batch, 1, 1, 1), memory.bias], -1))
    out = attention(query, pos, memory)
    return ((out - query) * read).sum(-1) / read.square().sum(-1)


def test_the_gate_follows_each_token_and_what_it_read():
    torch.manual_seed(1)
    attention = MemoryAttention(32, 4, content_gate=True)
    with torch.no_grad():
        attention.gate.fill_(0.3)
        attention.content_gate.layers[-1].weight.normal_(0, 1.0)
        query, pos = torch.randn(2, 6, 32), torch.zeros(1, 6, 32)
        share = gate_shares(attention, query, pos, tokens(2, 10, 32, seed=2))
        other = gate_shares(attention, query, pos, tokens(2, 10, 32, seed=3))
    # Not the scalar gate, not one gate for all tokens, and other memory content gives the
    # same queries other gates: margins far above rounding.
    assert (share - torch.tanh(torch.tensor(0.3))).abs().max() > 0.05
    assert share.max() - share.min() > 0.05
    assert (share - other).abs().max() > 0.05
    assert share.abs().max() < 1.0


def test_every_content_gate_is_trained_once_the_gates_open():
    torch.manual_seed(2)
    model = MetaSegmenter(config(True))
    assert_part_trains(model, frames(2, seed=3), ".content_gate.layers.1.",
                       expected_count=2 * (len(model.transformer_decoder.layers) + 1))


def test_a_checkpoint_without_content_gates_initialises_a_model_with_them(tmp_path):
    torch.manual_seed(3)
    assert_loads_without_part(config(False), config(True), ".content_gate.layers.1.",
                              "content gates new", tmp_path)
