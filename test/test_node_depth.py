"""metaseg_node with depth over real DDS (started with the launch file's command line): 3-D
positions per track from a half-resolution depth image and camera_info matched by stamp,
the 16UC1 label image, outlines as ImageMarker, boxes as MarkerArray (deleted when a track
leaves), unmatched and unusable depth counted on /diagnostics, and the README's consumer
example (NearestPerson) reading the positions. The deterministic ColorSegmenter
(test/helpers) stands in for the model: what is tested here is the node's plumbing."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
from color_segmenter import draw_squares
from diagnostic_msgs.msg import DiagnosticArray
from node_runner import NodeProcess
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_probe import Probe
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import ImageMarker, Marker, MarkerArray

from metaseg_ros.msg import InstanceMaskArray
from metaseg_ros.ros.messages import decode_instance_mask

pytestmark = pytest.mark.torch_free

STARTUP_TIMEOUT = 120.0
FRAME_TIMEOUT = 60.0
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
HEIGHT, WIDTH = 120, 160
FX, FY, CX, CY = 100.0, 110.0, 79.5, 61.0   # colour camera, 160 x 120
BACKGROUND = 6.0                             # m
PERSON = (30, 40, 24, 2.0)                   # x, y, side (colour pixels), depth (m)
BICYCLE = (100, 30, 30, 3.5)
PARAMS = {"segmenter": "color_segmenter:create", "input_reliability": "reliable",
          "input_depth": 10, "depth.enabled": True, "depth.tolerance": 0.005,
          "depth.wait": 1.0, "tracker.max_lost": 2, "tracker.confirm_hits": 1,
          "stream.max_gap": 0.0, "marker_lifetime": 2.5}  # stamps jump between the tests


def image(squares: dict[int, tuple[int, int, int, float]], sec: int) -> Image:
    rgb = draw_squares(HEIGHT, WIDTH, {k: v[:3] for k, v in squares.items()})
    msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3, data=rgb.tobytes())
    msg.header.frame_id, msg.header.stamp.sec = "cam_optical", sec
    return msg


def depth(squares: dict[int, tuple[int, int, int, float]], sec: int, nanosec: int = 0,
          encoding: str = "16UC1") -> Image:
    """Half-resolution depth (80 x 60) registered to the colour camera: each depth pixel
    holds the depth of the colour pixel at its centre."""
    metres = np.full((HEIGHT // 2, WIDTH // 2), BACKGROUND)
    for x, y, side, z in squares.values():
        metres[y // 2:(y + side) // 2, x // 2:(x + side) // 2] = z
    pixels = np.round(metres * 1000).astype("<u2")
    msg = Image(height=HEIGHT // 2, width=WIDTH // 2, encoding=encoding, step=WIDTH,
                data=pixels.tobytes())
    msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = \
        "cam_optical", sec, nanosec
    return msg


def camera_info() -> CameraInfo:
    info = CameraInfo(width=WIDTH, height=HEIGHT, distortion_model="plumb_bob")
    info.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    info.header.frame_id = "cam_optical"
    return info


def expected_position(square: tuple[int, int, int, float]) -> np.ndarray:
    x, y, side, z = square
    return np.array([(x + (side - 1) / 2 - CX) * z / FX, (y + (side - 1) / 2 - CY) * z / FY, z])


@pytest.fixture(scope="module")
def node(tmp_path_factory, rclpy_context):
    process = NodeProcess(tmp_path_factory.mktemp("depth_node"), PARAMS,
                          image="/d3cam/image", depth="/d3/depth",
                          camera_info="/d3/camera_info", namespace="d3")
    process.wait_for_output("listening on", STARTUP_TIMEOUT)
    yield process
    assert process.stop() == 0, "\n".join(process.output)


@pytest.fixture(scope="module")
def probe(node):
    probe = Probe("depth_test_probe")
    for kind, topic in [(InstanceMaskArray, "/d3/instances"), (Image, "/d3/instance_labels"),
                        (ImageMarker, "/d3/image_markers"), (MarkerArray, "/d3/markers")]:
        probe.record(kind, topic, RELIABLE)
    probe.record(DiagnosticArray, "/diagnostics", 50)
    yield probe
    probe.close()


def send(probe: Probe, publishers, squares, sec: int, with_depth: bool = True,
         topics=("/d3/instances",)) -> dict[str, object]:
    """Image first, its depth 50 ms later (the node waits for it); the messages with this
    stamp on each of `topics`."""
    publishers["image"].publish(image(squares, sec))
    if with_depth:
        time.sleep(0.05)
        publishers["depth"].publish(depth(squares, sec))

    def arrived() -> bool:
        return all(any(m.header.stamp.sec == sec for m in _stamped(probe, t)) for t in topics)

    probe.wait_for(arrived, FRAME_TIMEOUT, f"output for frame {sec} on {topics}")
    return {t: next(m for m in _stamped(probe, t) if m.header.stamp.sec == sec) for t in topics}


def _stamped(probe: Probe, topic: str) -> list:
    messages = probe.messages(topic)
    if topic == "/d3/markers":  # a MarkerArray has no header of its own
        return [_ArrayStamp(m) for m in messages if m.markers]
    return messages


class _ArrayStamp:
    def __init__(self, array: MarkerArray) -> None:
        self.array, self.header = array, array.markers[0].header


def _diagnostic(probe: Probe, key: str) -> str | None:
    for array in reversed(probe.messages("/diagnostics")):
        for status in array.status:
            if "/d3/" in status.name:
                return {kv.key: kv.value for kv in status.values}.get(key)
    return None


@pytest.fixture(scope="module")
def publishers(probe):
    made = {"image": probe.node.create_publisher(Image, "/d3cam/image", RELIABLE),
            "depth": probe.node.create_publisher(Image, "/d3/depth", RELIABLE),
            "info": probe.node.create_publisher(CameraInfo, "/d3/camera_info", RELIABLE)}
    probe.wait_for(lambda: all(p.get_subscription_count() for p in made.values()), 30,
                   "the node's subscriptions")
    made["info"].publish(camera_info())
    # Until the node publishes markers to us (it does so only once it sees our subscribers).
    sec = 100
    deadline = time.monotonic() + FRAME_TIMEOUT
    while time.monotonic() < deadline:
        made["info"].publish(camera_info())
        send(probe, made, {0: PERSON}, sec)
        if any(m.header.stamp.sec == sec for m in probe.messages("/d3/image_markers")) and \
                any(m.header.stamp.sec == sec for m in _stamped(probe, "/d3/markers")):
            break
        sec += 1
    return made


def test_positions_from_half_resolution_depth_and_what_the_viewers_get(probe, publishers):
    squares = {0: PERSON, 1: BICYCLE}
    out = send(probe, publishers, squares, 200,
               topics=("/d3/instances", "/d3/instance_labels", "/d3/image_markers",
                       "/d3/markers"))
    instances = out["/d3/instances"]
    assert instances.header.frame_id == "cam_optical" and len(instances.instances) == 2
    by_class = {i.class_name: i for i in instances.instances}
    for name, square in (("person", PERSON), ("bicycle", BICYCLE)):
        instance = by_class[name]
        assert instance.position_valid
        side = square[2]
        assert instance.depth_pixels == (side // 2) ** 2  # every depth pixel of the square
        got = np.array([instance.position.x, instance.position.y, instance.position.z])
        distance = np.linalg.norm(expected_position(square))
        assert np.linalg.norm(got - expected_position(square)) < 0.01 * distance
        width = np.array([instance.extent_max.x - instance.extent_min.x,
                          instance.extent_max.y - instance.extent_min.y])
        true_width = np.array([side * square[3] / FX, side * square[3] / FY])
        assert np.all(np.abs(width - true_width) <= 0.05 * true_width), (width, true_width)

    labels = out["/d3/instance_labels"]
    assert labels.encoding == "16UC1" and labels.step == WIDTH * 2
    values = np.frombuffer(bytes(labels.data), "<u2").reshape(HEIGHT, WIDTH)
    for instance in instances.instances:
        mask = decode_instance_mask(instance, HEIGHT, WIDTH)
        np.testing.assert_array_equal(values == (instance.track_id - 1) % 65535 + 1, mask)

    outline = out["/d3/image_markers"]
    assert outline.type == ImageMarker.LINE_LIST and len(outline.points) % 2 == 0
    assert len(outline.outline_colors) == len(outline.points)
    points = np.array([(p.x, p.y) for p in outline.points])
    x, y, side, _ = PERSON  # the person's square's corners are among the outline's points
    corners = {(x, y), (x + side - 1, y), (x, y + side - 1), (x + side - 1, y + side - 1)}
    assert corners <= {tuple(p) for p in points.tolist()}
    assert outline.lifetime.sec == 2 and outline.lifetime.nanosec == 500_000_000

    markers = out["/d3/markers"].array.markers
    boxes = {m.id: m for m in markers if m.ns == "tracks" and m.action == Marker.ADD}
    labels = {m.id: m for m in markers if m.ns == "labels" and m.action == Marker.ADD}
    assert set(boxes) == set(labels) == {i.track_id for i in instances.instances}
    person = by_class["person"]
    box = boxes[person.track_id]
    assert box.type == Marker.CUBE and box.header.frame_id == "cam_optical"
    assert box.lifetime.sec == 2 and labels[person.track_id].text == \
        f"#{person.track_id} person"
    assert box.pose.position.z == pytest.approx(PERSON[3], abs=0.02)

    # The person leaves: its markers are deleted, the bicycle's stay.
    out = send(probe, publishers, {1: BICYCLE}, 201, topics=("/d3/markers",))
    markers = out["/d3/markers"].array.markers
    deleted = {(m.ns, m.id) for m in markers if m.action == Marker.DELETE}
    assert deleted == {("tracks", person.track_id), ("labels", person.track_id)}
    assert {m.id for m in markers if m.action == Marker.ADD} == {by_class["bicycle"].track_id}


def test_frames_without_depth_or_with_bad_depth_get_no_position_and_are_counted(
        node, probe, publishers):
    probe.wait_for(lambda: _diagnostic(probe, "depth_matched") is not None, 10, "diagnostics")
    unmatched = int(_diagnostic(probe, "depth_unmatched"))
    out = send(probe, publishers, {0: PERSON}, 300, with_depth=False)
    assert not any(i.position_valid for i in out["/d3/instances"].instances)
    assert all(i.depth_pixels == 0 for i in out["/d3/instances"].instances)
    # A depth image 20 ms off is beyond the 5 ms tolerance.
    publishers["image"].publish(image({0: PERSON}, 301))
    publishers["depth"].publish(depth({0: PERSON}, 301, nanosec=20_000_000))
    probe.wait_for(lambda: any(m.header.stamp.sec == 301
                               for m in probe.messages("/d3/instances")), FRAME_TIMEOUT, "301")
    assert not any(i.position_valid for m in probe.messages("/d3/instances")
                   if m.header.stamp.sec == 301 for i in m.instances)
    probe.wait_for(lambda: int(_diagnostic(probe, "depth_unmatched")) >= unmatched + 2, 10,
                   "unmatched depth counted")
    # Within the tolerance (4 ms off): matched.
    publishers["image"].publish(image({0: PERSON}, 302))
    publishers["depth"].publish(depth({0: PERSON}, 302, nanosec=4_000_000))
    probe.wait_for(lambda: any(i.position_valid for m in probe.messages("/d3/instances")
                               if m.header.stamp.sec == 302 for i in m.instances),
                   FRAME_TIMEOUT, "302 matched within the tolerance")
    # An unusable depth encoding: logged, counted, the frame still published without 3-D.
    invalid = int(_diagnostic(probe, "depth_invalid"))
    publishers["image"].publish(image({0: PERSON}, 303))
    publishers["depth"].publish(depth({0: PERSON}, 303, encoding="rgb8"))
    node.wait_for_output("depth encoding 'rgb8' is not one of", FRAME_TIMEOUT)
    probe.wait_for(lambda: int(_diagnostic(probe, "depth_invalid")) == invalid + 1, 10,
                   "invalid depth counted")
    assert node.process.poll() is None


def test_readme_consumer_prints_the_nearest_person(probe, publishers, capsys):
    from metaseg_ros.ros.nearest_person import NearestPerson

    consumer = NearestPerson("/d3/instances")
    executor = SingleThreadedExecutor()
    executor.add_node(consumer)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        probe.wait_for(lambda: consumer.count_publishers("/d3/instances") > 0, 30, "node")
        time.sleep(1.0)  # the node's publisher matches the new subscription
        far_person = (110, 70, 20, 4.5)
        deadline = time.monotonic() + FRAME_TIMEOUT
        for sec in range(400, 450):  # until the node's publisher has matched the consumer
            send(probe, publishers, {0: PERSON, 1: BICYCLE}, sec)
            time.sleep(0.2)
            if consumer.nearest("person") is not None or time.monotonic() > deadline:
                break
        found = consumer.nearest("person")
        assert found is not None, "the consumer never received positions"
        person_id = found[0]
        assert found[1] == pytest.approx(np.linalg.norm(expected_position(PERSON)), rel=0.01)
        assert consumer.nearest("bicycle")[1] == pytest.approx(
            np.linalg.norm(expected_position(BICYCLE)), rel=0.01)
        # Only a person far away is seen now (palette 0 moved far): still the nearest one,
        # and the track that left is forgotten after max_age of stamps.
        for later in range(sec + 1, sec + 5):
            send(probe, publishers, {0: far_person}, later)
        probe.wait_for(lambda: consumer.nearest("person")[1] > 4.0, FRAME_TIMEOUT, "update")
        assert consumer.nearest("person")[0] == person_id  # the same track, moved
        assert consumer.nearest("bicycle") is None  # unseen for more than max_age (2 s)
    finally:
        executor.shutdown(timeout_sec=2.0)
        consumer.destroy_node()
    printed = capsys.readouterr().out
    assert re.search(rf"nearest person: track {person_id} at 2\.\d\d m", printed), printed


@pytest.mark.torch_free
def test_readme_shows_the_consumer_example_as_tested() -> None:
    source = (Path(__file__).resolve().parents[1] / "metaseg_ros" / "ros" /
              "nearest_person.py").read_text()
    example = source.split("# README example: begin\n")[1].split("# README example: end")[0]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert example.strip() in readme
