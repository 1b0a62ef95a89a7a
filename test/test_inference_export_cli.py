"""metaseg-export: artifacts for a checkpoint at a chosen input size, verified against eager."""

from __future__ import annotations

import pytest
import torch

from metaseg_ros.cli.export import main
from metaseg_ros.inference.builder import runner_from_artifact
from metaseg_ros.inference.runner import BackendUnavailableError
from metaseg_ros.inference.runners.tensorrt import import_torch_tensorrt
from metaseg_ros.model import MetaSegmenter, get_config, save_checkpoint
from metaseg_ros.model.checkpoint import load_checkpoint
from metaseg_ros.model.config import replace_config

pytest.importorskip("onnxruntime")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| (at least 1)."""
    assert got.shape == expected.shape
    return ((got.float() - expected.float()).abs().max()
            / expected.float().abs().max().clamp_min(1.0)).item()


def small_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = MetaSegmenter(get_config("tiny", image_size=(128, 128), num_queries=20,
                                     num_decoder_layers=3, pixel_decoder={"encoder_layers": 1}))
    with torch.no_grad():
        for layer in model.transformer_decoder.layers:
            layer.memory_attn.gate.fill_(0.5)
    weights, _ = save_checkpoint(model, tmp_path / "small")
    return weights


@pytest.mark.slow
def test_export_writes_verified_artifacts_at_the_chosen_size(tmp_path, capsys):
    checkpoint = small_checkpoint(tmp_path)
    status = main([str(checkpoint), "--onnx", "--pt2", "--image-size", "64", "128",
                   "--frames", "3", "--output-dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    printed = captured.out
    assert status == 0, printed + captured.err
    assert "forbidden ops (NonZero, ScatterND, Loop, If, Einsum): none" in printed
    assert printed.count("parity with eager over 3 frames") == 2
    assert "FAILED" not in printed
    onnx_path = tmp_path / "out" / "small-64x128.onnx"
    program_path = tmp_path / "out" / "small-64x128.pt2"
    # The artifacts compute what the checkpoint computes in eager PyTorch at that size, over
    # frames whose memory is read (gates at 0.5), checked here rather than by its printout.
    saved = load_checkpoint(checkpoint)
    eager = MetaSegmenter(replace_config(saved.config, image_size=(64, 128))).eval()
    eager.load_state_dict(saved.state_dict())
    generator = torch.Generator().manual_seed(4)
    frames = [torch.rand(1, 3, 64, 128, generator=generator) * 255 for _ in range(3)]
    with torch.no_grad():
        expected, memory = [], eager.initial_memory(1)
        for frame in frames:
            expected.append(eager(frame, memory))
            memory = expected[-1].memory
        without_memory = eager(frames[-1], eager.initial_memory(1))
    # Non-trivial: the last frame's output depends on the memory far beyond the tolerance.
    assert relative_error(without_memory.class_logits, expected[-1].class_logits) > 1e-2
    for path, backend in ((onnx_path, "onnxruntime"), (program_path, "exported")):
        runner = runner_from_artifact(path, backend, "cpu")
        assert runner.config.image_size == (64, 128)
        memory = runner.initial_memory()
        for index, (frame, reference) in enumerate(zip(frames, expected, strict=True)):
            output = runner(frame, memory)
            memory = output.memory
            assert output.mask_logits.shape == (1, 20, 16, 32)
            for name in ("class_logits", "mask_logits", "query_embeddings"):
                error = relative_error(getattr(output, name), getattr(reference, name))
                assert error <= 1e-4, (backend, index, name, error)
            for got, want in zip(output.memory, reference.memory, strict=True):
                assert relative_error(got, want) <= 1e-4, (backend, index, "memory")


def test_export_needs_a_checkpoint_or_a_config(capsys):
    assert main(["--onnx"]) == 2
    assert "give a checkpoint or --config" in capsys.readouterr().err


def test_tensorrt_export_without_tensorrt_fails_before_exporting(tmp_path, capsys):
    try:
        import_torch_tensorrt("cuda")
        pytest.skip("TensorRT is usable here")
    except BackendUnavailableError:
        pass
    status = main(["--config", "tiny", "--tensorrt", "--output-dir", str(tmp_path / "out")])
    assert status == 2
    err = capsys.readouterr().err
    assert "backend 'tensorrt' is unavailable" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
