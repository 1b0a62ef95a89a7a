"""Everything metaseg_node does, for the plain node and the lifecycle node alike.

    load()   configure: the image decoder, the pipeline (weights, backend: export, engine,
             CUDA graph), /diagnostics and ~/reset
    start()  activate: publishers, the image subscription, the processing thread
    stop()   deactivate: subscription and publishers gone, thread stopped; the model stays
    unload() cleanup: the pipeline is dropped (GPU memory freed)

Path of a frame: the subscription callback (executor thread) only puts the message into a
keep-latest slot; the processing thread takes the newest, decodes it, resets the pipeline
when the stream changed under it (inference/stream.py), runs the pipeline and publishes
InstanceMaskArray, plus the label image and the overlay while they have subscribers.
Every frame received is accounted for: processed, superseded in the slot, invalid, failed
or pending at stop (ros/diagnostics.py reports them).
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from metaseg_ros.image_codec import ImageConversionError
from metaseg_ros.inference.pipeline import PerceptionPipeline
from metaseg_ros.inference.plugin import plugin_pipeline
from metaseg_ros.inference.settings import PipelineSettings
from metaseg_ros.inference.stream import STREAM_PREFIX, StreamGuard, StreamSettings
from metaseg_ros.msg import InstanceMaskArray
from metaseg_ros.ros.conversions import ImageDecoder
from metaseg_ros.ros.diagnostics import NodeStats, build_report
from metaseg_ros.ros.frame_slot import LatestSlot
from metaseg_ros.ros.messages import frame_to_msg, label_image_msg, overlay_msg

# Where rclpy keeps SubscriptionEventCallbacks: rclpy.event_handler since Iron (rclpy 4.x);
# Humble's rclpy 3.3 has only rclpy.qos_event (docs/humble.md).
EVENT_MODULES = ("rclpy.event_handler", "rclpy.qos_event")


def event_callbacks_type(modules: tuple[str, ...] = EVENT_MODULES) -> type:
    """SubscriptionEventCallbacks from the first of `modules` that rclpy has (a test selects
    Humble's rclpy.qos_event explicitly)."""
    for name in modules:
        try:
            return importlib.import_module(name).SubscriptionEventCallbacks
        except ImportError:
            continue
    raise ImportError(f"rclpy has none of {', '.join(modules)}")


def build_pipeline(settings: PipelineSettings, log: Any, first_track_id: int
                   ) -> PerceptionPipeline:
    """A segmenter plugin's pipeline (no torch needed), else MetaSegmenter's from the
    builder (imported only then: it imports torch)."""
    if settings.model.segmenter:
        return plugin_pipeline(settings, first_track_id)
    from metaseg_ros.inference.builder import create_pipeline

    return create_pipeline(settings, log=log, first_track_id=first_track_id)


def make_qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last QoS with the given reliability ('best_effort' or 'reliable')."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
        reliability=(ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
                     else ReliabilityPolicy.RELIABLE))


class ErrorLog:
    """Logs each error once; identical errors repeating within `window` s are summed."""

    def __init__(self, logger: Any, window: float = 5.0) -> None:
        self._logger = logger
        self._window = window
        self._last_text = ""
        self._last_time = 0.0
        self._suppressed = 0

    def error(self, text: str) -> None:
        """Log `text` unless it repeats the previous error within the window."""
        now = time.monotonic()
        if text == self._last_text and now - self._last_time < self._window:
            self._suppressed += 1
            return
        suffix = f" ({self._suppressed} identical errors before suppressed)" \
            if self._suppressed else ""
        self._logger.error(text + suffix)
        self._last_text, self._last_time, self._suppressed = text, now, 0


@dataclass(frozen=True)
class Received:
    """A message and when it arrived (monotonic seconds)."""

    msg: Image | CompressedImage
    received_at: float


class MetaSegRuntime:
    """The pipeline and the ROS endpoints of one node, in the four lifecycle steps."""

    def __init__(self, node: Node, params: dict[str, Any]) -> None:
        self.node = node
        self.params = params
        self.stats = NodeStats()
        self.errors = ErrorLog(node.get_logger())
        self.pipeline: PerceptionPipeline | None = None
        self.pipeline_lock = threading.Lock()
        self.guard = StreamGuard()
        self.last_input: float | None = None
        self.active_since = time.monotonic()
        self._decoder: ImageDecoder | None = None
        self._publishers: dict[str, Any] = {}
        self._subscription: Any = None
        self._diagnostics: tuple[Any, Any] | None = None
        self._reset_service: Any = None
        self._slot: LatestSlot[Received] | None = None
        self._worker: threading.Thread | None = None
        self._next_track_id = 1
        self.event_callbacks_type = event_callbacks_type()

    # -- configure / cleanup -------------------------------------------------------------
    def load(self) -> None:
        """Build the decoder and the pipeline; start /diagnostics and ~/reset."""
        params = self.params
        self._decoder = ImageDecoder(params["image_converter"])
        self.guard = StreamGuard(StreamSettings(
            **{key.removeprefix(STREAM_PREFIX): value for key, value in params.items()
               if key.startswith(STREAM_PREFIX)}))
        logger = self.node.get_logger()
        self.pipeline = build_pipeline(PipelineSettings.from_parameters(params), logger.info,
                                       self._next_track_id)
        info = self.pipeline.info
        logger.info(f"segmenter: {info.description}; classes: "
                    f"{', '.join(self.pipeline.class_names)}")
        if info.random_weights:
            logger.warning("MetaSegmenter runs with RANDOM weights (no checkpoint given and none "
                           "shipped): the architecture runs end to end but the masks are "
                           "meaningless")
        publisher = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Wall-clock period: with use_sim_time a paused or looping /clock must not stop the
        # health report (the stale-input ERROR is exactly for such times).
        timer = self.node.create_timer(params["diagnostics_period"], self.publish_diagnostics,
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._diagnostics = (publisher, timer)
        self._reset_service = self.node.create_service(Trigger, "~/reset", self._on_reset)

    def unload(self) -> None:
        """Drop the pipeline (and its GPU memory), /diagnostics and ~/reset."""
        if self._diagnostics is not None:
            publisher, timer = self._diagnostics
            self.node.destroy_timer(timer)
            self.node.destroy_publisher(publisher)
            self._diagnostics = None
        if self._reset_service is not None:
            self.node.destroy_service(self._reset_service)
            self._reset_service = None
        with self.pipeline_lock:
            if self.pipeline is not None:  # a reloaded pipeline continues the ids
                self._next_track_id = self.pipeline.tracker.next_track_id
            self.pipeline = None
        torch = sys.modules.get("torch")  # only when a model was loaded
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- activate / deactivate -----------------------------------------------------------
    def start(self) -> None:
        """Publishers, the image subscription and the processing thread."""
        params = self.params
        output_qos = make_qos(params["output_reliability"], params["output_depth"])
        self._publishers = {
            "instances": self.node.create_publisher(InstanceMaskArray, "instances", output_qos),
            "labels": self.node.create_publisher(Image, "instance_labels", output_qos),
            "overlay": self.node.create_publisher(Image, "overlay", output_qos),
        }
        self._slot = LatestSlot()
        self._worker = threading.Thread(target=self._work, args=(self._slot,),
                                        name="metaseg-processing", daemon=True)
        self._worker.start()
        input_qos = make_qos(params["input_reliability"], params["input_depth"])
        events = self.event_callbacks_type(message_lost=self._on_message_lost)
        compressed = params["input_type"] == "compressed"
        self._subscription = self.node.create_subscription(
            CompressedImage if compressed else Image, "image/compressed" if compressed else "image",
            self._on_image, input_qos, event_callbacks=events)
        self.active_since, self.last_input = time.monotonic(), None
        self.node.get_logger().info(
            f"listening on {self._subscription.topic_name} ({params['input_type']}, "
            f"{params['input_reliability']}), publishing "
            f"{self._publishers['instances'].topic_name}")

    def stop(self) -> None:
        """No more input or output; the frame in progress finishes, a pending one is
        counted as dropped_at_stop."""
        if self._subscription is not None:
            self.node.destroy_subscription(self._subscription)
            self._subscription = None
        if self._slot is not None:
            pending = self._slot.close()
            self.stats.dropped_at_stop += int(pending is not None)
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        for publisher in self._publishers.values():
            self.node.destroy_publisher(publisher)
        self._publishers = {}

    @property
    def input_topic(self) -> str:
        """The resolved image topic (while active), else the relative name."""
        if self._subscription is not None:
            return self._subscription.topic_name
        return "image/compressed" if self.params["input_type"] == "compressed" else "image"

    # -- executor thread ------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        self.stats.on_received(now)
        self.last_input = now
        slot = self._slot
        if slot is not None and slot.put(Received(msg, now)):
            self.stats.dropped_superseded += 1

    def _on_message_lost(self, info: Any) -> None:
        self.stats.on_lost(int(info.total_count_change), time.monotonic())

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response
                  ) -> Trigger.Response:
        with self.pipeline_lock:
            if self.pipeline is not None:
                self.pipeline.reset("requested")
            self.guard.forget()
        self.node.get_logger().info("reset: model memory and tracks cleared")
        response.success = True
        response.message = "model memory and tracks cleared"
        return response

    def publish_diagnostics(self) -> None:
        """One DiagnosticArray: level with reasons, counters, rates, resets by cause."""
        pipeline = self.pipeline
        if pipeline is None or self._diagnostics is None:
            return
        report = build_report(self.stats, pipeline.info, dict(pipeline.resets),
                              self.guard.settings.stale_after, self.last_input,
                              self.active_since, self.input_topic)
        status = DiagnosticStatus(
            level=bytes([report.level]), message=report.message,
            name=f"{self.node.get_fully_qualified_name()}: pipeline",
            hardware_id=f"{pipeline.info.backend or self.params['backend']}:"
                        f"{self.params['device']}",
            values=[KeyValue(key=key, value=value) for key, value in report.values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self._diagnostics[0].publish(array)

    # -- processing thread -----------------------------------------------------------------
    def _work(self, slot: LatestSlot[Received]) -> None:
        while not slot.closed:
            item = slot.take(timeout=0.5)
            if item is not None:
                self._process(item)

    def _process(self, item: Received) -> None:
        msg, stamp = item.msg, item.msg.header.stamp
        try:
            if isinstance(msg, CompressedImage):
                rgb = self._decoder.decode_compressed(msg)
            else:
                rgb = self._decoder.decode(msg)
        except ImageConversionError as error:
            self.stats.on_dropped("invalid", time.monotonic())
            self.errors.error(f"dropped frame (stamp {stamp.sec}.{stamp.nanosec:09d}): {error}")
            return
        try:
            with self.pipeline_lock:
                pipeline = self.pipeline
                cause = self.guard.check(stamp.sec * 1_000_000_000 + stamp.nanosec,
                                         msg.header.frame_id, rgb.shape[:2])
                if cause is not None:
                    pipeline.reset(cause.value)
                    self.node.get_logger().warning(
                        f"new stream ({cause.value} at stamp {stamp.sec}.{stamp.nanosec:09d}, "
                        f"frame_id '{msg.header.frame_id}', {rgb.shape[1]}x{rgb.shape[0]}): "
                        "model memory and tracks reset")
                frame = pipeline.step(rgb)
            self._publishers["instances"].publish(frame_to_msg(frame, msg.header))
            if self.params["publish_label_image"] and \
                    self._publishers["labels"].get_subscription_count():
                self._publishers["labels"].publish(label_image_msg(frame, msg.header))
            if self._publishers["overlay"].get_subscription_count():
                self._publishers["overlay"].publish(overlay_msg(rgb, frame, msg.header))
        except Exception as error:  # keep running whatever a frame does to the model
            self.stats.on_dropped("failed", time.monotonic())
            self.errors.error(f"processing failed: {error!r}\n{traceback.format_exc()}")
            return
        self.stats.on_processed(item.received_at, time.monotonic(), frame.timings_ms,
                                len(frame.instances), frame.live_tracks, frame.memory_fill)
