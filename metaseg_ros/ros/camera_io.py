"""One camera of metaseg_node: its topics, its keep-latest slot, depth matching, counters.

Topics, relative to the node's namespace, under `<camera>/` when the node serves several
cameras (parameter `cameras`), else without a prefix:

    image | image/compressed (sub)   depth, camera_info (sub, with depth.enabled)
    instances, instance_labels, overlay, image_markers, markers (pub)

The executor thread only stores messages (images in the slot, depth images in a bounded
StampBuffer, the latest camera_info); ros/runtime.py's processing thread decodes, segments
and calls `publish`. Everything outside the instances is computed only while subscribed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import ImageMarker, MarkerArray

from metaseg_ros.geometry import (
    DepthError,
    DepthSettings,
    depth_to_metres,
    frame_geometry,
    intrinsics_from_camera_info,
)
from metaseg_ros.inference.pipeline import PipelineInfo
from metaseg_ros.inference.stream import StreamGuard, StreamSettings
from metaseg_ros.msg import InstanceMaskArray
from metaseg_ros.results import TrackedFrame
from metaseg_ros.ros.diagnostics import NodeStats, build_report
from metaseg_ros.ros.frame_slot import LatestSlot
from metaseg_ros.ros.markers import TrackMarkers, image_marker_msg
from metaseg_ros.ros.messages import frame_to_msg, label_image_msg, overlay_msg
from metaseg_ros.stamp_match import StampBuffer

CAMERA_INFO_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)


def stamp_ns(header: Any) -> int:
    """A header's stamp in nanoseconds."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


@dataclass(frozen=True)
class Received:
    """A message and when it arrived (monotonic seconds)."""

    msg: Image | CompressedImage
    received_at: float


DEPTH_WARN_PERIOD = 5.0  # s between two logs of the same depth problem


class CameraIO:
    """The ROS side of one camera; `name` '' is the node's only camera (no topic prefix)."""

    def __init__(self, node: Node, name: str, params: dict[str, Any],
                 stream: StreamSettings, depth: DepthSettings) -> None:
        self.node = node
        self.name = name
        self.params = params
        self.depth = depth
        self.stats = NodeStats(depth_enabled=depth.enabled)
        self.guard = StreamGuard(stream)
        self.markers = TrackMarkers()
        self.depth_images: StampBuffer[Image] = StampBuffer(depth.buffer_size)
        self.camera_info: CameraInfo | None = None
        self.slot: LatestSlot[Received] | None = None
        self.subscription: Any = None
        self.last_input: float | None = None
        self.active_since = time.monotonic()
        self._depth_subscriptions: list[Any] = []
        self._depth_warned: dict[str, float] = {}
        self._publishers: dict[str, Any] = {}
        self._wake: threading.Event | None = None

    def topic(self, name: str) -> str:
        """A topic of this camera, relative to the node's namespace."""
        return f"{self.name}/{name}" if self.name else name

    @property
    def input_topic(self) -> str:
        """The resolved image topic (while active), else the relative name."""
        if self.subscription is not None:
            return self.subscription.topic_name
        compressed = self.params["input_type"] == "compressed"
        return self.topic("image/compressed" if compressed else "image")

    @property
    def output_topic(self) -> str:
        """The resolved instances topic (while active), else the relative name."""
        publisher = self._publishers.get("instances")
        return publisher.topic_name if publisher is not None else self.topic("instances")

    def start(self, output_qos: QoSProfile, input_qos: QoSProfile, events: Any,
              wake: threading.Event) -> None:
        """Publishers, then the subscriptions; `wake` is set at every image."""
        node = self.node
        self._publishers = {
            "instances": node.create_publisher(InstanceMaskArray, self.topic("instances"),
                                               output_qos),
            "labels": node.create_publisher(Image, self.topic("instance_labels"), output_qos),
            "overlay": node.create_publisher(Image, self.topic("overlay"), output_qos),
            "image_markers": node.create_publisher(ImageMarker, self.topic("image_markers"),
                                                   output_qos),
            "markers": node.create_publisher(MarkerArray, self.topic("markers"), output_qos),
        }
        self.slot, self._wake = LatestSlot(), wake
        compressed = self.params["input_type"] == "compressed"
        self.subscription = node.create_subscription(
            CompressedImage if compressed else Image,
            self.topic("image/compressed" if compressed else "image"), self._on_image,
            input_qos, event_callbacks=events)
        if self.depth.enabled:
            self.depth_images.clear()
            self._depth_subscriptions = [
                node.create_subscription(Image, self.topic("depth"), self._on_depth, input_qos),
                node.create_subscription(CameraInfo, self.topic("camera_info"),
                                         self._on_camera_info, CAMERA_INFO_QOS)]
        self.active_since, self.last_input = time.monotonic(), None

    def stop(self) -> None:
        """Subscriptions gone (a pending frame counted as dropped_at_stop), then the
        publishers once the processing thread has stopped (ros/runtime.py)."""
        for subscription in [self.subscription, *self._depth_subscriptions]:
            if subscription is not None:
                self.node.destroy_subscription(subscription)
        self.subscription, self._depth_subscriptions = None, []
        if self.slot is not None:
            self.stats.dropped_at_stop += int(self.slot.close() is not None)

    def destroy_publishers(self) -> None:
        """After the processing thread has stopped."""
        for publisher in self._publishers.values():
            self.node.destroy_publisher(publisher)
        self._publishers = {}

    # -- executor thread ------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        self.stats.on_received(now)
        self.last_input = now
        slot = self.slot
        if slot is not None and slot.put(Received(msg, now)):
            self.stats.dropped_superseded += 1
        if self._wake is not None:
            self._wake.set()

    def on_message_lost(self, info: Any) -> None:
        """The middleware lost images on their way here."""
        self.stats.on_lost(int(info.total_count_change), time.monotonic())

    def _on_depth(self, msg: Image) -> None:
        self.depth_images.put(stamp_ns(msg.header), msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    # -- processing thread -------------------------------------------------------------
    def add_geometry(self, frame: TrackedFrame, header: Any, deadline: float) -> TrackedFrame:
        """The frame with 3-D from the depth image nearest to its stamp (waiting for it
        until `deadline`, monotonic s); unchanged (no 3-D) without one, counted."""
        if not self.depth.enabled:
            return frame
        depth_msg = self.depth_images.wait_nearest(
            stamp_ns(header), round(self.depth.tolerance * 1e9),
            max(deadline - time.monotonic(), 0.0))
        if depth_msg is None:
            self.stats.depth_unmatched += 1
            return frame
        try:
            if self.camera_info is None:
                raise DepthError(f"no camera_info yet on {self.topic('camera_info')}")
            intrinsics = intrinsics_from_camera_info(self.camera_info, self.depth.intrinsics)
            metres = depth_to_metres(depth_msg)
        except DepthError as error:
            self.stats.depth_invalid += 1
            self._warn_depth(f"{self.topic('depth')}: {error}")
            return frame
        self.stats.depth_matched += 1
        return frame_geometry(frame, metres, intrinsics, self.depth)

    def _warn_depth(self, text: str) -> None:
        """Log each distinct depth problem at most every DEPTH_WARN_PERIOD s (one throttle for
        all would hide a new problem behind an old one); every one is counted in stats."""
        now = time.monotonic()
        if now - self._depth_warned.get(text, -DEPTH_WARN_PERIOD) < DEPTH_WARN_PERIOD:
            return
        if len(self._depth_warned) >= 32:  # texts with varying numbers: keep the dict small
            self._depth_warned.clear()
        self._depth_warned[text] = now
        self.node.get_logger().warning(text)

    def publish(self, frame: TrackedFrame, rgb: np.ndarray, header: Any) -> None:
        """Instances always; the label image, overlay and markers while subscribed (what is
        published of those is counted: /diagnostics `<topic>_published`)."""
        publishers, params, published = self._publishers, self.params, self.stats.published
        publishers["instances"].publish(frame_to_msg(frame, header))
        if params["publish_label_image"] and publishers["labels"].get_subscription_count():
            publishers["labels"].publish(label_image_msg(frame, header, params["label_encoding"]))
            published["instance_labels"] += 1
        if publishers["overlay"].get_subscription_count():
            publishers["overlay"].publish(overlay_msg(rgb, frame, header))
            published["overlay"] += 1
        lifetime = params["marker_lifetime"]
        if publishers["image_markers"].get_subscription_count():
            publishers["image_markers"].publish(image_marker_msg(frame, header, lifetime))
            published["image_markers"] += 1
        if publishers["markers"].get_subscription_count():
            publishers["markers"].publish(self.markers.msg(frame, header, lifetime))
            published["markers"] += 1
        else:
            self.markers.forget()

    def status(self, info: PipelineInfo, resets: dict[str, int]) -> DiagnosticStatus:
        """This camera's DiagnosticStatus: level with reasons, counters, rates, resets."""
        report = build_report(self.stats, info, resets, self.guard.settings.stale_after,
                              self.last_input, self.active_since, self.input_topic)
        label = self.name or "pipeline"
        return DiagnosticStatus(
            level=bytes([report.level]), message=report.message,
            name=f"{self.node.get_fully_qualified_name()}: {label}",
            hardware_id=f"{info.backend or self.params['backend']}:{self.params['device']}",
            values=[KeyValue(key=key, value=value) for key, value in report.values.items()])
