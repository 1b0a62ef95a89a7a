"""A short soak through the node over DDS (scripts/soak.py; the 10,000-frame run and its
figures are in docs/benchmarks.md): every frame sent is answered and accounted for by the
node's own counters, memory is sampled, and the node exits cleanly on SIGINT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
SOAK = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"


def test_short_soak_accounts_for_every_frame(tmp_path: Path) -> None:
    output = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, str(SOAK), "--frames", "40", "--warmup", "10",
                             "--window", "10", "--sample", "10", "--backend", "eager",
                             "--json", str(output)], capture_output=True, text=True, timeout=600)
    assert output.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    soak = json.loads(output.read_text())
    assert soak["checks"]["every_frame_accounted_for"], soak["node_counters"]
    assert soak["checks"]["clean_exit"] and soak["unanswered"] == 0
    counters = soak["node_counters"]
    assert counters["frames_received"] == counters["frames_processed"] == 40
    assert [index for index, _ in soak["rss_samples"]] == [0, 10, 20, 30, 39]
    assert all(kib > 10_000 for _, kib in soak["rss_samples"])  # a real process's RSS
    assert soak["latency_ms_median_first_window"] > 0
