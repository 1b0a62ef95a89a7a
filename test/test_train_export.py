"""Half-precision copies of checkpoints load with the normal loader and behave the same."""

from __future__ import annotations

from pathlib import Path

import torch

from metaseg_ros.model.checkpoint import load_checkpoint, save_checkpoint
from metaseg_ros.model.config import get_config
from metaseg_ros.model.metasegmenter import MetaSegmenter
from metaseg_ros.train.export import save_half_precision_copy


def test_float16_copy_is_half_the_size_and_gives_the_same_masks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=8,
                                     num_decoder_layers=2)).eval()
    save_checkpoint(model, tmp_path / "full")
    weights, _ = save_half_precision_copy(tmp_path / "full", tmp_path / "half")
    full_size = (tmp_path / "full.safetensors").stat().st_size
    assert weights.stat().st_size < 0.55 * full_size
    compact = load_checkpoint(tmp_path / "half")
    assert compact.transformer_decoder.query_feat.dtype == torch.float32
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected = model(images, model.initial_memory(1))
        got = compact(images, compact.initial_memory(1))
    probs, probs_half = expected.class_logits.softmax(-1), got.class_logits.softmax(-1)
    assert (probs - probs_half).abs().max() < 2e-2
    agree = ((expected.mask_logits > 0) == (got.mask_logits > 0)).float().mean()
    assert agree > 0.99
