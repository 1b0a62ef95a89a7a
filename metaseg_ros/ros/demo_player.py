"""What `make demo` does over DDS: play a bag's images to a running metaseg_node, one after
the other's answer, record what it publishes, and write that as a results bag.

The node runs in its own process exactly as the launch file starts it (cli/demo.py); this
module is the camera and the recorder (rclpy). Recorded messages are written with `rosbags`
as the CDR bytes rclpy serialized, at the log time of the input image they answer.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaseg_ros.data.bag_access import BagReader
from metaseg_ros.data.bag_format import IMAGE_TYPE, metaseg_typestore

INSTANCES_TYPE = "metaseg_ros/msg/InstanceMaskArray"


@dataclass
class Exchange:
    """One input image and the node's answer to it."""

    log_time: int
    image: Any
    instances: Any = None
    overlay: Any = None
    round_trip_ms: float = 0.0


@dataclass
class Recording:
    """The exchanges of a run, in input order, and the topics they came on."""

    image_topic: str
    instances_topic: str
    overlay_topic: str
    exchanges: list[Exchange] = field(default_factory=list)


def _spin_until(rclpy: Any, node: Any, condition: Callable[[], bool], timeout: float,
                child: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        rclpy.spin_once(node, timeout_sec=0.05)
        if condition():
            return True
    return False


def play_and_record(bag: Path, image_topic: str, namespace: str, child: subprocess.Popen,
                    timeout: float, on_answer: Callable[[Exchange], None] | None = None
                    ) -> Recording:
    """Publish the bag's images on `image_topic` (reliable), wait for each answer on
    <namespace>/instances and /overlay; RuntimeError when the node does not answer."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from metaseg_ros.msg import InstanceMaskArray

    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    recording = Recording(image_topic, f"{prefix}/instances", f"{prefix}/overlay")
    with BagReader(bag) as reader:
        recording.exchanges = [Exchange(raw.log_time, deserialize_message(bytes(raw.data), Image))
                               for raw in reader.messages([image_topic])]
    answers: dict[str, dict[tuple[int, int], Any]] = {"instances": {}, "overlay": {}}

    def keep(kind: str) -> Callable[[Any], None]:
        return lambda msg: answers[kind].__setitem__(
            (msg.header.stamp.sec, msg.header.stamp.nanosec), msg)

    rclpy.init()
    node = rclpy.create_node("metaseg_demo_player")
    try:
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(InstanceMaskArray, recording.instances_topic,
                                 keep("instances"), reliable)
        node.create_subscription(Image, recording.overlay_topic, keep("overlay"), reliable)
        publisher = node.create_publisher(Image, image_topic, reliable)

        def connected() -> bool:
            return (publisher.get_subscription_count() > 0
                    and node.count_publishers(recording.instances_topic) > 0
                    and node.count_publishers(recording.overlay_topic) > 0)

        if not _spin_until(rclpy, node, connected, timeout, child):
            raise RuntimeError("the node did not come up")
        _spin_until(rclpy, node, lambda: False, 1.0, child)  # let the node discover us too
        for exchange in recording.exchanges:
            stamp = (exchange.image.header.stamp.sec, exchange.image.header.stamp.nanosec)
            started = time.monotonic()
            publisher.publish(exchange.image)
            if not _spin_until(rclpy, node, lambda s=stamp: all(s in a for a in answers.values()),
                               timeout, child):
                raise RuntimeError(f"no answer for the image of stamp {stamp} within "
                                   f"{timeout:.0f} s")
            exchange.round_trip_ms = (time.monotonic() - started) * 1e3
            exchange.instances = answers["instances"][stamp]
            exchange.overlay = answers["overlay"][stamp]
            if on_answer is not None:
                on_answer(exchange)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return recording


def write_recording(recording: Recording, path: Path, storage: str = "mcap") -> Path:
    """The node's messages as a rosbag2 (instances and overlay, at the input log times)."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = metaseg_typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as bag:
        instances = bag.add_connection(recording.instances_topic, INSTANCES_TYPE,
                                       typestore=store)
        overlay = bag.add_connection(recording.overlay_topic, IMAGE_TYPE, typestore=store)
        for exchange in recording.exchanges:
            bag.write(instances, exchange.log_time, serialize_message(exchange.instances))
            bag.write(overlay, exchange.log_time, serialize_message(exchange.overlay))
    return path
