"""metaseg-convert with a Hugging Face model id, offline: a hub cache laid out as
huggingface_hub lays it out (models--owner--name/snapshots/<commit>, refs/main), filled from
a random transformers Mask2Former's save_pretrained, is found and converted; a model absent
from the cache gives one line saying what to download and where to put it (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metaseg_ros.classes import COCO_CLASSES
from metaseg_ros.model.checkpoint import load_checkpoint

transformers = pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_hub_cache(cache: Path, model_id: str) -> None:
    torch.manual_seed(0)
    backbone = transformers.SwinConfig(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4],
                                       window_size=4,
                                       out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone, use_pretrained_backbone=False, feature_size=64,
        mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128, encoder_layers=1,
        decoder_layers=3, num_attention_heads=4, dim_feedforward=128, num_queries=8,
        id2label=dict(enumerate(COCO_CLASSES)))
    model = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    repo = cache / f"models--{model_id.replace('/', '--')}"
    model.save_pretrained(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)


def run_convert(cache: Path, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "metaseg_ros.cli.convert", *argv],
                          capture_output=True, text=True, env=env, timeout=300)


def test_model_id_from_an_offline_hub_cache(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    fill_hub_cache(cache, "example-org/mask2former-tiny-random")
    done = run_convert(cache, "example-org/mask2former-tiny-random", str(tmp_path / "out"),
                       "--image-size", "128", "128", "--keep-classes", "default")
    assert done.returncode == 0, done.stderr
    assert f"snapshots/{COMMIT}" in done.stdout
    model = load_checkpoint(tmp_path / "out")
    assert model.class_names[:3] == ("person", "bicycle", "car")

    missing = run_convert(cache, "facebook/mask2former-swin-tiny-coco-instance",
                          str(tmp_path / "other"))
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1, missing.stderr
    assert lines[0].startswith("metaseg-convert: error: cannot download "
                               "facebook/mask2former-swin-tiny-coco-instance")
    assert "hf download facebook/mask2former-swin-tiny-coco-instance" in lines[0]
    assert str(cache) in lines[0]
    assert not (tmp_path / "other.safetensors").exists()
