"""One metaseg_node for several cameras over real DDS (started with the launch file's command
line): each camera's messages carry its own header and track ids, a camera that stops
stalls no other (and only its own status goes to ERROR), resets per camera and for all; and
with the shipped model on eager PyTorch, frames of two cameras arriving together go
through the network as one batch."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
from color_segmenter import draw_squares
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from node_runner import NodeProcess
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_probe import Probe
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
from metaseg_ros.msg import InstanceMaskArray

STARTUP_TIMEOUT = 240.0
FRAME_TIMEOUT = 120.0
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
CAMERAS = ("front", "down")
PLUGIN = {"segmenter": "color_segmenter:create", "cameras": list(CAMERAS),
          "input_reliability": "reliable", "input_depth": 10, "tracker.confirm_hits": 1,
          "stream.stale_after": 1.0, "diagnostics_period": 0.2}


def image(rgb: np.ndarray, camera: str, sec: int) -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                step=rgb.shape[1] * 3, data=rgb.tobytes())
    msg.header.frame_id, msg.header.stamp.sec = f"{camera}_optical", sec
    return msg


def statuses(probe: Probe, namespace: str) -> dict[str, DiagnosticStatus]:
    """The latest status of each camera of the node in `namespace`, by camera."""
    found = {}
    for array in probe.messages("/diagnostics"):
        for status in array.status:
            if status.name.startswith(f"/{namespace}/metaseg_node: "):
                found[status.name.split(": ", 1)[1]] = status
    return found


def value(status: DiagnosticStatus, key: str) -> str | None:
    return {kv.key: kv.value for kv in status.values}.get(key)


def call(probe: Probe, service: str) -> Trigger.Response:
    client = probe.node.create_client(Trigger, service)
    assert client.wait_for_service(timeout_sec=30), service
    future = client.call_async(Trigger.Request())
    probe.wait_for(future.done, 30, f"a response from {service}")
    return future.result()


def connect(probe: Probe, namespace: str) -> dict:
    """Publishers of both cameras' images in `namespace`, their instances recorded, once
    the node's topics and ours have matched."""
    publishers = {c: probe.node.create_publisher(Image, f"/{namespace}/{c}/image", RELIABLE)
                  for c in CAMERAS}
    for camera in CAMERAS:
        probe.record(InstanceMaskArray, f"/{namespace}/{camera}/instances", RELIABLE)
    probe.wait_for(lambda: all(p.get_subscription_count() for p in publishers.values())
                   and all(probe.node.count_publishers(f"/{namespace}/{c}/instances")
                           for c in CAMERAS), 30, "the node's topics")
    time.sleep(1.0)  # the node's publishers match our subscriptions
    return publishers


def send(probe: Probe, publishers: dict, namespace: str, camera: str, sec: int,
         squares: dict) -> InstanceMaskArray:
    """One frame of squares to `camera`; the node's answer for it."""
    publishers[camera].publish(image(draw_squares(60, 80, squares), camera, sec))
    topic = f"/{namespace}/{camera}/instances"
    probe.wait_for(lambda: any(m.header.stamp.sec == sec for m in probe.messages(topic)),
                   FRAME_TIMEOUT, f"{camera} frame {sec}")
    return next(m for m in probe.messages(topic) if m.header.stamp.sec == sec)


@pytest.fixture(scope="module")
def probe(rclpy_context):
    probe = Probe("cameras_test_probe")
    yield probe
    probe.close()


@pytest.mark.torch_free
def test_each_camera_its_own_header_ids_stall_and_reset(tmp_path, probe):
    node = NodeProcess(tmp_path, PLUGIN, namespace="c2")
    try:
        node.wait_for_output("listening on /c2/front/image, /c2/down/image", STARTUP_TIMEOUT)
        probe.record(DiagnosticArray, "/diagnostics", 100)
        publishers = connect(probe, "c2")

        def frame(camera: str, sec: int, squares: dict) -> InstanceMaskArray:
            return send(probe, publishers, "c2", camera, sec, squares)

        # The same colours in both cameras: two tracks, never one id for both.
        squares = {0: (5, 5, 10), 1: (40, 20, 12)}
        ids = {}
        for sec in range(1, 4):
            for camera in CAMERAS:
                out = frame(camera, sec, squares)
                assert out.header.frame_id == f"{camera}_optical"
                ids.setdefault(camera, set()).update(i.track_id for i in out.instances)
        assert all(len(ids[c]) == 2 for c in CAMERAS) and not ids["front"] & ids["down"]

        # down stops; front goes on, and only down's status says so.
        for sec in range(4, 12):
            frame("front", sec, squares)
            time.sleep(0.2)
        probe.wait_for(lambda: statuses(probe, "c2")["down"].level == DiagnosticStatus.ERROR,
                       10, "down's status ERROR")
        down, front = statuses(probe, "c2")["down"], statuses(probe, "c2")["front"]
        assert "no input" in down.message and "/c2/down/image" in down.message
        assert front.level != DiagnosticStatus.ERROR, front.message
        assert value(front, "frames_processed") == "11" and value(down, "frames_processed") == "3"

        # Reset one camera: its tracks start again, the other's continue; then all.
        assert call(probe, "/c2/metaseg_node/down/reset").success
        node.wait_for_output("reset: model memory and tracks of down cleared", 10)
        new_down = {i.track_id for i in frame("down", 12, squares).instances}
        assert len(new_down) == 2 and min(new_down) > max(ids["front"] | ids["down"])
        assert {i.track_id for i in frame("front", 12, squares).instances} == ids["front"]
        assert call(probe, "/c2/metaseg_node/reset").success
        after = {c: {i.track_id for i in frame(c, 13, squares).instances} for c in CAMERAS}
        assert min(after["front"] | after["down"]) > max(new_down)
        assert not after["front"] & after["down"]
    finally:
        assert node.stop() == 0, "\n".join(node.output)


@pytest.mark.torch_free
def test_per_camera_track_ids_count_on_their_own(tmp_path, probe):
    """camera_track_ids: per_camera: each camera numbers its tracks from 1, so the same
    scene seen by two cameras gets the same ids on both topics; a reset of one camera moves
    only its counter on."""
    node = NodeProcess(tmp_path, PLUGIN | {"camera_track_ids": "per_camera"}, namespace="c4")
    try:
        node.wait_for_output("listening on /c4/front/image, /c4/down/image", STARTUP_TIMEOUT)
        publishers = connect(probe, "c4")

        def ids(camera: str, sec: int) -> set[int]:
            return {i.track_id for i in send(probe, publishers, "c4", camera, sec,
                                             squares).instances}

        squares = {0: (5, 5, 10), 1: (40, 20, 12)}
        for sec in (1, 2):
            assert ids("front", sec) == ids("down", sec) == {1, 2}
        assert call(probe, "/c4/metaseg_node/down/reset").success
        node.wait_for_output("reset: model memory and tracks of down cleared", 10)
        assert ids("down", 3) == {3, 4} and ids("front", 3) == {1, 2}
    finally:
        assert node.stop() == 0, "\n".join(node.output)


def test_frames_arriving_together_run_as_one_batch(tmp_path, probe):
    """The shipped model, eager PyTorch: two cameras' frames published at once are
    segmented in one batch (counted per camera as frames_batched), each published on its
    own camera's topic with its own header."""
    node = NodeProcess(tmp_path, {"backend": "eager", "num_threads": 2,
                                  "cameras": list(CAMERAS), "input_reliability": "reliable",
                                  "input_depth": 10, "diagnostics_period": 0.5},
                       namespace="c3")
    try:
        node.wait_for_output("listening on", STARTUP_TIMEOUT)
        publishers = {c: probe.node.create_publisher(Image, f"/c3/{c}/image", RELIABLE)
                      for c in CAMERAS}
        for camera in CAMERAS:
            probe.record(InstanceMaskArray, f"/c3/{camera}/instances", RELIABLE)
        probe.record(DiagnosticArray, "/diagnostics", 100)
        probe.wait_for(lambda: all(p.get_subscription_count() for p in publishers.values()),
                       30, "the node's subscriptions")
        generator = SyntheticVideoGenerator(SyntheticConfig(image_size=(96, 128), num_frames=8),
                                            seed=11)
        script = generator.script(2)
        sec = 0
        deadline = time.monotonic() + 4 * FRAME_TIMEOUT

        def batched() -> bool:
            status = statuses(probe, "c3")
            return all(int(value(status[c], "frames_batched") or 0) > 0 for c in CAMERAS
                       if c in status) and len(status) == 2

        while not batched() and time.monotonic() < deadline:
            sec += 1
            rgb = generator.render(script, sec % 8)[0]
            for camera in CAMERAS:  # together: the second arrives while the first waits
                publishers[camera].publish(image(rgb, camera, sec))
            for camera in CAMERAS:
                topic = f"/c3/{camera}/instances"
                probe.wait_for(lambda t=topic, s=sec: any(m.header.stamp.sec == s
                                                          for m in probe.messages(t)),
                               FRAME_TIMEOUT, f"{camera} frame {sec}")
            time.sleep(0.6)
        assert batched(), [(s.name, s.values) for s in statuses(probe, "c3").values()]
        for camera in CAMERAS:
            for msg in probe.messages(f"/c3/{camera}/instances"):
                assert msg.header.frame_id == f"{camera}_optical"
                assert (msg.height, msg.width) == (96, 128)
    finally:
        assert node.stop() == 0, "\n".join(node.output)


@pytest.mark.torch_free
def test_lifecycle_node_with_cameras_goes_through_its_transitions(rclpy_context):
    """metaseg_lifecycle_node with `cameras`: configure makes a pipeline and a reset service
    per camera, activate their topics, cleanup and configure again keep the id counter."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from metaseg_ros.ros.lifecycle_node import MetaSegLifecycleNode

    node = MetaSegLifecycleNode(parameter_overrides=[
        Parameter("segmenter", value="color_segmenter:create"),
        Parameter("cameras", value=list(CAMERAS))])
    try:
        runtime = node.runtime
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert runtime.pipeline.cameras == CAMERAS and set(runtime.cameras) == set(CAMERAS)
        services = {name for name, _ in node.get_service_names_and_types_by_node(
            node.get_name(), node.get_namespace())}
        assert {"/metaseg_node/reset", "/metaseg_node/front/reset",
                "/metaseg_node/down/reset"} <= services
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert runtime.cameras["down"].input_topic == "/down/image"
        assert runtime.cameras["front"].output_topic == "/front/instances"
        frame = draw_squares(40, 40, {0: (5, 5, 10)})
        runtime.pipeline.step({"front": frame})  # a track confirmed after two frames
        runtime.pipeline.step({"front": frame})
        next_id = runtime.pipeline.next_track_ids
        assert next_id == {"front": next_id["down"]} | {"down": next_id["down"]} \
            and next_id["front"] > 1  # one counter shared by the cameras
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert runtime.pipeline.next_track_ids == next_id
    finally:
        node.shutdown()
        node.destroy_node()
