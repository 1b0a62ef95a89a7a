"""The camera frames of any bag, with or without ground truth, for replay.

`image_topic_of` picks the image topic (sensor_msgs/Image or CompressedImage; the only one
when none is named) and `bag_frames` yields its messages in recording order, each with its
index among the topic's messages, log time, deserialized message (header and fields) and raw
CDR bytes, within a window of seconds from the first image and up to a frame count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaseg_ros.data.bag_access import BagReader, RawMessage, TopicInfo
from metaseg_ros.data.bag_format import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, metaseg_typestore
from metaseg_ros.image_codec import compressed_to_rgb, image_to_rgb

IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)


def image_topic_of(reader: BagReader, topic: str | None = None) -> TopicInfo:
    """The image topic named (checked), or the bag's only image topic."""
    if topic:
        info = reader.topics.get(topic)
        if info is None:
            raise ValueError(f"{reader.path}: no topic {topic!r}; the bag has: "
                             f"{reader.describe()}")
        if info.msgtype not in IMAGE_TYPES:
            raise ValueError(f"{reader.path}: topic {topic!r} is {info.msgtype}, not an image "
                             f"({' or '.join(IMAGE_TYPES)})")
        return info
    images = [t for t in reader.topics.values() if t.msgtype in IMAGE_TYPES]
    if not images:
        raise ValueError(f"{reader.path}: no image topic ({' or '.join(IMAGE_TYPES)}); the bag "
                         f"has: {reader.describe()}")
    if len(images) > 1:
        names = ", ".join(sorted(t.name for t in images))
        raise ValueError(f"{reader.path}: {len(images)} image topics ({names}); choose one "
                         f"with --image-topic")
    return images[0]


@dataclass(frozen=True)
class BagFrame:
    """One image message: its index among the topic's messages, log time, message, raw CDR."""

    index: int
    log_time: int
    msg: Any
    raw: RawMessage

    @property
    def header(self) -> Any:
        """The image's std_msgs/Header (rosbags message)."""
        return self.msg.header

    def rgb(self) -> np.ndarray:
        """The decoded (H, W, 3) uint8 RGB image (ImageConversionError when it cannot be)."""
        if self.raw.msgtype == COMPRESSED_IMAGE_TYPE:
            rgb = compressed_to_rgb(self.msg)
        else:
            rgb = image_to_rgb(self.msg)
        # rgb8 data and Pillow's decoded arrays are read-only views; torch wants to own them.
        return rgb if rgb.flags.writeable else rgb.copy()


def bag_frames(reader: BagReader, topic: TopicInfo, start_s: float | None = None,
               end_s: float | None = None, max_frames: int | None = None
               ) -> Iterator[BagFrame]:
    """Image messages of `topic` whose log time lies in [start_s, end_s) seconds after the
    topic's first message, at most `max_frames` of them."""
    store = metaseg_typestore()
    first: int | None = None
    produced = 0
    for index, raw in enumerate(reader.messages([topic.name])):
        if max_frames is not None and produced >= max_frames:
            return
        if first is None:
            first = raw.log_time
        offset = (raw.log_time - first) / 1e9
        if start_s is not None and offset < start_s:
            continue
        if end_s is not None and offset >= end_s:
            return
        yield BagFrame(index, raw.log_time, store.deserialize_cdr(raw.data, raw.msgtype), raw)
        produced += 1
