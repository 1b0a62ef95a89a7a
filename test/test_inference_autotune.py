"""backend auto chooses by measurement: the fastest candidate whose outputs agree with eager,
cached per model, machine and library versions (inference/autotune.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from metaseg_ros.inference.autotune import BackendDecision, choose_backend
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.model import MetaSegmenter, NetworkOutput, get_config

SIZE = (64, 64)


def small_model(seed: int = 0) -> MetaSegmenter:
    torch.manual_seed(seed)
    return MetaSegmenter(get_config("tiny", image_size=SIZE, num_queries=6,
                                    num_decoder_layers=1, pixel_decoder={"encoder_layers": 1}))


class Slow:
    """Eager PyTorch plus a fixed delay per step: a backend that is correct but slow."""

    def __init__(self, model: MetaSegmenter, delay_s: float) -> None:
        self.eager, self.delay_s = EagerRunner(model), delay_s
        self.config, self.device = model.config, torch.device("cpu")

    def initial_memory(self):
        return self.eager.initial_memory()

    def __call__(self, images, memory) -> NetworkOutput:
        time.sleep(self.delay_s)
        return self.eager(images, memory)


class Wrong(Slow):
    """Fast but wrong: its class logits are off by 1."""

    def __call__(self, images, memory) -> NetworkOutput:
        out = self.eager(images, memory)
        return out._replace(class_logits=out.class_logits + 1.0)


def test_the_fastest_agreeing_candidate_wins_and_the_decision_is_cached(tmp_path: Path):
    model = small_model()
    built: list[str] = []

    def make(name: str):
        built.append(name)
        return {"eager": lambda: Slow(model, 0.5), "fast": lambda: Slow(model, 0.0),
                "wrong": lambda: Wrong(model, 0.0),
                "broken": lambda: (_ for _ in ()).throw(OSError("no such library"))}[name]()

    logs: list[str] = []
    candidates = ["eager", "fast", "wrong", "broken"]
    decision, runner = choose_backend(model, "cpu", "float32", candidates, make,
                                      cache_dir=tmp_path, log=logs.append, frames=4)
    assert decision.backend == "fast" and isinstance(runner, Slow)
    assert decision.step_ms["eager"] > 500 and decision.step_ms["fast"] < decision.step_ms["eager"]
    assert "outputs differ from eager" in decision.rejected["wrong"]
    assert decision.rejected["broken"] == "OSError: no such library"
    assert "backend auto chose fast" in logs[-1] and "measured now" in logs[-1]
    (cached,) = tmp_path.glob("auto-backend-*.json")
    assert BackendDecision(**json.loads(cached.read_text())) == decision
    # The same model on the same machine: no measurement, nothing built.
    built.clear()
    again, runner = choose_backend(model, "cpu", "float32", candidates, make,
                                   cache_dir=tmp_path, log=logs.append)
    assert (again, runner, built) == (decision, None, [])
    assert "cached in" in logs[-1]
    # Other weights (or candidates, precision, versions, hardware): measured again.
    _, runner = choose_backend(small_model(seed=1), "cpu", "float32", candidates, make,
                                   cache_dir=tmp_path, log=logs.append, frames=3)
    assert runner is not None and built and len(list(tmp_path.glob("*.json"))) == 2


def test_no_runnable_candidate_is_a_clear_error(tmp_path: Path):
    def make(name: str):
        raise RuntimeError(f"{name} is missing")

    with pytest.raises(RuntimeError, match="no candidate could run: eager: RuntimeError"):
        choose_backend(small_model(), "cpu", "float32", ["eager"], make, cache_dir=tmp_path,
                       log=lambda _: None)
