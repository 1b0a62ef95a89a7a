"""Everything metaseg_node does, for the plain node and the lifecycle node alike.

    load()   configure: the image decoder, the pipelines (weights and backend once, for every
             camera: export, engine, CUDA graph), /diagnostics and the reset services
    start()  activate: per camera publishers and subscriptions (ros/camera_io.py), the
             processing thread
    stop()   deactivate: subscriptions and publishers gone, thread stopped; the model stays
    unload() cleanup: the pipelines are dropped (GPU memory freed)

Cameras: without the `cameras` parameter the node serves one camera on `image`,
`instances`, ...; with `cameras: [front, down]` it serves each on `<camera>/image`,
`<camera>/instances`, ... with one copy of the weights, one memory ring and one tracker per
camera (inference/cameras.py), track ids unique across cameras.

Path of a frame: a subscription callback (executor thread) only puts the message into its
camera's keep-latest slot and wakes the processing thread. That thread takes the newest
frame of every camera that has one (never waiting for a camera that has none, so a camera
that stops stalls no other), decodes them, resets a camera's memory and tracks when its
stream changed (inference/stream.py), runs them as one batch where the backend allows it,
adds 3-D from the matched depth image (depth.enabled) and publishes. Every frame received
is accounted for: processed, superseded in the slot, invalid, failed or pending at stop.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage
from std_srvs.srv import Trigger

from metaseg_ros.geometry import DepthSettings
from metaseg_ros.image_codec import ImageConversionError
from metaseg_ros.inference.cameras import CameraPipelines, create_camera_pipelines
from metaseg_ros.inference.settings import PipelineSettings
from metaseg_ros.inference.stream import STREAM_PREFIX, StreamSettings
from metaseg_ros.ros.camera_io import CameraIO, Received
from metaseg_ros.ros.conversions import ImageDecoder

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


class MetaSegRuntime:
    """The pipelines and the ROS endpoints of one node, in the four lifecycle steps."""

    def __init__(self, node: Node, params: dict[str, Any]) -> None:
        self.node = node
        self.params = params
        self.errors = ErrorLog(node.get_logger())
        self.pipeline: CameraPipelines | None = None
        self.pipeline_lock = threading.Lock()
        self.cameras: dict[str, CameraIO] = {}
        self._decoder: ImageDecoder | None = None
        self._diagnostics: tuple[Any, Any] | None = None
        self._services: list[Any] = []
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._running = False
        self._next_track_ids: dict[str, int] = {}  # per camera, across cleanup/configure
        self.event_callbacks_type = event_callbacks_type()

    # -- configure / cleanup -------------------------------------------------------------
    def load(self) -> None:
        """Build the decoder, the cameras and their pipelines; /diagnostics and resets."""
        params = self.params
        self._decoder = ImageDecoder(params["image_converter"])
        stream = StreamSettings(**{key.removeprefix(STREAM_PREFIX): value
                                   for key, value in params.items()
                                   if key.startswith(STREAM_PREFIX)})
        depth = DepthSettings.from_parameters(params)
        names = list(params["cameras"]) or [""]
        previous, self.cameras = self.cameras, {}
        for name in names:
            self.cameras[name] = CameraIO(self.node, name, params, stream, depth)
            if name in previous:  # counters continue across cleanup and configure
                self.cameras[name].stats = previous[name].stats
        logger = self.node.get_logger()
        self.pipeline = create_camera_pipelines(
            PipelineSettings.from_parameters(params), names, log=logger.info,
            first_ids=self._next_track_ids, batching=params["camera_batching"],
            ids_per_camera=params["camera_track_ids"] == "per_camera")
        info = self.pipeline.info
        logger.info(f"segmenter: {info.description}; classes: "
                    f"{', '.join(self.pipeline.class_names)}"
                    + (f"; cameras: {', '.join(names)}" if params["cameras"] else ""))
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
        self._services = [self.node.create_service(Trigger, "~/reset", self._reset_callback())]
        if params["cameras"]:
            self._services += [
                self.node.create_service(Trigger, f"~/{name}/reset", self._reset_callback(name))
                for name in names]

    def unload(self) -> None:
        """Drop the pipelines (and their GPU memory), /diagnostics and the resets."""
        if self._diagnostics is not None:
            publisher, timer = self._diagnostics
            self.node.destroy_timer(timer)
            self.node.destroy_publisher(publisher)
            self._diagnostics = None
        for service in self._services:
            self.node.destroy_service(service)
        self._services = []
        with self.pipeline_lock:
            if self.pipeline is not None:  # a reloaded pipeline continues the ids
                self._next_track_ids = self.pipeline.next_track_ids
            self.pipeline = None
        torch = sys.modules.get("torch")  # only when a model was loaded
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- activate / deactivate -----------------------------------------------------------
    def start(self) -> None:
        """Per camera publishers and subscriptions, and the processing thread."""
        params = self.params
        output_qos = make_qos(params["output_reliability"], params["output_depth"])
        input_qos = make_qos(params["input_reliability"], params["input_depth"])
        self._running = True
        self._wake.clear()
        self._worker = threading.Thread(target=self._work, name="metaseg-processing",
                                        daemon=True)
        for camera in self.cameras.values():
            events = self.event_callbacks_type(message_lost=camera.on_message_lost)
            camera.start(output_qos, input_qos, events, self._wake)
        self._worker.start()
        outputs = [camera.output_topic for camera in self.cameras.values()]
        self.node.get_logger().info(
            f"listening on {', '.join(c.input_topic for c in self.cameras.values())} "
            f"({params['input_type']}, {params['input_reliability']}), publishing "
            f"{', '.join(outputs)}")

    def stop(self) -> None:
        """No more input or output; the frames in progress finish, pending ones are counted
        as dropped_at_stop."""
        for camera in self.cameras.values():
            camera.stop()
        self._running = False
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        for camera in self.cameras.values():
            camera.destroy_publishers()

    @property
    def input_topic(self) -> str:
        """The first camera's image topic (the only one without `cameras`)."""
        return next(iter(self.cameras.values())).input_topic

    def _reset_callback(self, name: str | None = None) -> Any:
        """The ~/reset (name None: every camera) or ~/<name>/reset service callback."""
        def reset(_request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
            names = list(self.cameras) if name is None else [name]
            with self.pipeline_lock:
                if self.pipeline is not None:
                    self.pipeline.reset("requested", names)
                for camera in names:
                    self.cameras[camera].guard.forget()
            which = "" if name is None or not self.params["cameras"] else f" of {name}"
            self.node.get_logger().info(f"reset: model memory and tracks{which} cleared")
            response.success = True
            response.message = f"model memory and tracks{which} cleared"
            return response
        return reset

    def publish_diagnostics(self) -> None:
        """One DiagnosticArray with a status per camera: level with reasons, counters,
        rates, resets by cause."""
        pipelines = self.pipeline
        if pipelines is None or self._diagnostics is None:
            return
        array = DiagnosticArray(status=[
            camera.status(pipelines[name].info, dict(pipelines[name].resets))
            for name, camera in self.cameras.items()])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self._diagnostics[0].publish(array)

    # -- processing thread -----------------------------------------------------------------
    def _work(self) -> None:
        while self._running:
            self._wake.wait(timeout=0.5)
            items = self._take({})
            if items and self.params["camera_batching"] and len(self.cameras) > 1:
                self._gather(items)
            if items:
                self._process(items)

    def _take(self, items: dict[str, Received]) -> dict[str, Received]:
        """Add the newest frame of every camera not in `items` that has one."""
        self._wake.clear()  # before taking: a frame put after this wakes us again
        for name, camera in self.cameras.items():
            if name not in items and camera.slot is not None:
                item = camera.slot.take(timeout=0)
                if item is not None:
                    items[name] = item
        return items

    def _gather(self, items: dict[str, Received]) -> None:
        """Wait up to camera_batch_window for the frames of the other live cameras (those
        with input within stream.stale_after), so that frames arriving together run as one
        batch; a camera that stopped is not waited for."""
        deadline = time.monotonic() + self.params["camera_batch_window"]
        while self._running:
            now = time.monotonic()
            stale = self.params["stream.stale_after"]
            missing = [name for name, camera in self.cameras.items() if name not in items
                       and camera.last_input is not None and now - camera.last_input < stale]
            if not missing or now >= deadline:
                return
            self._wake.wait(timeout=deadline - now)
            self._take(items)

    def _decode(self, camera: CameraIO, item: Received) -> np.ndarray | None:
        msg, stamp = item.msg, item.msg.header.stamp
        try:
            if isinstance(msg, CompressedImage):
                return self._decoder.decode_compressed(msg)
            return self._decoder.decode(msg)
        except ImageConversionError as error:
            camera.stats.on_dropped("invalid", time.monotonic())
            where = f" on {camera.input_topic}" if self.params["cameras"] else ""
            self.errors.error(f"dropped frame{where} (stamp {stamp.sec}.{stamp.nanosec:09d}): "
                              f"{error}")
            return None

    def _process(self, items: dict[str, Received]) -> None:
        frames = {}
        for name, item in items.items():
            rgb = self._decode(self.cameras[name], item)
            if rgb is not None:
                frames[name] = rgb
        if not frames:
            return
        try:
            with self.pipeline_lock:
                for name, rgb in frames.items():
                    self._check_stream(name, items[name].msg.header, rgb.shape[:2])
                tracked = self.pipeline.step(frames)
                batch = self.pipeline.last_batch_size
        except Exception as error:  # keep running whatever a frame does to the model
            for name in frames:
                self.cameras[name].stats.on_dropped("failed", time.monotonic())
            self.errors.error(f"processing failed: {error!r}\n{traceback.format_exc()}")
            return
        deadline = time.monotonic() + self.pipeline_depth_wait
        for name, frame in tracked.items():
            camera, item = self.cameras[name], items[name]
            try:
                frame = camera.add_geometry(frame, item.msg.header, deadline)
                camera.publish(frame, frames[name], item.msg.header)
            except Exception as error:
                camera.stats.on_dropped("failed", time.monotonic())
                self.errors.error(f"publishing failed: {error!r}\n{traceback.format_exc()}")
                continue
            camera.stats.batched += int(batch > 1)
            camera.stats.on_processed(item.received_at, time.monotonic(), frame.timings_ms,
                                      len(frame.instances), frame.live_tracks,
                                      frame.memory_fill)

    @property
    def pipeline_depth_wait(self) -> float:
        """Seconds the frames of one step may wait, together, for their depth images."""
        return float(self.params["depth.wait"]) if self.params["depth.enabled"] else 0.0

    def _check_stream(self, name: str, header: Any, size: tuple[int, int]) -> None:
        """Reset the camera's memory and tracks when this frame starts a new stream."""
        stamp = header.stamp
        cause = self.cameras[name].guard.check(stamp.sec * 1_000_000_000 + stamp.nanosec,
                                               header.frame_id, size)
        if cause is None:
            return
        self.pipeline.reset(cause.value, [name])
        where = f" on camera {name}" if name else ""
        self.node.get_logger().warning(
            f"new stream{where} ({cause.value} at stamp {stamp.sec}.{stamp.nanosec:09d}, "
            f"frame_id '{header.frame_id}', {size[1]}x{size[0]}): model memory and tracks "
            "reset")
