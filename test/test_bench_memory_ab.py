"""scripts/bench_memory_ab.py with --blocks: each block is the A/B of its own videos (the
same rows as a run that starts at that block), and the mean over the blocks is printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.checkpoint import save_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_memory_ab.py"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=10,
                                     num_decoder_layers=2))
    path = tmp_path_factory.mktemp("ab") / "model"
    save_checkpoint(model, path)
    return path


def bench(checkpoint: Path, *argv: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoints", str(checkpoint), "--splits", "degraded",
         "--videos", "1", "--frames", "4", "--threads", "1", *argv],
        capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith(f"| {checkpoint}")]


def test_each_block_scores_its_own_videos_and_the_mean_is_printed(checkpoint: Path) -> None:
    rows = bench(checkpoint, "--blocks", "2")
    second_alone = bench(checkpoint, "--degraded-first-video", "200001")
    assert [r for r in rows if "| 200001..200001 |" in r] == second_alone
    first = [r for r in rows if "| 200000..200000 |" in r]
    assert len(first) == 3  # on, off, on minus off
    # The two blocks' videos differ, so their scores do (else the first check proves little).
    assert first[0].split("|")[5:] != second_alone[0].split("|")[5:]
    means = [r for r in rows if "mean of 2 blocks" in r]
    assert len(means) == 1 and means[0].count("|") == 10


def test_zero_blocks_is_a_usage_error(checkpoint: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--checkpoints", str(checkpoint),
                             "--blocks", "0"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2 and "--blocks" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
