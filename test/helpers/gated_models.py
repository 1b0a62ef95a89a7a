"""Small random MetaSegmenter models with the memory gates open, for backend tests."""

from __future__ import annotations

import torch

from metaseg_ros.model import MetaSegmenter, get_config


def gated_tiny(size: tuple[int, int] = (128, 128), gate: float = 0.3, gate_step: float = 0.0,
               null_value_std: float = 0.0, seed: int = 0) -> MetaSegmenter:
    """A reduced tiny config (20 queries, 3 decoder layers, 1 encoder layer) in eval mode, so
    the memory path runs: decoder layer i's memory gate at gate + i * gate_step, and its
    null value drawn from N(0, null_value_std) when that is not 0 (an empty memory then
    changes the queries too)."""
    torch.manual_seed(seed)
    model = MetaSegmenter(get_config("tiny", image_size=size, num_queries=20,
                                     num_decoder_layers=3, pixel_decoder={"encoder_layers": 1}))
    with torch.no_grad():
        for index, layer in enumerate(model.transformer_decoder.layers):
            layer.memory_attn.gate.fill_(gate + gate_step * index)
            if null_value_std:
                layer.memory_attn.null_value.normal_(0, null_value_std)
    return model.eval()
