"""metaseg-convert end to end: HF directories (safetensors and pytorch_model.bin), class
subsets, the written checkpoint reproducing the reference, and error reporting."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from metaseg_ros.classes import COCO_CLASSES, DEFAULT_CLASSES
from metaseg_ros.cli.convert import main, parse_class_list
from metaseg_ros.model.checkpoint import load_checkpoint

transformers = pytest.importorskip("transformers")

SIZE = 128


@pytest.fixture(scope="module")
def hf_coco_model():
    torch.manual_seed(0)
    backbone = transformers.SwinConfig(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4],
                                       window_size=4,
                                       out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone, use_pretrained_backbone=False, feature_size=64,
        mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128, encoder_layers=1,
        decoder_layers=4, num_attention_heads=4, dim_feedforward=128, num_queries=8,
        id2label=dict(enumerate(COCO_CLASSES)))
    model = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.05)
    return model


def _reference_logits(model, checkpoint):
    images = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 255
    pixels = (images - checkpoint.pixel_mean) / checkpoint.pixel_std
    with torch.no_grad():
        ref = model(pixel_values=pixels)
        ours = checkpoint(images, checkpoint.initial_memory(1))
    return ref, ours


@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "bin"])
def test_hf_directory_with_default_class_subset(tmp_path, hf_coco_model, capsys,
                                                safe_serialization):
    hf_coco_model.save_pretrained(tmp_path / "hf")
    if not safe_serialization:
        # Older hub checkpoints ship torch.save'd state dicts (read with weights_only=True).
        weights = tmp_path / "hf" / "model.safetensors"
        torch.save(dict(load_file(str(weights))), tmp_path / "hf" / "pytorch_model.bin")
        weights.unlink()
    status = main([str(tmp_path / "hf"), str(tmp_path / "out" / "coco-subset"),
                   "--image-size", str(SIZE), str(SIZE), "--keep-classes", "default"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "classes (20): person, bicycle" in printed and "UNUSED" not in printed
    checkpoint = load_checkpoint(tmp_path / "out" / "coco-subset")
    assert checkpoint.class_names == DEFAULT_CLASSES
    document = json.loads((tmp_path / "out" / "coco-subset.json").read_text())
    assert document["extra"]["format"] == "hf"
    ref, ours = _reference_logits(hf_coco_model, checkpoint)
    rows = [COCO_CLASSES.index(name) for name in DEFAULT_CLASSES] + [80]
    torch.testing.assert_close(ours.class_logits, ref.class_queries_logits[..., rows],
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.mask_logits, ref.masks_queries_logits, atol=1e-4, rtol=1e-4)


def test_full_coco_checkpoint_keeps_80_classes(tmp_path, hf_coco_model):
    hf_coco_model.save_pretrained(tmp_path / "hf")
    assert main([str(tmp_path / "hf"), str(tmp_path / "coco"), "--image-size", str(SIZE),
                 str(SIZE), "--memory-frames", "6"]) == 0
    checkpoint = load_checkpoint(tmp_path / "coco.safetensors")
    assert checkpoint.class_names == COCO_CLASSES
    assert checkpoint.config.memory_frames == 6
    ref, ours = _reference_logits(hf_coco_model, checkpoint)
    torch.testing.assert_close(ours.class_logits, ref.class_queries_logits, atol=1e-4,
                               rtol=1e-4)


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main([str(tmp_path / "absent"), str(tmp_path / "out")]) == 2
    assert "error" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert main([str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "not a Mask2Former config" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()


def test_class_list_arguments(tmp_path):
    assert parse_class_list("coco") == COCO_CLASSES
    assert parse_class_list("default") == DEFAULT_CLASSES
    assert parse_class_list("person, car") == ("person", "car")
    listing = tmp_path / "names.txt"
    listing.write_text("person\n\ntraffic light\n")
    assert parse_class_list(str(listing)) == ("person", "traffic light")
