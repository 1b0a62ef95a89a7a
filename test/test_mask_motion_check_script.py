"""scripts/mask_motion_check.py runs a checkpoint without the carry with the carry's motion
on and reports, per kind of frame, how the last frame's features stand in for the current
one's; bad arguments are a usage error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.checkpoint import save_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mask_motion_check.py"


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--threads", "1", *arguments],
                          capture_output=True, text=True, timeout=600, check=False)


def test_each_frame_after_the_second_is_compared(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=10,
                                     num_decoder_layers=2, memory={"pool_stride": 32}))
    save_checkpoint(model, tmp_path / "plain")
    result = run("--checkpoint", str(tmp_path / "plain"), "--videos", "1", "--frames", "6",
                 "--score", "0")
    assert result.returncode == 0, result.stderr
    clean = next(line for line in result.stdout.splitlines() if line.startswith("| clean |"))
    cells = [c.strip() for c in clean.strip("|").split("|")]
    assert cells[1] == "4"  # frames 2..5 of one video
    assert cells[2] == "1.000 (the reference)"
    assert all(0.0 <= float(value) <= 1.0 for value in cells[3:5])
    assert cells[5].endswith("%")
    # the oracle's best step includes staying put: never below the features as kept
    assert float(cells[3]) <= float(cells[6]) <= 1.0


def test_bad_arguments_are_a_usage_error() -> None:
    result = run("--videos", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:")
