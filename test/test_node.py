"""metaseg_node end to end over real DDS, started with the launch file's command line.

Three node processes serve the tests of this module:
- `model_node`: the real MetaSegmenter (tiny, with the shipped trained weights, on the
  default backend `auto`, i.e. ONNX Runtime here) in the namespace /robot1 with the image
  remapped to /cam/front, raw input;
- `compressed_node`: the same on eager PyTorch, with compressed input;
- `color_node`: the deterministic ColorSegmenter (test/helpers) for the track-id test, and
  with its gate (a frame it holds until the test lets it go) for the keep-latest test.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
from color_segmenter import GATE_VARIABLE, draw_squares
from diagnostic_msgs.msg import DiagnosticArray
from node_runner import NodeProcess
from PIL import Image as PILImage
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_probe import Probe
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoGenerator
from metaseg_ros.msg import InstanceMaskArray
from metaseg_ros.ros.messages import decode_instance_mask
from metaseg_ros.visualization import track_color

STARTUP_TIMEOUT = 240.0  # importing torch and building the model on 2 loaded cores
FRAME_TIMEOUT = 120.0
DIAGNOSTICS_TIMEOUT = 60.0  # /diagnostics comes at 1 Hz: ample even on 2 loaded cores
SENSOR_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
RELIABLE_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
# Thresholds at zero and immediate track birth, so that every instance whose mask has a pixel
# is published from the first frame on.
EVERYTHING_PASSES = {"score_threshold": 0.0, "tracker.birth_score": 0.0,
                     "tracker.min_score": 0.0, "tracker.confirm_hits": 1}


def start_node(tmp_path_factory, name: str, overrides: dict, **launch_args: str) -> NodeProcess:
    node = NodeProcess(tmp_path_factory.mktemp(name), overrides, **launch_args)
    node.wait_for_output("listening on", STARTUP_TIMEOUT)
    return node


@pytest.fixture(scope="module")
def probe(rclpy_context):
    probe = Probe("node_test_probe")
    yield probe
    probe.close()


@pytest.fixture(scope="module")
def model_node(tmp_path_factory, probe):
    node = start_node(tmp_path_factory, "model_node", EVERYTHING_PASSES | {"max_instances": 5},
                      image="/cam/front", namespace="robot1")
    yield node
    assert node.stop() == 0, "\n".join(node.output)


@pytest.fixture(scope="module")
def compressed_node(tmp_path_factory, probe):
    node = start_node(tmp_path_factory, "compressed_node",
                      EVERYTHING_PASSES | {"max_instances": 3, "input_type": "compressed",
                                           "backend": "eager"},
                      image="/cam/compressed_test", namespace="robot2")
    yield node
    assert node.stop() == 0, "\n".join(node.output)


@pytest.fixture(scope="module")
def gate_dir(tmp_path_factory) -> Path:
    """Where color_node's segmenter announces and awaits a gated frame (color_segmenter)."""
    return tmp_path_factory.mktemp("gate")


@pytest.fixture(scope="module")
def color_node(tmp_path_factory, probe, gate_dir):
    with pytest.MonkeyPatch.context() as patch:  # the node inherits the environment
        patch.setenv(GATE_VARIABLE, str(gate_dir))
        node = start_node(tmp_path_factory, "color_node",
                          {"segmenter": "color_segmenter:create",
                           "input_reliability": "reliable", "input_depth": 10,
                           "tracker.max_lost": 5},
                          image="/cam/colors", namespace="robot3")
    yield node
    assert node.stop() == 0, "\n".join(node.output)


def scene(height: int, width: int, video: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic frame (real cut-outs over a real background) of the kind the shipped model
    was trained on: (H, W, 3) RGB and the (N, H, W) masks of its labelled objects. Frames of
    pure noise are not used: a trained model rightly finds no object in them."""
    generator = SyntheticVideoGenerator(SyntheticConfig(image_size=(height, width), num_frames=1),
                                        seed=11)
    return generator.render(generator.script(video), 0)


def best_iou(mask: np.ndarray, objects: np.ndarray) -> float:
    """The highest IoU of `mask` with one of `objects` (N, H, W)."""
    return max(float((mask & obj).sum() / max((mask | obj).sum(), 1)) for obj in objects)


def raw_image(rgb: np.ndarray, encoding: str, stamp: int, padding: int = 0) -> Image:
    """`rgb` converted to `encoding` (with `padding` bytes per row) as a sensor_msgs/Image."""
    gray = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    alpha = np.full((*rgb.shape[:2], 1), 255, np.uint8)
    pixels = {
        "rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": gray,
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
        "mono16": (gray.astype("<u2") << 8),
        "yuv422": np.stack([np.full_like(gray, 128), gray], axis=2),  # UYVY, grey
        "yuv422_yuy2": np.stack([gray, np.full_like(gray, 128)], axis=2),  # YUYV, grey
    }[encoding]
    rows = np.ascontiguousarray(pixels).reshape(rgb.shape[0], -1).view(np.uint8)
    rows = np.concatenate([rows, np.zeros((rows.shape[0], padding), np.uint8)], axis=1)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding,
                is_bigendian=0, step=rows.shape[1], data=rows.tobytes())
    msg.header.frame_id = f"camera_{encoding}"
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 4242
    return msg


def test_image_in_every_encoding_gives_instances_with_the_input_header(model_node, probe):
    model_node.wait_for_output("(auto)/cpu", 5)  # the default backend, measured here
    probe.record(InstanceMaskArray, "/robot1/instances", RELIABLE_QOS)
    publisher = probe.node.create_publisher(Image, "/cam/front", SENSOR_QOS)
    probe.wait_for(lambda: publisher.get_subscription_count() > 0, 30, "the node's subscription")
    cases = [("rgb8", 0), ("rgb8", 13), ("bgr8", 0), ("mono8", 5), ("rgba8", 0), ("bgra8", 8),
             ("mono16", 6), ("yuv422", 0), ("yuv422_yuy2", 4)]
    for index, (encoding, padding) in enumerate(cases):
        height, width = (96, 128) if index % 2 else (120, 80)
        rgb, objects = scene(height, width)
        stamp = 5000 + index
        msg = raw_image(rgb, encoding, stamp, padding)
        arrived = [m for m in probe.messages("/robot1/instances") if m.header.stamp.sec == stamp]
        deadline = time.monotonic() + FRAME_TIMEOUT
        while not arrived and time.monotonic() < deadline:
            publisher.publish(msg)  # best effort: resend until the answer arrives
            time.sleep(0.3)
            arrived = [m for m in probe.messages("/robot1/instances")
                       if m.header.stamp.sec == stamp]
        assert arrived, f"no output for {encoding} (padding {padding})"
        out = arrived[0]
        assert out.header.frame_id == f"camera_{encoding}"
        assert out.header.stamp.nanosec == 4242
        assert (out.height, out.width) == (height, width)
        assert len(out.instances) >= 1, "score_threshold 0 must yield instances"
        if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):  # colour in the right channel order
            best = max(out.instances, key=lambda instance: instance.score)
            iou = best_iou(decode_instance_mask(best, out.height, out.width), objects)
            assert iou >= 0.5, f"{encoding}: the best instance covers no object (IoU {iou:.2f})"
        for instance in out.instances:
            mask = decode_instance_mask(instance, out.height, out.width)
            assert mask.shape == (height, width) and mask.any()
            assert instance.track_id > 0
            box = instance.bbox
            ys, xs = np.nonzero(mask)
            assert (box.x_offset, box.y_offset) == (xs.min(), ys.min())
            assert (box.width, box.height) == (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def _jpeg_or_png(rgb: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def test_compressed_input_and_corrupted_jpeg(compressed_node, probe):
    topic = "/robot2/instances"
    probe.record(InstanceMaskArray, topic, RELIABLE_QOS)
    probe.record(DiagnosticArray, "/diagnostics", 50)
    publisher = probe.node.create_publisher(CompressedImage, "/cam/compressed_test/compressed",
                                            RELIABLE_QOS)
    probe.wait_for(lambda: publisher.get_subscription_count() > 0, 30, "the node's subscription")
    rgb, _ = scene(72, 100)
    good = _jpeg_or_png(rgb, "JPEG")
    frames = [("jpeg", good, 7001), ("png", _jpeg_or_png(rgb, "PNG"), 7002),
              ("jpeg", good[: len(good) // 2] + b"\x00" * 50, 7003), ("jpeg", good, 7004)]
    for fmt, data, stamp in frames:  # one at a time, so that keep-latest drops none
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp.sec = stamp
        if stamp == 7001:  # best-effort input: resend the first until the path is up
            _publish_until(probe, publisher, msg, topic, stamp, resend=True)
            continue
        publisher.publish(msg)
        if stamp == 7003:
            compressed_node.wait_for_output("dropped frame (stamp 7003", FRAME_TIMEOUT)
        else:
            probe.wait_for(lambda stamp=stamp: any(m.header.stamp.sec == stamp
                                                   for m in probe.messages(topic)),
                           FRAME_TIMEOUT, f"output for compressed frame {stamp}")
    stamps = {m.header.stamp.sec for m in probe.messages(topic)}
    assert 7003 not in stamps
    for msg in probe.messages(topic):
        assert (msg.height, msg.width) == (72, 100)
    errors = [line for line in compressed_node.output if "dropped frame" in line]
    assert len(errors) == 1 and "cannot decode" in errors[0], errors
    last = next(m for m in probe.messages(topic) if m.header.stamp.sec == 7004)
    assert len(last.instances) >= 1, "score_threshold 0 must yield instances"
    # The report once frame 7004, the last one, is counted: the drop, where a frame's time
    # goes, what the tracker holds and what the last frame gave.
    values = _wait_for_diagnostics(
        probe, "robot2", lambda v: v.get("dropped_invalid_input") == "1"
        and v.get("instances_last_frame") == str(len(last.instances)),
        "the drop and frame 7004 counted on /diagnostics")
    assert float(values["segment_ms_median"]) > 0.0
    assert 0.0 < float(values["track_ms_median"]) < 1000.0
    assert int(values["live_tracks"]) >= len(last.instances)


def _diagnostic(probe: Probe, namespace: str, key: str) -> str | None:
    """Latest value of `key` in the node's /diagnostics status (None if not seen)."""
    values = _diagnostic_values(probe, namespace)
    return None if values is None else values.get(key)


def _diagnostic_values(probe: Probe, namespace: str, since_ns: int = 0) -> dict | None:
    """The key-values of the node's latest /diagnostics status stamped at or after
    `since_ns` (None if none arrived)."""
    for array in reversed(probe.messages("/diagnostics")):
        stamp = array.header.stamp.sec * 1_000_000_000 + array.header.stamp.nanosec
        if stamp < since_ns:
            continue
        for status in array.status:
            if f"/{namespace}/" in status.name:
                return {kv.key: kv.value for kv in status.values}
    return None


def _wait_for_diagnostics(probe: Probe, namespace: str, condition, what: str,
                          since_ns: int = 0) -> dict:
    """The node's latest /diagnostics key-values once `condition(values)` holds on them (a
    report stamped at or after `since_ns`); AssertionError after DIAGNOSTICS_TIMEOUT."""
    found: list[dict] = []

    def holds() -> bool:
        values = _diagnostic_values(probe, namespace, since_ns)
        if values is not None and condition(values):
            found.append(values)
            return True
        return False

    probe.wait_for(holds, DIAGNOSTICS_TIMEOUT, what)
    return found[-1]


def test_bad_images_are_dropped_counted_and_the_next_frame_processed(model_node, probe):
    probe.record(DiagnosticArray, "/diagnostics", 50)
    probe.record(InstanceMaskArray, "/robot1/instances", RELIABLE_QOS)
    publisher = probe.node.create_publisher(Image, "/cam/front", RELIABLE_QOS)
    probe.wait_for(lambda: publisher.get_subscription_count() > 0, 30, "the node's subscription")
    good = raw_image(np.full((40, 60, 3), 120, np.uint8), "rgb8", 6100)
    bad = {
        "step 100 is smaller": Image(height=40, width=60, encoding="rgb8", step=100,
                                     data=bytes(100 * 40)),
        "expected height*step": Image(height=40, width=60, encoding="rgb8", step=180,
                                      data=bytes(180 * 39)),
        "unsupported encoding 'bayer_grbg8'": Image(height=40, width=60, encoding="bayer_grbg8",
                                                    step=60, data=bytes(60 * 40)),
        "empty image": Image(height=0, width=0, encoding="rgb8", step=0, data=b""),
    }
    # The node's subscription is best effort: make sure it has matched this publisher (a
    # good frame answered) before sending the bad ones, each of which is sent once.
    _publish_until(probe, publisher, raw_image(np.full((40, 60, 3), 90, np.uint8), "rgb8", 6099),
                   "/robot1/instances", 6099, resend=True)
    before = int(_diagnostic(probe, "robot1", "dropped_invalid_input") or 0)
    for index, (expected, msg) in enumerate(bad.items()):
        msg.header.stamp.sec = 6000 + index
        publisher.publish(msg)
        model_node.wait_for_output(expected, 30)
    publisher.publish(good)
    probe.wait_for(lambda: any(m.header.stamp.sec == 6100
                               for m in probe.messages("/robot1/instances")),
                   FRAME_TIMEOUT, "the good frame after the bad ones")
    for expected in bad:
        assert sum(expected in line for line in model_node.output) == 1, expected
    _wait_for_diagnostics(
        probe, "robot1", lambda v: int(v.get("dropped_invalid_input", 0)) == before + len(bad),
        "four drops counted on /diagnostics")
    assert model_node.process.poll() is None


def test_label_image_and_overlay_while_subscribed(model_node, probe):
    probe.record(InstanceMaskArray, "/robot1/instances", RELIABLE_QOS)
    probe.record(DiagnosticArray, "/diagnostics", 50)
    publisher = probe.node.create_publisher(Image, "/cam/front", SENSOR_QOS)
    probe.wait_for(lambda: publisher.get_subscription_count() > 0, 30, "the node's subscription")
    height, width = 150, 200  # room for the labels: most pixels stay the input's
    rgb, _ = scene(height, width)
    # Nobody subscribes to the overlay or the label image yet: frames are processed and
    # none of those is made (counted on /diagnostics).
    stamp = 6400
    deadline = time.monotonic() + FRAME_TIMEOUT
    while not any(m.header.stamp.sec == stamp for m in probe.messages("/robot1/instances")) \
            and time.monotonic() < deadline:
        stamp += 1
        publisher.publish(raw_image(rgb, "rgb8", stamp))
        time.sleep(1.0)
    processed = _wait_for_diagnostics(
        probe, "robot1", lambda v: int(v.get("frames_processed", 0)) >= 1, "frames processed")
    assert processed["overlay_published"] == "0" and processed["instance_labels_published"] == "0"
    probe.record(Image, "/robot1/instance_labels", RELIABLE_QOS)
    probe.record(Image, "/robot1/overlay", RELIABLE_QOS)

    def both_arrived(stamp: int) -> bool:
        return all(any(m.header.stamp.sec == stamp for m in probe.messages(topic))
                   for topic in ("/robot1/instance_labels", "/robot1/overlay"))

    stamp = 6500
    deadline = time.monotonic() + FRAME_TIMEOUT
    while not both_arrived(stamp) and time.monotonic() < deadline:
        stamp += 1  # the node publishes these only once it has seen our subscriptions
        publisher.publish(raw_image(rgb, "rgb8", stamp))
        time.sleep(1.0)
    probe.wait_for(lambda: both_arrived(stamp), FRAME_TIMEOUT, "label image and overlay")
    labels_msg = next(m for m in probe.messages("/robot1/instance_labels")
                      if m.header.stamp.sec == stamp)
    overlay = next(m for m in probe.messages("/robot1/overlay") if m.header.stamp.sec == stamp)
    instances = next(m for m in probe.messages("/robot1/instances") if m.header.stamp.sec == stamp)
    assert labels_msg.encoding == "16UC1"  # label_encoding's default; ids < 65536 as they are
    assert (labels_msg.height, labels_msg.width) == (height, width)
    labels = np.frombuffer(bytes(labels_msg.data), dtype="<u2").reshape(height, width)
    assert overlay.encoding == "rgb8" and (overlay.height, overlay.width) == (height, width)
    assert len(overlay.data) == height * width * 3
    assert len(instances.instances) >= 1, "score_threshold 0 must yield instances"
    assert set(np.unique(labels)) - {0} <= {i.track_id for i in instances.instances}
    masks = {}
    for instance in instances.instances:  # overlaps are resolved: masks match labels exactly
        masks[instance.track_id] = decode_instance_mask(instance, height, width)
        np.testing.assert_array_equal(labels == instance.track_id, masks[instance.track_id])
    # The overlay is the input tinted inside the masks (the mean of pixel and track colour,
    # the outline in the track colour), a label on black above each box, and the input
    # itself everywhere else.
    drawn = np.frombuffer(bytes(overlay.data), np.uint8).reshape(height, width, 3).astype(int)
    labelled = _label_areas(instances.instances, (height, width))
    tinted = np.zeros((height, width), bool)
    for instance in instances.instances:
        mask = masks[instance.track_id]
        color = np.array(track_color(instance.track_id))
        outline = mask & _outline(mask) & ~labelled
        interior = mask & ~_outline(mask) & ~labelled
        np.testing.assert_array_equal(drawn[outline], np.broadcast_to(color, drawn[outline].shape))
        np.testing.assert_array_equal(drawn[interior], (rgb[interior] + color) // 2)
        tinted |= mask
    checked = tinted & ~labelled
    assert checked.sum() > 0.5 * tinted.sum()  # most of the masks are checked
    assert (drawn[checked] != rgb[checked]).any(axis=1).mean() > 0.9  # and do differ
    elsewhere = ~tinted & ~labelled
    assert elsewhere.sum() > 0.3 * elsewhere.size
    np.testing.assert_array_equal(drawn[elsewhere], rgb[elsewhere])


def _outline(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _label_areas(instances, shape: tuple[int, int]) -> np.ndarray:
    """Where the overlay's labels ("#id class score" on a black box, Pillow's default font
    at 14 px, above each instance's box) may be: their text boxes, 3 px wider all round
    and 6 px more to the right (the score printed from the float32 in the message may
    round to another last digit)."""
    from PIL import Image as Canvas
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(Canvas.new("RGB", (shape[1], shape[0])))
    font = ImageFont.load_default(size=14)
    area = np.zeros(shape, bool)
    for instance in instances:
        x, y = int(instance.bbox.x_offset), max(int(instance.bbox.y_offset) - 16, 0)
        text = f"#{instance.track_id} {instance.class_name} {instance.score:.2f}"
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        area[max(int(top) - 4, 0): int(bottom) + 5, max(int(left) - 4, 0): int(right) + 11] = True
    return area


def test_keep_latest_drops_old_frames_and_processes_the_newest(color_node, probe, gate_dir):
    """An overload made exact: color_node's segmenter holds a gated frame until the test
    lets it go; the burst sent meanwhile (reliable input, all delivered) waits in the
    keep-latest slot, so exactly its newest frame is processed next and every other one is
    counted as superseded."""
    topic = "/robot3/instances"
    probe.record(InstanceMaskArray, topic, RELIABLE_QOS)
    probe.record(DiagnosticArray, "/diagnostics", 50)
    publisher = probe.node.create_publisher(Image, "/cam/colors", RELIABLE_QOS)
    probe.wait_for(lambda: publisher.get_subscription_count() > 0, 30, "the node's subscription")
    squares = {0: (10, 20, 16)}
    # Both sides matched and the node idle: a first frame answered, then a report in which
    # every frame received is accounted for.
    _publish_until(probe, publisher, raw_image(draw_squares(64, 64, squares), "rgb8", 8000),
                   topic, 8000)
    since = probe.node.get_clock().now().nanoseconds

    def counts(values: dict) -> tuple[int, int, int]:
        return tuple(int(values[key]) for key in
                     ("frames_received", "frames_processed", "dropped_superseded"))

    def settled(values: dict) -> bool:
        received, processed, superseded = counts(values)
        return received == processed + superseded + int(values["dropped_invalid_input"]) \
            + int(values["dropped_processing_error"])

    received, processed, superseded = counts(_wait_for_diagnostics(
        probe, "robot3", settled, "a report with every frame accounted for", since))
    publisher.publish(raw_image(draw_squares(64, 64, squares, gate=True), "rgb8", 8001))
    probe.wait_for((gate_dir / "entered").exists, FRAME_TIMEOUT, "the gated frame held")
    burst = range(8002, 8010)  # no more than the node's input depth (10)
    for stamp in burst:
        publisher.publish(raw_image(draw_squares(64, 64, squares), "rgb8", stamp))
    _wait_for_diagnostics(probe, "robot3",
                          lambda v: counts(v)[0] == received + 1 + len(burst),
                          "the burst received while the gated frame is held")
    (gate_dir / "open").touch()
    probe.wait_for(lambda: any(m.header.stamp.sec == burst[-1] for m in probe.messages(topic)),
                   FRAME_TIMEOUT, "the newest frame of the burst")
    values = _wait_for_diagnostics(
        probe, "robot3", lambda v: counts(v)[1] == processed + 2 and settled(v),
        "the gated frame and the newest one counted as processed")
    assert counts(values) == (received + 1 + len(burst), processed + 2,
                              superseded + len(burst) - 1)
    answered = [m.header.stamp.sec for m in probe.messages(topic)
                if m.header.stamp.sec in range(8001, burst[-1] + 1)]
    assert answered == [8001, burst[-1]], answered


def test_qos_of_topics_as_configured(model_node, color_node, probe):
    """Reliability and durability as configured (history depth is not sent in discovery)."""
    node = probe.node
    probe.wait_for(lambda: node.get_subscriptions_info_by_topic("/cam/colors"), 30, "subs")
    default_sub = node.get_subscriptions_info_by_topic("/cam/front")[0].qos_profile
    assert default_sub.reliability == ReliabilityPolicy.BEST_EFFORT
    assert default_sub.durability == DurabilityPolicy.VOLATILE
    reliable_sub = node.get_subscriptions_info_by_topic("/cam/colors")[0].qos_profile
    assert reliable_sub.reliability == ReliabilityPolicy.RELIABLE
    for topic in ("/robot1/instances", "/robot1/instance_labels", "/robot1/overlay"):
        publishers = node.get_publishers_info_by_topic(topic)
        assert len(publishers) == 1, topic
        assert publishers[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert publishers[0].node_namespace == "/robot1"


def _call(probe: Probe, client, request, timeout: float = 30.0):
    assert client.wait_for_service(timeout_sec=timeout), client.srv_name
    future = client.call_async(request)
    probe.wait_for(future.done, timeout, f"a response from {client.srv_name}")
    return future.result()


def _set_parameter(probe: Probe, node: str, name: str, value) -> tuple[bool, str]:
    client = probe.node.create_client(SetParameters, f"{node}/set_parameters")
    kind = {float: (ParameterType.PARAMETER_DOUBLE, "double_value"),
            int: (ParameterType.PARAMETER_INTEGER, "integer_value"),
            str: (ParameterType.PARAMETER_STRING, "string_value")}[type(value)]
    param = ParameterMsg(name=name, value=ParameterValue(type=kind[0], **{kind[1]: value}))
    result = _call(probe, client, SetParameters.Request(parameters=[param])).results[0]
    return result.successful, result.reason


def _publish_until(probe: Probe, publisher, msg: Image | CompressedImage, topic: str, stamp: int,
                   resend: bool = False):
    """Publish `msg` and return the output with its stamp. With `resend`, publish again every
    0.5 s until it arrives (a best-effort input may lose the first frames after matching)."""
    def arrived() -> bool:
        return any(m.header.stamp.sec == stamp for m in probe.messages(topic))

    publisher.publish(msg)
    deadline = time.monotonic() + FRAME_TIMEOUT
    while resend and not arrived() and time.monotonic() < deadline:
        time.sleep(0.5)
        if not arrived():
            publisher.publish(msg)
    probe.wait_for(arrived, FRAME_TIMEOUT, f"output for frame {stamp}")
    return next(m for m in probe.messages(topic) if m.header.stamp.sec == stamp)


def test_track_ids_persist_and_reset_clears_tracks(color_node, probe):
    topic = "/robot3/instances"
    probe.record(InstanceMaskArray, topic, RELIABLE_QOS)
    publisher = probe.node.create_publisher(Image, "/cam/colors", RELIABLE_QOS)
    probe.wait_for(lambda: publisher.get_subscription_count() > 0, 30, "the node's subscription")
    # Object 0 moves right, object 1 moves down, object 2 appears at frame 3.
    ids_by_object: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for frame in range(8):
        squares = {0: (10 + 6 * frame, 20, 16), 1: (80, 5 + 5 * frame, 14)}
        if frame >= 3:
            squares[2] = (40, 70, 12)
        out = _publish_until(probe, publisher,
                             raw_image(draw_squares(120, 128, squares), "rgb8", 9000 + frame),
                             topic, 9000 + frame)
        for instance in out.instances:
            mask = decode_instance_mask(instance, out.height, out.width)
            ys, xs = np.nonzero(mask)
            obj = next(i for i, (x, y, s) in squares.items()
                       if x <= xs.mean() < x + s and y <= ys.mean() < y + s)
            ids_by_object[obj].add(instance.track_id)
            assert instance.class_name == ("person", "bicycle", "car")[obj]
            assert instance.hits <= instance.age
    assert all(len(ids) == 1 for ids in ids_by_object.values()), ids_by_object
    before_reset = set().union(*ids_by_object.values())
    assert len(before_reset) == 3

    response = _call(probe, probe.node.create_client(Trigger, "/robot3/metaseg_node/reset"),
                     Trigger.Request())
    assert response.success
    color_node.wait_for_output("reset: model memory and tracks cleared", 10)
    squares = {0: (10, 20, 16), 1: (80, 5, 14)}
    after = set()
    for frame in range(3):  # birth may need more than one frame
        out = _publish_until(probe, publisher,
                             raw_image(draw_squares(120, 128, squares), "rgb8", 9100 + frame),
                             topic, 9100 + frame)
        after |= {instance.track_id for instance in out.instances}
    assert after and min(after) > max(before_reset), (after, before_reset)


def test_parameters_are_validated_and_applied_at_run_time(model_node, color_node, probe):
    node = "/robot1/metaseg_node"
    ok, reason = _set_parameter(probe, node, "score_threshold", 1.5)
    assert not ok and "range" in reason.lower(), reason
    ok, reason = _set_parameter(probe, node, "backend", "tensorrt")
    assert not ok and "read-only" in reason.lower(), reason
    ok, reason = _set_parameter(probe, node, "max_instances", 1)
    assert ok, reason
    probe.record(InstanceMaskArray, "/robot1/instances", RELIABLE_QOS)
    publisher = probe.node.create_publisher(Image, "/cam/front", RELIABLE_QOS)
    probe.wait_for(lambda: publisher.get_subscription_count() > 0, 30, "the node's subscription")
    rgb, _ = scene(64, 80)
    out = _publish_until(probe, publisher, raw_image(rgb, "rgb8", 6800), "/robot1/instances",
                         6800, resend=True)
    assert len(out.instances) == 1
    assert _set_parameter(probe, node, "max_instances", 5)[0]
    # A plugin segmenter without adjustable post-processing refuses clearly.
    ok, reason = _set_parameter(probe, "/robot3/metaseg_node", "max_instances", 3)
    assert not ok and "no adjustable post-processing" in reason, reason


def test_invalid_parameters_stop_the_node_with_a_clear_message(tmp_path: Path, rclpy_context):
    # From the params file, and from a launch argument (which overrides the params file).
    for overrides, launch_args, expected in [
            ({"score_threshold": 1.5}, {}, "score_threshold out of range"),
            ({}, {"backend": "magic"}, "backend='magic' is not one of"),
            ({"tracker.birth_score": 0.1, "tracker.min_score": 0.4}, {},
             "birth_score (0.1) must be >= min_score (0.4)")]:
        node = NodeProcess(tmp_path, overrides, **launch_args)
        try:
            code = node.process.wait(timeout=STARTUP_TIMEOUT)
        finally:
            node.stop()
        output = "\n".join(node.output)
        assert code == 2, output
        assert "invalid configuration" in output and expected in output, output
