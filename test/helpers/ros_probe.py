"""A real rclpy node for tests: publishes inputs, records what arrives, calls services."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile


class Probe:
    """Owns a node spinning in a background thread; thread-safe message recording."""

    def __init__(self, name: str = "test_probe") -> None:
        self.node = Node(name)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._lock = threading.Lock()
        self.received: dict[str, list[Any]] = defaultdict(list)
        self._recorded: dict[str, type] = {}
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def record(self, msg_type: type, topic: str, qos: QoSProfile | int = 10) -> None:
        """Keep every message arriving on `topic` in self.received[topic] (once per topic: a
        second call for the same topic keeps the first subscription, so nothing is doubled)."""
        if topic in self._recorded:
            if self._recorded[topic] is not msg_type:
                raise ValueError(f"{topic} is already recorded as {self._recorded[topic]}")
            return
        self._recorded[topic] = msg_type

        def store(msg: Any) -> None:
            with self._lock:
                self.received[topic].append(msg)
        self.node.create_subscription(msg_type, topic, store, qos)

    def messages(self, topic: str) -> list[Any]:
        """A copy of what arrived so far on `topic`."""
        with self._lock:
            return list(self.received[topic])

    def wait_for(self, condition: Callable[[], bool], timeout: float,
                 what: str = "condition") -> None:
        """Poll `condition` until true; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def close(self) -> None:
        """Stop spinning and destroy the node."""
        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
