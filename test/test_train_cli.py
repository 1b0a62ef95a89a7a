"""`metaseg-train` and `make_synthetic` command lines."""

from __future__ import annotations

from pathlib import Path

import torch

from metaseg_ros.cli.make_synthetic import main as make_synthetic
from metaseg_ros.cli.train import main as train_main
from metaseg_ros.data.ytvis import YouTubeVISSource
from metaseg_ros.model.checkpoint import load_checkpoint

SMALL = ["--set", "model_overrides={num_queries: 8, num_decoder_layers: 1}",
         "--set", "init=none", "--set", "data.num_videos=3", "--set", "data.frames_per_video=4",
         "--set", "data.synthetic_size=[64,64]", "--set", "data.augment.output_size=[64,64]",
         "--set", "data.num_workers=0", "--set", "data.clip_frames=2",
         "--set", "loss.num_points=128", "--set", "progress_bar=false",
         "--set", "checkpoint_every=1"]


def test_train_then_resume_from_the_newest_checkpoint(tmp_path: Path, capsys) -> None:
    torch.set_num_threads(2)
    out = ["--set", f"output_dir={tmp_path}"]
    assert train_main([*SMALL, *out, "--set", "optim.max_steps=2"]) == 0
    assert (tmp_path / "checkpoints" / "step_00000002" / "training_state.pt").exists()
    assert train_main([*SMALL, *out, "--set", "optim.max_steps=3", "--resume", "auto"]) == 0
    printed = capsys.readouterr().out
    assert "at step 2" in printed
    model = load_checkpoint(tmp_path / "final" / "model")
    assert model.config.image_size == (64, 64) and model.config.num_queries == 8


def test_make_synthetic_writes_a_readable_youtube_vis_split(tmp_path: Path) -> None:
    assert make_synthetic(["--output", str(tmp_path), "--videos", "2", "--frames", "3",
                           "--size", "48", "64"]) == 0
    source = YouTubeVISSource(tmp_path / "instances.json", tmp_path / "JPEGImages",
                              load_default_classes())
    assert len(source) == 2 and source.load_clip(1, [0, 2]).frames.shape == (2, 48, 64, 3)


def load_default_classes() -> tuple[str, ...]:
    from metaseg_ros.classes import DEFAULT_CLASSES

    return DEFAULT_CLASSES
