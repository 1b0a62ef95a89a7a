"""The results bag of a replay: what the node would have published, at the input's times.

A rosbag2 (MCAP or sqlite3, written with `rosbags`, no rclpy) with the node's topics under
`namespace`: ``instances`` (InstanceMaskArray with the input image's header), optionally
``instance_labels`` (16UC1 or 32SC1, the node's `label_encoding`) and ``overlay`` (rgb8),
and the input images themselves (their CDR bytes copied unchanged) on their own topic.
Every message is logged at the log time of its input image, so `ros2 bag play`,
Foxglove, rosbags and mcap-ros2-support show the results in step with the camera. Message
content comes from metaseg_ros.message_content, the code the node's messages come from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metaseg_ros.data.bag_access import RawMessage
from metaseg_ros.data.bag_format import IMAGE_TYPE, STORAGES, metaseg_typestore
from metaseg_ros.message_content import (
    INSTANCE_ARRAY_TYPE,
    MessageTypes,
    instance_array_msg,
    label_image_msg,
    rgb_image_msg,
)
from metaseg_ros.results import TrackedFrame


def _uint8_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def node_topic(namespace: str, name: str) -> str:
    """A node topic's absolute name under a namespace ('' = the root)."""
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{prefix}/{name}"


class ResultsBagWriter:
    """Writes one results bag; use as a context manager (the bag is closed on any exit)."""

    def __init__(self, path: str | Path, storage: str = "mcap", namespace: str = "",
                 image_topic: str | None = None, image_type: str = IMAGE_TYPE,
                 labels: bool = False, overlay: bool = False,
                 label_encoding: str = "16UC1") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage {storage!r} not in {STORAGES}")
        self.path = Path(path)
        self.label_encoding = label_encoding
        self.store = metaseg_typestore()
        self.types = MessageTypes.from_names(self.store.types, _uint8_array)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self._writer.open()
        add = self._writer.add_connection
        self.topics = {"instances": node_topic(namespace, "instances")}
        self._instances = add(self.topics["instances"], INSTANCE_ARRAY_TYPE, typestore=self.store)
        self._labels = self._overlay = self._images = None
        if labels:
            self.topics["instance_labels"] = node_topic(namespace, "instance_labels")
            self._labels = add(self.topics["instance_labels"], IMAGE_TYPE, typestore=self.store)
        if overlay:
            self.topics["overlay"] = node_topic(namespace, "overlay")
            self._overlay = add(self.topics["overlay"], IMAGE_TYPE, typestore=self.store)
        if image_topic:
            self.topics["images"] = image_topic
            self._images = add(image_topic, image_type, typestore=self.store)
        self.messages = 0

    def _write(self, connection: Any, log_time: int, msg: Any, msgtype: str) -> None:
        self._writer.write(connection, log_time, self.store.serialize_cdr(msg, msgtype))
        self.messages += 1

    def write(self, log_time: int, header: Any, frame: TrackedFrame,
              image: RawMessage | None = None, overlay_rgb: np.ndarray | None = None) -> None:
        """One frame's messages: the input image (raw), instances, label image, overlay."""
        if self._images is not None and image is not None:
            self._writer.write(self._images, log_time, bytes(image.data))
            self.messages += 1
        self._write(self._instances, log_time, instance_array_msg(frame, header, self.types),
                    INSTANCE_ARRAY_TYPE)
        if self._labels is not None:
            self._write(self._labels, log_time, label_image_msg(frame, header, self.types,
                                                                self.label_encoding),
                        IMAGE_TYPE)
        if self._overlay is not None and overlay_rgb is not None:
            self._write(self._overlay, log_time, rgb_image_msg(overlay_rgb, header, self.types),
                        IMAGE_TYPE)

    def close(self) -> None:
        """Finish the bag (metadata.yaml, MCAP summary); safe to call twice."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ResultsBagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
