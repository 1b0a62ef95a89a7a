"""scripts/memory_gates.py prints each decoder layer's memory gate of a checkpoint and says
whether it has the mask-feature carry; a missing checkpoint is one line, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from metaseg_ros.model import MetaSegmenter, get_config
from metaseg_ros.model.checkpoint import save_checkpoint
from metaseg_ros.train.trainer import set_memory_gates

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "memory_gates.py"


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments],
                          capture_output=True, text=True, timeout=300, check=False)


def small(**memory: object) -> MetaSegmenter:
    torch.manual_seed(0)
    return MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=10,
                                    num_decoder_layers=2, memory={"pool_stride": 32, **memory}))


def test_gates_and_parts_are_printed(tmp_path: Path) -> None:
    plain = small()
    set_memory_gates(plain, 0.25)
    save_checkpoint(plain, tmp_path / "plain")
    save_checkpoint(small(past_mask_features=True), tmp_path / "carry")
    result = run(str(tmp_path / "plain"), str(tmp_path / "carry"))
    assert result.returncode == 0, result.stderr
    plain_line, carry_line = result.stdout.splitlines()
    assert "gates +0.2500 +0.2500;" in plain_line
    assert "largest |tanh(gate)| 0.2449" in plain_line
    assert "carry" not in plain_line
    assert "mask-feature carry" in carry_line


def test_a_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = run(str(tmp_path / "nothing"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"memory_gates: no checkpoint at {tmp_path / 'nothing.safetensors'}"]
