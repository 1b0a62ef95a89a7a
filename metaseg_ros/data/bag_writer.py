"""Writing videos (any VideoSource) as ROS 2 bags with InstanceMaskArray ground truth, in the
format data/bag_reader.py reads (see data/bag_format.py). Uses `rosbags`; no rclpy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metaseg_ros.data.bag_format import (
    COMPRESSED_IMAGE_TYPE,
    DEFAULT_GT_TOPIC,
    DEFAULT_IMAGE_TOPIC,
    GROUND_TRUTH_TYPE,
    IMAGE_TYPE,
    STORAGES,
    metaseg_typestore,
)
from metaseg_ros.data.types import VideoSource
from metaseg_ros.image_codec import encode_compressed, rgb_to_image_fields
from metaseg_ros.masks import encode_rle
from metaseg_ros.message_content import POINT_TYPE, no_geometry_fields
from metaseg_ros.results import BoundingBox


@dataclass(frozen=True)
class BagWriteOptions:
    """Timing and naming of written bags: frame n of a video has header stamp and log time
    start_time_ns + n / frame_rate seconds; headers carry frame_id."""

    frame_rate: float = 10.0
    start_time_ns: int = 1_700_000_000 * 1_000_000_000
    frame_id: str = "camera"
    frames_per_read: int = 16  # frames loaded from the source at a time

    def __post_init__(self) -> None:
        if self.frame_rate <= 0 or self.frames_per_read < 1 or self.start_time_ns < 0:
            raise ValueError("need frame_rate > 0, frames_per_read >= 1, start_time_ns >= 0")


class _VideoBagWriter:
    """Writes the frames of one video into one open rosbags Writer."""

    def __init__(self, writer: Any, image_topic: str, gt_topic: str, image_format: str | None,
                 class_names: Sequence[str], options: BagWriteOptions) -> None:
        self.store = metaseg_typestore()
        self.types = self.store.types
        image_type = COMPRESSED_IMAGE_TYPE if image_format else IMAGE_TYPE
        self.image_type = image_type
        self.image_format = image_format
        self.image_connection = writer.add_connection(image_topic, image_type, typestore=self.store)
        self.gt_connection = writer.add_connection(gt_topic, GROUND_TRUTH_TYPE,
                                                   typestore=self.store)
        self.writer = writer
        self.class_names = tuple(class_names)
        self.options = options
        self.first_seen: dict[int, int] = {}
        self.hits: Counter[int] = Counter()

    def _header(self, stamp_ns: int) -> Any:
        time = self.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000,
                                                         nanosec=stamp_ns % 1_000_000_000)
        return self.types["std_msgs/msg/Header"](stamp=time, frame_id=self.options.frame_id)

    def _image(self, rgb: np.ndarray, header: Any) -> Any:
        if self.image_format is None:
            fields = rgb_to_image_fields(rgb)
            fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
            return self.types[IMAGE_TYPE](header=header, **fields)
        return self.types[COMPRESSED_IMAGE_TYPE](
            header=header, format=self.image_format,
            data=np.frombuffer(encode_compressed(rgb, self.image_format), dtype=np.uint8))

    def write_frame(self, frame_number: int, rgb: np.ndarray, masks: np.ndarray,
                    class_ids: np.ndarray, instance_ids: np.ndarray) -> None:
        """Image and ground truth of one frame (visible instances only) at its stamp."""
        stamp = self.options.start_time_ns + round(frame_number * 1e9 / self.options.frame_rate)
        header = self._header(stamp)
        instances = []
        height, width = rgb.shape[:2]
        for mask, class_id, track_id in zip(masks, class_ids, instance_ids, strict=True):
            if not mask.any():
                continue
            track_id = int(track_id)
            self.first_seen.setdefault(track_id, frame_number)
            self.hits[track_id] += 1
            bbox = BoundingBox.from_mask(mask)
            box = self.types["sensor_msgs/msg/RegionOfInterest"](
                x_offset=bbox.x, y_offset=bbox.y, height=bbox.height, width=bbox.width,
                do_rectify=False)
            instances.append(self.types["metaseg_ros/msg/InstanceMask"](
                track_id=track_id, class_id=int(class_id),
                class_name=self.class_names[int(class_id)], score=1.0, bbox=box,
                age=frame_number - self.first_seen[track_id] + 1, hits=self.hits[track_id],
                mask_rle=encode_rle(mask), **no_geometry_fields(self.types[POINT_TYPE])))
        truth = self.types[GROUND_TRUTH_TYPE](header=header, height=height, width=width,
                                              instances=instances)
        self.writer.write(self.image_connection, stamp,
                          self.store.serialize_cdr(self._image(rgb, header), self.image_type))
        self.writer.write(self.gt_connection, stamp,
                          self.store.serialize_cdr(truth, GROUND_TRUTH_TYPE))


def write_bag(source: VideoSource, out_dir: str | Path, storage: str = "sqlite3",
              image_topic: str = DEFAULT_IMAGE_TOPIC, gt_topic: str = DEFAULT_GT_TOPIC,
              compressed: bool | str = False,
              options: BagWriteOptions | None = None) -> Path:
    """Write every video of a source as one rosbag2 bag: ``out_dir/<video name>/``.

    storage: "sqlite3" or "mcap". compressed: False for sensor_msgs/Image rgb8, True or
    "png" for lossless PNG CompressedImage, "jpeg" for JPEG (quality 95). Every frame gets
    a ground-truth message (its visible instances; class_name from source.class_names,
    score 1, age/hits counted from the instance's first visible frame). Track ids must be
    positive (0 is reserved in InstanceMask). Returns out_dir, readable by BagVideoSource.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    if storage not in STORAGES:
        raise ValueError(f"storage {storage!r} not in {STORAGES}")
    image_format = "png" if compressed is True else (compressed or None)
    if image_format not in (None, "png", "jpeg"):
        raise ValueError(f"compressed must be False, True, 'png' or 'jpeg', not {compressed!r}")
    options = options or BagWriteOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [source.video_name(v) for v in range(len(source))]
    if len(set(names)) != len(names):
        raise ValueError("the source's video names are not unique")
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    for video_index, name in enumerate(names):
        with Writer(out_dir / name, version=Writer.VERSION_LATEST, storage_plugin=plugin) as bag:
            video_writer = _VideoBagWriter(bag, image_topic, gt_topic, image_format,
                                           source.class_names, options)
            total = source.num_frames(video_index)
            for first in range(0, total, options.frames_per_read):
                frames = range(first, min(first + options.frames_per_read, total))
                clip = source.load_clip(video_index, frames)
                if (clip.instance_ids <= 0).any() or (clip.instance_ids >= 2**32).any():
                    raise ValueError(f"{name}: track ids must be in 1..2^32-1, got "
                                     f"{clip.instance_ids.tolist()}")
                for k, t in enumerate(frames):
                    video_writer.write_frame(t, clip.frames[k], clip.masks[k], clip.class_ids,
                                             clip.instance_ids)
    return out_dir
