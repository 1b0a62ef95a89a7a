"""The memory ring stays bounded on an unlimited stream (issue 14, section 5): far past its
length, the state keeps its shapes and bytes, and holds exactly the last T frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.model.config import get_config
from metaseg_ros.model.memory import MemoryState
from metaseg_ros.model.metasegmenter import MetaSegmenter, memory_shapes


def _small_model(past_mask_features: bool = False, motion: bool = False) -> MetaSegmenter:
    torch.manual_seed(0)
    config = get_config("tiny", image_size=(64, 64), num_queries=8, num_decoder_layers=2,
                        memory={"pool_stride": 32, "past_mask_features": past_mask_features,
                                "past_mask_motion": motion})
    model = MetaSegmenter(config).eval()
    with torch.no_grad():  # an open memory: the ring's content reaches the outputs
        for layer in model.transformer_decoder.layers:
            layer.memory_attn.gate.fill_(0.5)
    return model


def _bytes(memory: MemoryState) -> int:
    return sum(t.numel() * t.element_size() for t in memory)


@pytest.mark.parametrize(("past_mask_features", "motion"),
                         [(False, False), (True, False), (True, True)])
def test_ring_keeps_its_shapes_and_bytes_and_the_last_frames_far_past_its_length(
        past_mask_features: bool, motion: bool) -> None:
    torch.set_num_threads(1)
    model = _small_model(past_mask_features, motion)
    frames = model.config.memory_frames
    steps = 10 * frames + 3
    memory = model.initial_memory(1)
    expected_shapes = memory_shapes(model.config, 1)
    start_bytes = _bytes(memory)
    written: list[torch.Tensor] = []
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for step in range(steps):
            image = torch.rand(1, 3, 64, 64, generator=generator) * 255
            output = model(image, memory)
            memory = output.memory
            written.append(output.query_embeddings[0].clone())
            assert tuple(tuple(t.shape) for t in memory) == tuple(expected_shapes), step
            assert _bytes(memory) == start_bytes, step
            assert memory.valid.sum().item() == min(step + 1, frames)
    # slot k holds the queries of the frame written k frames ago; older ones are gone
    for slot in range(frames):
        assert torch.equal(memory.queries[0, slot], written[-1 - slot])


def test_streaming_segmenter_memory_is_bounded_on_a_long_stream() -> None:
    torch.set_num_threads(1)
    model = _small_model()
    segmenter = StreamingSegmenter(EagerRunner(model))
    rng = np.random.default_rng(0)
    sizes = set()
    fills = []
    for _ in range(6 * model.config.memory_frames):
        detections = segmenter.step(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
        fills.append(detections.memory_fill)
        sizes.add(_bytes(segmenter._memory))
    assert len(sizes) == 1
    assert fills[:3] == [0, 1, 2] and fills[-1] == model.config.memory_frames
