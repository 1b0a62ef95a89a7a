"""The pixel memory read (memory.pixel_read): identity at gate 0, reads the stored pixel
features when open, trains end to end, and starts from a checkpoint without it."""

from __future__ import annotations

import pytest
import torch
from memory_parts import assert_onnx_runs_as_pytorch, random_frames
from memory_parts import run_clip as run

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.checkpoint import save_checkpoint
from metaseg_ros.train.initialization import init_from_checkpoint
from metaseg_ros.train.trainer import set_memory_gates

SIZE = (128, 128)


def config(pixel_read: bool):
    return get_config("tiny", image_size=SIZE, num_queries=20,
                      memory={"pool_stride": 32, "pixel_read": pixel_read})


@pytest.fixture(scope="module")
def models():
    """The same weights with and without the pixel read (its own weights random)."""
    torch.manual_seed(0)
    plain = MetaSegmenter(config(False)).eval()
    reading = MetaSegmenter(config(True)).eval()
    missing, unexpected = reading.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(n.startswith("pixel_memory.") for n in missing)
    return plain, reading


def frames(count: int, seed: int = 0) -> list[torch.Tensor]:
    return random_frames(SIZE, count, seed)


def test_gate_zero_is_the_model_without_the_read(models):
    plain, reading = models
    assert reading.pixel_memory is not None and plain.pixel_memory is None
    for ours, theirs in zip(run(reading, frames(3)), run(plain, frames(3)), strict=True):
        torch.testing.assert_close(ours.mask_logits, theirs.mask_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.class_logits, theirs.class_logits, atol=1e-5, rtol=0)
        for a, b in zip(ours.memory, theirs.memory, strict=True):
            assert a.shape == b.shape  # the memory state is unchanged by the read


def test_open_gate_reads_the_stored_pixel_features(models):
    _, reading = models
    images = frames(3, seed=1)
    try:
        reading.pixel_memory.gate.data.fill_(1.0)
        past = run(reading, images[:2])[-1].memory
        with_memory = run(reading, images[2:], past)[0].mask_logits
        without = run(reading, images[2:])[0].mask_logits
        other = past._replace(features=-past.features)  # other stored content
        changed = run(reading, images[2:], other)[0].mask_logits
        emptied = run(reading, images[2:], past._replace(valid=torch.zeros_like(past.valid)))
    finally:
        reading.pixel_memory.gate.data.zero_()
    # Margins far above rounding: the read moves the masks, by what the memory holds.
    assert (with_memory - without).abs().max() > 0.05
    assert (with_memory - changed).abs().max() > 0.05
    # Empty slots are not read: marking every slot empty equals the empty memory.
    torch.testing.assert_close(emptied[0].mask_logits, without, atol=1e-5, rtol=1e-5)


def test_every_parameter_of_the_read_is_trained_once_the_gate_opens(models):
    _, reading = models
    model = MetaSegmenter(reading.config)
    model.load_state_dict(reading.state_dict())
    set_memory_gates(model, 0.3)
    assert float(model.pixel_memory.gate.detach()) == pytest.approx(0.3)
    images = frames(2, seed=2)
    memory = model(images[0], model.initial_memory(1)).memory
    model(images[1], memory).mask_logits.square().mean().backward()
    for name, parameter in model.pixel_memory.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().max() > 0, name


def test_a_checkpoint_without_the_read_initialises_a_model_with_it(models, tmp_path):
    plain, _ = models
    save_checkpoint(plain, tmp_path / "plain")
    torch.manual_seed(5)
    model = MetaSegmenter(config(True))
    summary = init_from_checkpoint(model, tmp_path / "plain")
    assert "pixel memory read new" in summary
    own = model.state_dict()
    for name, value in plain.state_dict().items():
        assert torch.equal(own[name], value), name
    assert float(model.pixel_memory.gate.detach()) == 0.0


def test_the_read_exports_to_onnx_and_runs_there_as_in_pytorch(models, tmp_path):
    pytest.importorskip("onnxruntime")
    _, reading = models
    model = MetaSegmenter(reading.config).eval()
    model.load_state_dict(reading.state_dict())
    set_memory_gates(model, 1.0)
    assert_onnx_runs_as_pytorch(model, frames(3, seed=4), tmp_path)
