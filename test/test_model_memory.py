"""The space-time memory ring: slot order, validity, first frame, reset, and the gate."""

from __future__ import annotations

import pytest
import torch

from metaseg_ros.model import (
    MetaSegmenter,
    empty_memory,
    get_config,
    reset_memory,
    write_frame,
)

SIZE = (128, 128)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MetaSegmenter(get_config("tiny", image_size=SIZE, num_queries=20)).eval()


def _frames(count: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, *SIZE, generator=generator) * 255 for _ in range(count)]


def test_ring_order_and_validity():
    memory = empty_memory(1, 3, 2, (1, 1), 4, 5)
    assert memory.valid.tolist() == [[0.0, 0.0, 0.0]]
    for frame in range(1, 6):
        memory = write_frame(memory, torch.full((1, 2, 1, 1), float(frame)),
                             torch.full((1, 4, 5), float(frame)))
        filled = min(frame, 3)
        assert memory.valid.tolist() == [[1.0] * filled + [0.0] * (3 - filled)]
        # Slot 0 holds the newest frame, older frames follow, the oldest falls out.
        expected = [float(frame - slot) if slot < filled else 0.0 for slot in range(3)]
        assert memory.features[0, :, 0, 0, 0].tolist() == expected
        assert memory.queries[0, :, 0, 0].tolist() == expected
    assert memory.features.shape == (1, 3, 2, 1, 1)


def test_reset_marks_selected_batch_entries_empty():
    memory = empty_memory(2, 2, 1, (1, 1), 1, 1)
    memory = write_frame(memory, torch.ones(2, 1, 1, 1), torch.ones(2, 1, 1))
    memory = reset_memory(memory, torch.tensor([1.0, 0.0]))
    assert memory.valid.tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_model_writes_one_frame_per_call(model):
    memory = model.initial_memory(1)
    frames = _frames(6)
    with torch.no_grad():
        outputs = []
        for frame in frames:
            out = model(frame, memory)
            memory = out.memory
            outputs.append(out)
    assert memory.valid.tolist() == [[1.0] * model.config.memory_frames]
    # Slot 0 holds the latest frame's queries, slot 1 the previous frame's.
    torch.testing.assert_close(memory.queries[:, 0], outputs[-1].query_embeddings)
    torch.testing.assert_close(memory.queries[:, 1], outputs[-2].query_embeddings)
    torch.testing.assert_close(memory.features[:, 1], outputs[-2].memory.features[:, 0])


def test_gate_zero_is_exactly_the_image_model(model):
    """At gate 0 the memory cannot change anything, whatever it holds."""
    frames = _frames(3, seed=2)
    with torch.no_grad():
        filled = model.initial_memory(1)
        for frame in frames[:2]:
            filled = model(frame, filled).memory
        garbage = filled._replace(features=torch.randn_like(filled.features) * 100,
                                  queries=torch.randn_like(filled.queries) * 100)
        empty_out, empty_aux = model.forward_with_aux(frames[2], model.initial_memory(1))
        for memory in (filled, garbage):
            out, aux = model.forward_with_aux(frames[2], memory)
            for (c1, m1), (c2, m2) in zip(aux, empty_aux, strict=True):
                assert torch.equal(c1, c2) and torch.equal(m1, m2)
            assert torch.equal(out.query_embeddings, empty_out.query_embeddings)


def test_open_gate_reads_the_memory(model):
    frames = _frames(3, seed=3)
    gates = [layer.memory_attn.gate for layer in model.transformer_decoder.layers]
    try:
        for gate in gates:
            gate.data.fill_(1.0)
        with torch.no_grad():
            first = model(frames[0], model.initial_memory(1))
            with_memory = model(frames[1], first.memory)
            without_memory = model(frames[1], model.initial_memory(1))
            # The first frame is well defined: only the null token is attended.
            assert torch.isfinite(first.class_logits).all()
        # An open gate moves the logits by ~0.26 here: a margin far above rounding noise.
        change = (with_memory.class_logits - without_memory.class_logits).abs().max()
        assert change > 0.02, change
        # An invalid slot is not read: marking every slot empty equals the empty memory.
        emptied = first.memory._replace(valid=torch.zeros_like(first.memory.valid))
        with torch.no_grad():
            ignored = model(frames[1], emptied)
        torch.testing.assert_close(ignored.class_logits, without_memory.class_logits,
                                   atol=1e-5, rtol=1e-5)
    finally:
        for gate in gates:
            gate.data.zero_()


def test_memory_follows_model_dtype_and_device(model):
    memory = model.initial_memory(3)
    assert memory.features.dtype == torch.float32 and memory.valid.dtype == torch.float32
    assert memory.features.shape == (3, model.config.memory_frames, 128, 2, 2)
    assert memory.queries.shape == (3, model.config.memory_frames, 20, 128)
    assert memory.valid.sum() == 0
