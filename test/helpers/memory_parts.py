"""Shared steps of the tests of the memory's optional parts (pixel read, content gates,
keep gates, mask-feature carry): random clips, a clip run with the memory carried, and the
checks every new part must pass (at its start it is the model without it; it trains once
the gates open; a checkpoint without it loads and leaves it at its zero start; the ONNX
export runs it as PyTorch does)."""

from __future__ import annotations

from pathlib import Path

import torch

from metaseg_ros.model import MetaSegmenter
from metaseg_ros.model.checkpoint import save_checkpoint
from metaseg_ros.model.config import MetaSegConfig
from metaseg_ros.train.initialization import init_from_checkpoint
from metaseg_ros.train.trainer import set_memory_gates


def random_frames(size: tuple[int, int], count: int, seed: int = 0) -> list[torch.Tensor]:
    """`count` (1, 3, H, W) images of uniform noise in 0..255."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, *size, generator=generator) * 255 for _ in range(count)]


def run_clip(model: MetaSegmenter, images: list[torch.Tensor], memory=None) -> list:
    """The model's outputs on `images` in order, the memory carried (no gradients)."""
    memory = model.initial_memory(1) if memory is None else memory
    outputs = []
    with torch.no_grad():
        for image in images:
            outputs.append(model(image, memory))
            memory = outputs[-1].memory
    return outputs


def assert_starts_as_model_without(without: MetaSegConfig, with_part: MetaSegConfig,
                                   images: list[torch.Tensor], marker: str,
                                   expected_missing: int) -> None:
    """The model with the part, loaded from one without it (memory gates at 0.5, so the
    memory is open), gives the same outputs on `images`; what the load misses is the
    `expected_missing` tensors whose name contains `marker`."""
    reference = MetaSegmenter(without).eval()
    set_memory_gates(reference, 0.5)
    model = MetaSegmenter(with_part).eval()
    missing, unexpected = model.load_state_dict(reference.state_dict(), strict=False)
    assert not unexpected and all(marker in name for name in missing)
    assert len(missing) == expected_missing
    for ours, theirs in zip(run_clip(model, images), run_clip(reference, images), strict=True):
        torch.testing.assert_close(ours.mask_logits, theirs.mask_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.class_logits, theirs.class_logits, atol=1e-5, rtol=0)


def assert_part_trains(model: MetaSegmenter, images: list[torch.Tensor], marker: str,
                       expected_count: int) -> None:
    """With the gates at 0.3, a loss on the second frame gives a non-zero gradient to each
    of the `expected_count` parameters whose name contains `marker`."""
    set_memory_gates(model, 0.3)
    memory = model(images[0], model.initial_memory(1)).memory
    model(images[1], memory).mask_logits.square().mean().backward()
    names = [n for n, _ in model.named_parameters() if marker in n]
    assert len(names) == expected_count
    for name, parameter in model.named_parameters():
        if name in names:
            assert parameter.grad is not None and parameter.grad.abs().max() > 0, name


def assert_loads_without_part(without: MetaSegConfig, with_part: MetaSegConfig, marker: str,
                              summary_says: str, folder: Path) -> None:
    """A checkpoint of a model without the part initialises one with it: every saved tensor
    is taken as is, the summary says `summary_says`, and the part's tensors named by
    `marker` stay zero."""
    saved = MetaSegmenter(without)
    save_checkpoint(saved, folder / "without")
    model = MetaSegmenter(with_part)
    summary = init_from_checkpoint(model, folder / "without")
    assert summary_says in summary
    own = model.state_dict()
    for name, value in saved.state_dict().items():
        assert torch.equal(own[name], value), name
    for name, value in own.items():
        if marker in name:
            assert torch.count_nonzero(value) == 0, name


def assert_onnx_runs_as_pytorch(model: MetaSegmenter, images: list[torch.Tensor],
                                folder: Path) -> None:
    """The model exported to ONNX and run in ONNX Runtime gives PyTorch's mask logits on
    every frame of `images`, the memory carried by each."""
    from metaseg_ros.inference.export import write_onnx_artifact
    from metaseg_ros.inference.runners.onnxruntime import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(write_onnx_artifact(model, folder / "step.onnx"))
    memory, expected = runner.initial_memory(), run_clip(model, images)
    for image, reference in zip(images, expected, strict=True):
        output = runner(image, memory)
        memory = output.memory
        torch.testing.assert_close(output.mask_logits, reference.mask_logits, atol=1e-3,
                                   rtol=1e-3)
