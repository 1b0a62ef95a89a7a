"""metaseg_node: camera images in, tracked instance masks out.

Path of a frame: the subscription callback (executor thread) only puts the message into
a keep-latest slot; a processing thread takes the newest message, decodes it, runs the
perception pipeline (MetaSegmenter + tracker) and publishes InstanceMaskArray, plus the
label image and the overlay while they have subscribers. Frames replaced in the slot
before being processed, undecodable frames and frames whose processing failed are
counted and reported on /diagnostics; the node keeps running.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from metaseg_ros.image_codec import ImageConversionError
from metaseg_ros.inference.builder import create_pipeline
from metaseg_ros.inference.settings import PipelineSettings
from metaseg_ros.msg import InstanceMaskArray
from metaseg_ros.ros.conversions import ImageDecoder
from metaseg_ros.ros.frame_slot import LatestSlot
from metaseg_ros.ros.messages import frame_to_msg, label_image_msg, overlay_msg
from metaseg_ros.ros.parameters import (
    POSTPROCESS_PARAMETERS,
    declare_parameters,
    read_parameters,
    validate,
)

NODE_NAME = "metaseg_node"
# Parameters the running pipeline applies without a restart (besides publish_label_image).
LIVE_POSTPROCESS = frozenset(spec.name for spec in POSTPROCESS_PARAMETERS)


def make_qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last QoS with the given reliability ('best_effort' or 'reliable')."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
        reliability=(ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
                     else ReliabilityPolicy.RELIABLE))


@dataclass
class NodeStats:
    """Counters reported on /diagnostics (bounded: a fixed window of latencies)."""

    received: int = 0
    processed: int = 0
    dropped_superseded: int = 0
    dropped_invalid: int = 0
    dropped_failed: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    processed_times: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    # Per pipeline stage (PerceptionPipeline timings: 'segment', 'track'), same window.
    stage_ms: dict[str, deque[float]] = field(default_factory=dict)
    instances_last_frame: int = 0
    live_tracks: int = -1

    def record_frame(self, timings_ms: dict[str, float], instances: int,
                     live_tracks: int) -> None:
        """One processed frame's stage timings and track counts."""
        for stage, ms in timings_ms.items():
            self.stage_ms.setdefault(stage, deque(maxlen=200)).append(ms)
        self.instances_last_frame = instances
        self.live_tracks = live_tracks

    def as_key_values(self) -> list[KeyValue]:
        """The counters and latency/rate summaries as diagnostic key-values."""
        values = {
            "frames_received": self.received,
            "frames_processed": self.processed,
            "dropped_superseded": self.dropped_superseded,
            "dropped_invalid_input": self.dropped_invalid,
            "dropped_processing_error": self.dropped_failed,
        }
        if self.latencies_ms:
            values["latency_ms_median"] = round(statistics.median(self.latencies_ms), 2)
        if len(self.processed_times) > 1:
            span = self.processed_times[-1] - self.processed_times[0]
            values["output_rate_hz"] = round((len(self.processed_times) - 1) / span, 2) \
                if span > 0 else 0.0
        # A snapshot: the processing thread adds a stage's window at its first frame.
        for stage, times in list(self.stage_ms.items()):
            values[f"{stage}_ms_median"] = round(statistics.median(times), 3)
        if self.processed:
            values["instances_last_frame"] = self.instances_last_frame
        if self.live_tracks >= 0:
            values["live_tracks"] = self.live_tracks
        return [KeyValue(key=key, value=str(value)) for key, value in values.items()]


class _ErrorLog:
    """Logs each input error once; identical errors repeating within `window` s are summed."""

    def __init__(self, logger: Any, window: float = 5.0) -> None:
        self._logger = logger
        self._window = window
        self._last_text = ""
        self._last_time = 0.0
        self._suppressed = 0

    def error(self, text: str) -> None:
        now = time.monotonic()
        if text == self._last_text and now - self._last_time < self._window:
            self._suppressed += 1
            return
        suffix = f" ({self._suppressed} identical errors before suppressed)" \
            if self._suppressed else ""
        self._logger.error(text + suffix)
        self._last_text, self._last_time, self._suppressed = text, now, 0


@dataclass(frozen=True)
class _Received:
    msg: Image | CompressedImage
    received_at: float


class MetaSegNode(Node):
    """ROS 2 node running MetaSegmenter with persistent tracks on a camera stream."""

    def __init__(self, post_set_callbacks: bool | None = None, **node_kwargs: Any) -> None:
        """post_set_callbacks: apply live parameter changes in a post-set callback (rclpy on
        Iron and newer); False selects the fallback for Humble's rclpy, which has none: the
        changes are applied from the on-set callback once they are validated. None: detect."""
        super().__init__(NODE_NAME, **node_kwargs)
        declare_parameters(self)
        params = read_parameters(self)
        self._params = params
        self._stats = NodeStats()
        self._errors = _ErrorLog(self.get_logger())
        self._decoder = ImageDecoder(params["image_converter"])

        self._pipeline = create_pipeline(PipelineSettings.from_parameters(params),
                                         log=self.get_logger().info)
        self._pipeline_lock = threading.Lock()
        self._describe_model()
        if post_set_callbacks is None:
            post_set_callbacks = hasattr(self, "add_post_set_parameters_callback")
        if post_set_callbacks:  # validate first (no side effects), apply once accepted
            self.add_on_set_parameters_callback(self._validate_live_change)
            self.add_post_set_parameters_callback(self._apply_live_change)
        else:
            self.add_on_set_parameters_callback(self._validate_and_apply_live_change)

        output_qos = make_qos(params["output_reliability"], params["output_depth"])
        self._instances_pub = self.create_publisher(InstanceMaskArray, "instances", output_qos)
        self._labels_pub = self.create_publisher(Image, "instance_labels", output_qos)
        self._overlay_pub = self.create_publisher(Image, "overlay", output_qos)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        input_qos = make_qos(params["input_reliability"], params["input_depth"])
        if params["input_type"] == "compressed":
            self._image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, input_qos)
        else:
            self._image_sub = self.create_subscription(Image, "image", self._on_image, input_qos)
        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset)
        self._diagnostics_timer = self.create_timer(params["diagnostics_period"],
                                                    self._publish_diagnostics)

        self._slot: LatestSlot[_Received] = LatestSlot()
        self._worker = threading.Thread(target=self._work, name="metaseg-processing", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"listening on {self._image_sub.topic_name} ({params['input_type']}, "
            f"{params['input_reliability']}), publishing {self._instances_pub.topic_name}")

    # -- callbacks on the executor thread --------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        self._stats.received += 1
        if self._slot.put(_Received(msg, time.monotonic())):
            self._stats.dropped_superseded += 1

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._pipeline_lock:
            self._pipeline.reset()
        self.get_logger().info("reset: model memory and tracks cleared")
        response.success = True
        response.message = "model memory and tracks cleared"
        return response

    def _validate_live_change(self, parameters: list[Parameter]) -> SetParametersResult:
        """On-set callback: whether the pipeline can take these values (no side effects);
        ranges and choices are checked by parameters.validate."""
        if not self._pipeline.adjustable_postprocess and any(
                param.name in LIVE_POSTPROCESS for param in parameters):
            return SetParametersResult(
                successful=False, reason="this segmenter has no adjustable post-processing")
        return SetParametersResult(successful=True)

    def _apply_live_change(self, parameters: list[Parameter]) -> None:
        """Post-set callback: the accepted values take effect from the next frame."""
        changed = {param.name: param.value for param in parameters}
        self._params = {**self._params, **changed}
        if changed.keys() & LIVE_POSTPROCESS:
            postprocess = PipelineSettings.from_parameters(self._params).postprocess
            with self._pipeline_lock:
                self._pipeline.set_postprocess(postprocess)

    def _validate_and_apply_live_change(self, parameters: list[Parameter]
                                        ) -> SetParametersResult:
        """Humble's fallback (no post-set callbacks): validate everything, then apply."""
        for result in (validate(parameters), self._validate_live_change(parameters)):
            if not result.successful:
                return result
        self._apply_live_change(parameters)
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        info = self._pipeline.info
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: pipeline",
                                  hardware_id=f"{self._params['backend']}:{self._params['device']}")
        stats = self._stats
        dropped = stats.dropped_invalid + stats.dropped_failed
        if info.random_weights:
            status.level, status.message = DiagnosticStatus.WARN, "running with random weights"
        elif dropped:
            status.level = DiagnosticStatus.WARN
            status.message = f"{dropped} frames dropped (invalid input or processing error)"
        else:
            status.level, status.message = DiagnosticStatus.OK, "ok"
        status.values = stats.as_key_values()
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    # -- processing thread -------------------------------------------------------------
    def _work(self) -> None:
        while not self._slot.closed:
            item = self._slot.take(timeout=0.5)
            if item is not None:
                self._process(item)

    def _process(self, item: _Received) -> None:
        msg = item.msg
        try:
            if isinstance(msg, CompressedImage):
                rgb = self._decoder.decode_compressed(msg)
            else:
                rgb = self._decoder.decode(msg)
        except ImageConversionError as error:
            self._stats.dropped_invalid += 1
            self._errors.error(f"dropped frame (stamp {msg.header.stamp.sec}."
                               f"{msg.header.stamp.nanosec:09d}): {error}")
            return
        try:
            with self._pipeline_lock:
                frame = self._pipeline.step(rgb)
            self._instances_pub.publish(frame_to_msg(frame, msg.header))
            if self._params["publish_label_image"] and self._labels_pub.get_subscription_count():
                self._labels_pub.publish(label_image_msg(frame, msg.header))
            if self._overlay_pub.get_subscription_count():
                self._overlay_pub.publish(overlay_msg(rgb, frame, msg.header))
        except Exception as error:  # keep running whatever a frame does to the model
            self._stats.dropped_failed += 1
            self._errors.error(f"processing failed: {error!r}\n{traceback.format_exc()}")
            return
        now = time.monotonic()
        self._stats.processed += 1
        self._stats.latencies_ms.append((now - item.received_at) * 1e3)
        self._stats.processed_times.append(now)
        self._stats.record_frame(frame.timings_ms, len(frame.instances), frame.live_tracks)

    def _describe_model(self) -> None:
        info = self._pipeline.info
        self.get_logger().info(f"segmenter: {info.description}; classes: "
                               f"{', '.join(self._pipeline.class_names)}")
        if info.random_weights:
            self.get_logger().warning(
                "MetaSegmenter runs with RANDOM weights (no checkpoint given and none shipped): "
                "the architecture runs end to end but the masks are meaningless")

    def shutdown(self) -> None:
        """Stop the processing thread (after the frame in progress)."""
        self._slot.close()
        self._worker.join(timeout=10.0)


def main(args: list[str] | None = None) -> int:
    """Entry point of the `metaseg_node` executable; exit code 2 on bad parameters."""
    rclpy.init(args=args)
    node = None
    try:
        node = MetaSegNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ParameterException, ValueError) as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"invalid configuration: {error}")
        return 2
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
