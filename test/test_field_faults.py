"""Field robustness below the node: stream changes, diagnostics levels, a backend failing
while running, unreadable checkpoints and corrupted cached exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from color_segmenter import draw_squares

from metaseg_ros.inference.builder import create_pipeline, create_runner
from metaseg_ros.inference.pipeline import PipelineInfo
from metaseg_ros.inference.runner import RunnerOptions
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.runners.fallback import FallbackRunner
from metaseg_ros.inference.settings import ModelSettings, PipelineSettings
from metaseg_ros.inference.stream import ResetCause, StreamGuard, StreamSettings
from metaseg_ros.model import MetaSegmenter, get_config, save_checkpoint
from metaseg_ros.model.checkpoint import CheckpointError, load_checkpoint
from metaseg_ros.ros.diagnostics import ERROR, OK, RECENT_S, WARN, NodeStats, build_report

SIZE = (64, 64)


def small_model() -> MetaSegmenter:
    torch.manual_seed(0)
    return MetaSegmenter(get_config("tiny", image_size=SIZE, num_queries=6,
                                    num_decoder_layers=1, pixel_decoder={"encoder_layers": 1}))


# -- stream changes ------------------------------------------------------------------------

def test_stream_guard_names_each_change_and_accepts_a_continuing_stream() -> None:
    guard = StreamGuard(StreamSettings(max_gap=2.0))
    second = 1_000_000_000
    assert guard.check(10 * second, "cam", (48, 64)) is None  # first frame
    assert guard.check(10 * second + 100_000_000, "cam", (48, 64)) is None
    assert guard.check(10 * second + 100_000_000, "cam", (48, 64)) is None  # same stamp again
    assert guard.check(9 * second, "cam", (48, 64)) is ResetCause.STAMP_BACKWARDS
    assert guard.check(12 * second, "cam", (48, 64)) is ResetCause.TIME_JUMP  # 3 s > 2 s
    assert guard.check(13 * second, "cam", (48, 64)) is None  # 1 s: continues
    assert guard.check(13 * second + 1, "other_cam", (48, 64)) is ResetCause.FRAME_ID
    assert guard.check(13 * second + 2, "other_cam", (64, 48)) is ResetCause.IMAGE_SIZE
    guard.forget()
    assert guard.check(1, "third", (8, 8)) is None  # after a reset anything starts a stream
    no_gap = StreamGuard(StreamSettings(max_gap=0.0))
    no_gap.check(0, "cam", (8, 8))
    assert no_gap.check(3600 * second, "cam", (8, 8)) is None  # forward jumps allowed


def test_stream_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="stale_after"):
        StreamSettings(stale_after=0.0)
    with pytest.raises(TypeError, match="max_gap"):
        StreamSettings(max_gap="1")


def test_pipeline_resets_are_counted_by_cause_and_track_ids_never_reused() -> None:
    settings = PipelineSettings(ModelSettings(segmenter="color_segmenter:create"))
    pipeline = create_pipeline(settings, log=lambda _: None)
    frame = draw_squares(48, 64, {0: (10, 10, 10)})
    ids = set()
    for _ in range(3):
        ids |= {i.track_id for i in pipeline.step(frame).instances}
    pipeline.reset(ResetCause.STAMP_BACKWARDS.value)
    after = set()
    for _ in range(3):
        after |= {i.track_id for i in pipeline.step(frame).instances}
    assert ids and after and max(ids) < min(after)
    assert pipeline.resets == {"stamp_backwards": 1}


# -- diagnostics levels -----------------------------------------------------------------------

def _report(stats: NodeStats, info: PipelineInfo | None = None, last_input: float | None = 99.0,
            now: float = 100.0, active_since: float = 0.0):
    return build_report(stats, info or PipelineInfo("m", backend="eager"), {"time_jump": 2},
                        stale_after=2.0, last_input=last_input, active_since=active_since,
                        input_topic="/cam", now=now)


def _steady(stats: NodeStats, rate_in: float, rate_out: float, latency_ms: float,
            now: float = 100.0) -> None:
    for k in range(50):
        stats.on_received(now - 5 + k / rate_in)
    for k in range(20):
        t = now - 5 + k / rate_out
        stats.on_processed(t - latency_ms / 1e3, t, {"segment": 1.0}, 2, 3, 4)


def test_diagnostics_ok_with_counters_and_resets() -> None:
    stats = NodeStats()
    _steady(stats, 10.0, 10.0, 20.0)
    report = _report(stats)
    assert (report.level, report.message) == (OK, "ok")
    values = report.values
    assert values["frames_received"] == "50" and values["frames_processed"] == "20"
    assert values["resets_time_jump"] == "2" and values["backend"] == "eager"
    assert values["memory_frames_filled"] == "4" and values["live_tracks"] == "3"
    assert float(values["input_rate_hz"]) == pytest.approx(10.0)


@pytest.mark.parametrize("case, level, text", [
    ("stale", ERROR, "no input for 4.0 s on /cam"),
    ("failing", ERROR, "frames failed to process"),
    ("never", WARN, "no input yet on /cam"),
    ("random", WARN, "random weights"),
    ("fallback", WARN, "running on eager/cpu after: backend onnxruntime failed"),
    ("lost", WARN, "lost in transport"),
    ("slow", WARN, "processing 4.0 Hz of 10.0 Hz input"),
    ("late", WARN, "exceeds the frame period"),
    ("dropped", WARN, "dropped in the last"),
])
def test_diagnostics_levels_and_reasons(case: str, level: int, text: str) -> None:
    stats, info, last_input = NodeStats(), PipelineInfo("m", backend="eager"), 99.0
    if case == "slow":
        _steady(stats, 10.0, 4.0, 50.0)
    elif case == "late":
        _steady(stats, 10.0, 10.0, 250.0)
    else:
        _steady(stats, 10.0, 10.0, 20.0)
    if case == "stale":
        last_input = 96.0
    elif case == "failing":
        for _ in range(5):
            stats.on_dropped("failed", 99.0)
    elif case == "never":
        stats, last_input = NodeStats(), None
    elif case == "random":
        info = PipelineInfo("m", random_weights=True)
    elif case == "fallback":
        info = PipelineInfo("m", backend="eager/cpu",
                            fallback_reason="backend onnxruntime failed: RuntimeError: x")
    elif case == "lost":
        stats.on_lost(30, 99.0)
    elif case == "dropped":
        stats.on_dropped("invalid", 99.0)
    report = _report(stats, info, last_input)
    assert report.level == level and text in report.message, report


def test_old_drops_and_losses_stop_warning() -> None:
    stats = NodeStats()
    _steady(stats, 10.0, 10.0, 20.0)
    stats.on_lost(30, 100.0 - RECENT_S - 1)
    stats.on_dropped("invalid", 100.0 - RECENT_S - 1)
    report = _report(stats)
    assert report.level == OK and report.values["frames_lost_in_transport"] == "30"


# -- a backend that fails while running ------------------------------------------------------

class _Failing:
    """A runner that works for `good` calls, then raises (as a CUDA OOM would)."""

    def __init__(self, model: MetaSegmenter, good: int) -> None:
        self._eager = EagerRunner(model)
        self.config, self.device, self.good = model.config, torch.device("cpu"), good

    def initial_memory(self):
        return self._eager.initial_memory()

    def __call__(self, images, memory):
        if self.good <= 0:
            raise RuntimeError("CUDA out of memory (injected)")
        self.good -= 1
        return self._eager(images, memory)


def test_fallback_runner_reruns_the_frame_on_the_next_runner_from_an_empty_memory() -> None:
    model = small_model()
    switches, logs = [], []
    runner = FallbackRunner(_Failing(model, good=2), "onnxruntime",
                            [("broken", lambda: (_ for _ in ()).throw(OSError("no GPU"))),
                             ("eager/cpu", lambda: EagerRunner(model))],
                            log=logs.append, on_switch=lambda *a: switches.append(a))
    images = torch.rand(1, 3, *SIZE) * 255
    memory = runner.initial_memory()
    for _ in range(2):
        memory = runner(images, memory).memory
    assert memory.valid.sum() == 2
    out = runner(images, memory)  # fails on the primary, runs on eager/cpu from empty
    assert out.memory.valid.sum() == 1 and isinstance(runner.active, EagerRunner)
    assert runner.name == "eager/cpu"
    assert [name for name, _ in switches] == ["eager/cpu"]
    assert "CUDA out of memory (injected)" in switches[0][1]
    assert any("fallback broken unavailable" in line for line in logs)
    expected = EagerRunner(model)(images, EagerRunner(model).initial_memory())
    torch.testing.assert_close(out.class_logits, expected.class_logits)


def test_fallback_runner_raises_when_nothing_is_left() -> None:
    runner = FallbackRunner(_Failing(small_model(), good=0), "x", [], log=lambda _: None)
    with pytest.raises(RuntimeError, match="injected"):
        runner(torch.zeros(1, 3, *SIZE), runner.initial_memory())


def test_pipeline_keeps_publishing_through_a_backend_failure(tmp_path: Path) -> None:
    """backend onnxruntime with fallback eager: the ONNX Runtime session starts failing; the
    frame is re-run on eager PyTorch, the pipeline says so and counts the memory restart."""
    save_checkpoint(small_model(), tmp_path / "small")
    settings = PipelineSettings(ModelSettings(checkpoint=str(tmp_path / "small"),
                                              backend="onnxruntime", num_threads=2))
    pipeline = create_pipeline(settings, log=lambda _: None)
    runner = pipeline.segmenter.runner
    assert isinstance(runner, FallbackRunner) and pipeline.info.backend == "onnxruntime"
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    assert pipeline.step(frame).memory_fill == 0
    assert pipeline.step(frame).memory_fill == 1

    class _BrokenSession:
        def run(self, *_args, **_kwargs):
            raise RuntimeError("ONNX Runtime error (injected)")

    runner.active.session = _BrokenSession()
    result = pipeline.step(frame)
    assert result.memory_fill == 0 and (result.height, result.width) == (48, 64)
    assert pipeline.info.backend == "eager/cpu"
    assert "ONNX Runtime error (injected)" in pipeline.info.fallback_reason
    assert pipeline.resets == {"backend_fallback": 1}
    assert pipeline.step(frame).memory_fill == 1


# -- files that are not what they claim --------------------------------------------------------

@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    save_checkpoint(small_model(), tmp_path / "model")
    return tmp_path / "model"


def test_unreadable_checkpoints_name_the_file_and_the_problem(checkpoint: Path) -> None:
    weights, config = checkpoint.with_suffix(".safetensors"), checkpoint.with_suffix(".json")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable "
                                              r"safetensors file \(truncated"):
        load_checkpoint(checkpoint)
    weights.write_bytes(data)
    document = json.loads(config.read_text())
    document["config"]["num_queries"] = 9  # another architecture than the weights
    config.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not fit its config"):
        load_checkpoint(checkpoint)
    config.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.json is not a readable JSON"):
        load_checkpoint(checkpoint)
    config.unlink()
    with pytest.raises(CheckpointError, match=r"model\.json not found"):
        load_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="not found"):
        create_pipeline(PipelineSettings(ModelSettings(checkpoint=str(checkpoint))),
                        log=lambda _: None)


def test_a_corrupted_cached_export_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    model = small_model()
    options = RunnerOptions(cache_dir=tmp_path / "cache")
    logs: list[str] = []
    first = create_runner(model, "onnxruntime", "cpu", "small", logs.append, options)
    images = torch.rand(1, 3, *SIZE) * 255
    expected = first(images, first.initial_memory()).class_logits.clone()
    (cached,) = (tmp_path / "cache").glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])  # cut by a power loss
    again = create_runner(model, "onnxruntime", "cpu", "small", logs.append, options)
    assert any("cannot be loaded" in line and "exporting it again" in line for line in logs)
    torch.testing.assert_close(again(images, again.initial_memory()).class_logits, expected)
    assert cached.stat().st_size > 1000
    shutil.rmtree(tmp_path / "cache")


class _Payload:
    """Unpickling this runs a shell command: what a malicious weights file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_refused_wherever_torch_files_are_read(tmp_path: Path) -> None:
    """HF pytorch_model.bin, an ImageNet backbone file for training and a training state all
    go through torch.load(weights_only=True): the payload never runs."""
    import pickle

    from metaseg_ros.model.convert.hf import load_hf_weights
    from metaseg_ros.train.initialization import initialise_weights

    marker = tmp_path / "payload_ran"
    malicious = pickle.dumps({"weight": _Payload(marker)})
    (tmp_path / "pytorch_model.bin").write_bytes(malicious)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_hf_weights(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        initialise_weights(small_model(), f"imagenet:{tmp_path / 'pytorch_model.bin'}")
    from test_train_loop import small_config

    from metaseg_ros.train.trainer import STATE_FILE, Trainer

    trainer = Trainer(small_config(tmp_path / "run", "optim.max_steps=1"))
    checkpoint = trainer.save()
    (checkpoint / STATE_FILE).write_bytes(malicious)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        trainer.resume(checkpoint)
    assert not marker.exists()
