"""Several cameras on one model (metaseg_ros/inference/cameras.py), with the shipped tiny
weights on eager PyTorch: one batch gives each camera what it gets alone, memories and
tracks stay per camera, ids are never shared, a backend that takes one frame at a time runs
them in turn, and a fallback in the middle of a batch restarts every camera's memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
from metaseg_ros.inference.builder import shipped_checkpoint
from metaseg_ros.inference.cameras import create_camera_pipelines
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.runners.fallback import FallbackRunner
from metaseg_ros.inference.settings import ModelSettings, PipelineSettings, PostprocessSettings
from metaseg_ros.tracking import TrackerConfig

CAMERAS = ("front", "left", "down")
SETTINGS = PipelineSettings(
    ModelSettings(backend="eager", num_threads=1, fallback_backend="none"),
    PostprocessSettings(score_threshold=0.3),
    TrackerConfig(confirm_hits=1, birth_score=0.3, min_score=0.3))


@pytest.fixture(scope="module", autouse=True)
def weights():
    if shipped_checkpoint("tiny") is None:
        pytest.skip("no shipped tiny weights")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def videos(frames: int) -> list[dict[str, np.ndarray]]:
    """Per step, one synthetic frame per camera (a different video each, sizes differ)."""
    sizes = {"front": (96, 128), "left": (120, 90), "down": (80, 80)}
    generators = {camera: SyntheticVideoGenerator(
        SyntheticConfig(image_size=sizes[camera], num_frames=frames), seed=5 + k)
        for k, camera in enumerate(CAMERAS)}
    scripts = {camera: generators[camera].script(k + 1) for k, camera in enumerate(CAMERAS)}
    return [{camera: generators[camera].render(scripts[camera], t)[0] for camera in CAMERAS}
            for t in range(frames)]


def same_instances(a, b) -> None:
    """The same tracks and classes, scores within 1e-3, masks with IoU >= 0.99: a batch
    may round differently from single frames, never more."""
    assert [(i.track_id, i.class_id) for i in a.instances] == \
        [(i.track_id, i.class_id) for i in b.instances]
    for x, y in zip(a.instances, b.instances, strict=True):
        assert abs(x.score - y.score) < 1e-3
        assert (x.mask & y.mask).sum() >= 0.99 * (x.mask | y.mask).sum()


def test_a_batch_of_cameras_equals_each_camera_alone() -> None:
    batched = create_camera_pipelines(SETTINGS, CAMERAS, log=lambda _: None)
    alone = create_camera_pipelines(SETTINGS, CAMERAS, log=lambda _: None, batching=False)
    assert batched["front"].segmenter.runner is batched["down"].segmenter.runner  # one model
    seen: dict[int, str] = {}
    instances = 0
    for frames in videos(3):
        together = batched.step(frames)
        assert batched.last_batch_size == len(CAMERAS)
        one_by_one = alone.step(frames)
        assert alone.last_batch_size == 1
        for camera in CAMERAS:
            same_instances(together[camera], one_by_one[camera])
            assert (together[camera].height, together[camera].width) == \
                frames[camera].shape[:2]
            for instance in together[camera].instances:
                assert seen.setdefault(instance.track_id, camera) == camera  # never shared
            instances += len(together[camera].instances)
    assert instances >= len(CAMERAS)  # the model found something: the comparison means it
    # Two cameras of three in one step: batch of two.
    frames = videos(1)[0]
    batched.step({camera: frames[camera] for camera in ("front", "down")})
    assert batched.last_batch_size == 2


def test_reset_one_camera_keeps_the_others() -> None:
    pipelines = create_camera_pipelines(SETTINGS, CAMERAS, log=lambda _: None)
    steps = videos(3)
    for frames in steps[:2]:
        before = pipelines.step(frames)
    pipelines.reset("requested", ["front"])
    assert pipelines["front"].resets["requested"] == 1
    assert not pipelines["left"].resets
    assert pipelines["front"].segmenter.frames_since_reset == 0
    assert pipelines["left"].segmenter.frames_since_reset == 2
    after = pipelines.step(steps[2])
    old_front = {i.track_id for i in before["front"].instances}
    assert old_front and not old_front & {i.track_id for i in after["front"].instances}
    assert {i.track_id for i in before["left"].instances} & \
        {i.track_id for i in after["left"].instances}  # tracks continue where not reset
    pipelines.reset()
    assert all(pipelines[c].resets["requested"] >= 1 for c in CAMERAS)


class OneFrameRunner:
    """Eager under a runner that, like an exported artifact, takes one frame per call."""

    def __init__(self, runner: EagerRunner) -> None:
        self.runner, self.config, self.device = runner, runner.config, runner.device
        self.frames_per_call: list[int] = []

    def initial_memory(self):
        return self.runner.initial_memory()

    def __call__(self, images, memory):
        self.frames_per_call.append(int(images.shape[0]))
        return self.runner(images, memory)


class Broken(OneFrameRunner):
    def __call__(self, images, memory):
        raise RuntimeError("device lost")


def test_a_one_frame_backend_runs_the_cameras_in_turn() -> None:
    pipelines = create_camera_pipelines(SETTINGS, CAMERAS, log=lambda _: None)
    single = OneFrameRunner(pipelines["front"].segmenter.runner)
    for camera in CAMERAS:
        pipelines[camera].segmenter.runner = single
    pipelines.step(videos(1)[0])
    assert pipelines.last_batch_size == 1 and single.frames_per_call == [1, 1, 1]


def test_a_fallback_in_the_middle_of_a_batch_restarts_every_cameras_memory() -> None:
    pipelines = create_camera_pipelines(SETTINGS, CAMERAS, log=lambda _: None)
    eager = pipelines["front"].segmenter.runner
    steps = videos(2)
    pipelines.step(steps[0])
    runner = FallbackRunner(Broken(eager), "onnxruntime", [("eager/cpu", lambda: eager)],
                            log=lambda _: None, on_switch=pipelines.backend_fell_back)
    for camera in CAMERAS:
        pipelines[camera].segmenter.runner = runner
    assert not runner.takes_batch  # the broken primary takes one frame
    out = pipelines.step(steps[1])  # camera by camera; the first call falls back
    assert runner.takes_batch and pipelines.info.fallback_reason.endswith("device lost")
    assert all(pipelines[c].resets["backend_fallback"] == 1 for c in CAMERAS)
    assert all(frame.memory_fill == 0 for frame in out.values())
    out = pipelines.step(steps[0])
    assert pipelines.last_batch_size == len(CAMERAS)  # eager now: one batch
    assert all(frame.memory_fill == 1 for frame in out.values())
