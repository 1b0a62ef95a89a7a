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


def test_release_writes_weights_metrics_regression_record_and_card(tmp_path: Path) -> None:
    import json

    from metaseg_ros.train.release import main as release

    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=8,
                                     num_decoder_layers=1))
    save_checkpoint(model, tmp_path / "run" / "model", extra={"steps": 5})
    config = tmp_path / "train.yaml"
    config.write_text("data: {frames_per_video: 3, synthetic_size: [64, 64], seed: 2,"
                      " augment: {output_size: [64, 64]}}\n")
    out = tmp_path / "weights"
    assert release(["--checkpoint", str(tmp_path / "run" / "model"), "--config", str(config),
                    "--output-dir", str(out), "--eval-videos", "2",
                    "--regression-videos", "1"]) == 0
    assert (out / "metaseg_tiny.safetensors").exists() and (out / "metaseg_tiny.json").exists()
    metrics = json.loads((out / "metaseg_tiny.metrics.json").read_text())
    regression = json.loads((out / "metaseg_tiny.regression.json").read_text())
    assert metrics["metrics"]["num_videos"] == 2 and regression["metrics"]["num_videos"] == 1
    assert regression["split"]["max_videos"] == 1 and metrics["split"]["synthetic_seed"] == 2
    card = (out / "metaseg_tiny.md").read_text()
    assert f"| DAVIS J&F | {metrics['metrics']['j_and_f']:.4g} |" in card
    assert "(5 done)" in card and "metaseg-train --config" in card
    # The reproduce command names the whole split (frames and size included).
    assert ("--synthetic-seed 2 --synthetic-frames 3 --synthetic-size 64 64`"
            in " ".join(card.split()))
    assert load_checkpoint(out / "metaseg_tiny").config.image_size == (64, 64)
