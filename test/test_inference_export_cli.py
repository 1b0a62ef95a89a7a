"""metaseg-export: artifacts for a checkpoint at a chosen input size, verified against eager."""

from __future__ import annotations

import pytest
import torch

from metaseg_ros.cli.export import main
from metaseg_ros.inference.builder import runner_from_artifact
from metaseg_ros.inference.runner import BackendUnavailableError
from metaseg_ros.inference.runners.tensorrt import import_torch_tensorrt
from metaseg_ros.model import MetaSegmenter, get_config, save_checkpoint

pytest.importorskip("onnxruntime")


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
    for path, backend in ((onnx_path, "onnxruntime"), (program_path, "exported")):
        runner = runner_from_artifact(path, backend, "cpu")
        assert runner.config.image_size == (64, 128)
        output = runner(torch.zeros(1, 3, 64, 128), runner.initial_memory())
        assert output.mask_logits.shape == (1, 20, 16, 32)


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
