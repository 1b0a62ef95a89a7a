"""scripts/content_gates.py reads the gates a checkpoint has: the mask-feature carry's
weight per cell (here forced open, so +1 on every later frame), and a checkpoint without
any gate is a usage error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.checkpoint import save_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "content_gates.py"


def run(checkpoint: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint", str(checkpoint), "--videos", "1",
         "--frames", "10", "--threads", "1"], capture_output=True, text=True, timeout=600,
        check=False)


def tiny(carry: bool) -> MetaSegmenter:
    torch.manual_seed(0)
    return MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=10,
                                    num_decoder_layers=2,
                                    memory={"pool_stride": 32, "past_mask_features": carry}))


def test_the_carry_weight_is_read_per_kind(tmp_path: Path) -> None:
    model = tiny(True)
    with torch.no_grad():
        model.mask_memory.gate[-1].bias.fill_(20.0)  # every pixel takes the past
    save_checkpoint(model, tmp_path / "carry")
    result = run(tmp_path / "carry")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| kind |"))
    assert header.endswith("| carry weight, changed cells | carry weight, other cells |")
    clean = next(line for line in lines if line.startswith("| clean |"))
    cells = [c.strip() for c in clean.strip("|").split("|")]
    assert cells == ["clean", "0%", "-", "+1.000"]  # no cell changed; the weight is 1
    dropout = next(line for line in lines if line.startswith("| dropout |"))
    assert dropout.split("|")[3].strip() == "+1.000"  # lost rows changed cells


def test_a_checkpoint_without_gates_is_a_usage_error(tmp_path: Path) -> None:
    save_checkpoint(tiny(False), tmp_path / "plain")
    result = run(tmp_path / "plain")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "past_mask_features" in result.stderr.splitlines()[-1]
