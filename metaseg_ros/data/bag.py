"""ROS 2 bags with ground truth: reading them as a VideoSource, and writing them.

Format (rosbag2, storage ``sqlite3`` or ``mcap``, as ``ros2 bag record`` writes it):

- an image topic (default ``/camera/image_raw``) of ``sensor_msgs/msg/Image`` in any encoding
  `metaseg_ros.ros.conversions.image_to_rgb` reads (rgb8, bgr8, mono8, 16-bit, YUV 4:2:2,
  padded rows, ...) or of ``sensor_msgs/msg/CompressedImage`` (jpeg, png);
- a ground-truth topic (default ``/ground_truth/instances``) of this package's own
  ``metaseg_ros/msg/InstanceMaskArray``, exactly what the node publishes: per instance
  ``track_id`` is the persistent instance id, ``class_name`` the dataset's class (mapped to
  the model's classes through a ClassMapper; ``class_id`` is ignored) and ``mask_rle`` the
  column-major COCO RLE of its mask (metaseg_ros/masks.py). Only visible instances are
  listed; a message with no instances is an annotated frame without objects.

A ground-truth message belongs to the image whose ``header.stamp`` is exactly its own
(the node copies the image header). Frames are ordered by that stamp. Images without a
ground-truth message are unannotated and skipped (the video is the annotated frames;
`skipped_images` counts them); a ground-truth message whose stamp matches no image, two
images or two ground-truth messages with the same stamp, a track listed twice in one
frame, or masks of another size than their image are errors. A track's class is the
class name it carries most often in the video (the first seen on a tie); tracks of a
class the model lacks or the mapping drops are left out (their pixels are unlabelled).

One bag is one video. ``path`` is a bag (a rosbag2 directory with ``metadata.yaml``, or a
single ``.db3`` / ``.mcap`` file) or a directory whose entries are bags (one video each,
sorted by name, which is also the video name).

Reading and writing use the pure-Python `rosbags` package; the custom message types are
registered from this package's ``msg/*.msg`` files (the source tree's, or the installed
``share/metaseg_ros/msg``). No rclpy is imported.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metaseg_ros.data.types import ClassMapper, ClipSample, VideoSource
from metaseg_ros.masks import decode_rle, encode_rle
from metaseg_ros.ros.conversions import compressed_to_rgb, image_to_rgb, rgb_to_image_fields

if TYPE_CHECKING:
    from rosbags.interfaces import Connection
    from rosbags.typesys.store import Typestore

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
GROUND_TRUTH_TYPE = "metaseg_ros/msg/InstanceMaskArray"
CUSTOM_MESSAGES = ("InstanceMask", "InstanceMaskArray")
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_GT_TOPIC = "/ground_truth/instances"
STORAGES = ("sqlite3", "mcap")
BAG_FILE_SUFFIXES = (".db3", ".mcap")
# Requested frames closer than this (in frames) are read in one pass over the bag.
_MAX_FRAME_GAP_PER_READ = 4


def message_definition_dirs() -> tuple[Path, ...]:
    """Directories searched for InstanceMask(Array).msg, in order: the source tree's msg/,
    then share/metaseg_ros/msg under AMENT_PREFIX_PATH and this interpreter's prefix."""
    candidates = [Path(__file__).resolve().parents[2] / "msg"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    candidates += [Path(prefix) / "share" / "metaseg_ros" / "msg" for prefix in prefixes]
    return tuple(candidates)


def _find_message_dir() -> Path:
    for directory in message_definition_dirs():
        if all((directory / f"{name}.msg").is_file() for name in CUSTOM_MESSAGES):
            return directory
    searched = ", ".join(str(d) for d in message_definition_dirs())
    raise FileNotFoundError(f"metaseg_ros message definitions (InstanceMask.msg, "
                            f"InstanceMaskArray.msg) not found; searched {searched}")


@cache
def metaseg_typestore() -> Typestore:
    """A rosbags type store of ROS 2 Kilted's messages plus metaseg_ros/msg/*."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    directory = _find_message_dir()
    types: dict[str, Any] = {}
    for name in CUSTOM_MESSAGES:
        text = (directory / f"{name}.msg").read_text()
        types.update(get_types_from_msg(text, f"metaseg_ros/msg/{name}"))
    store.register(types)
    return store


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def is_bag(path: str | Path) -> bool:
    """Whether path is one bag: a rosbag2 directory or a single .db3/.mcap file."""
    path = Path(path)
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.is_file() and path.suffix in BAG_FILE_SUFFIXES


def find_bags(path: str | Path) -> tuple[Path, ...]:
    """The bags at path: path itself if it is a bag, else the bags directly inside it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no bag or directory at {path}")
    if is_bag(path):
        return (path,)
    if not path.is_dir():
        raise ValueError(f"{path} is neither a bag (rosbag2 directory, .db3, .mcap) nor a "
                         f"directory of bags")
    bags = tuple(sorted(p for p in path.iterdir() if is_bag(p)))
    if not bags:
        raise ValueError(f"{path} holds no bags (rosbag2 directories with metadata.yaml, "
                         f".db3 or .mcap files)")
    return bags


@dataclass(frozen=True)
class _BagFrame:
    """One annotated frame: the shared header stamp and the log times of its two messages."""

    stamp_ns: int
    image_log_time: int
    gt_log_time: int


@dataclass(frozen=True)
class _BagVideo:
    path: Path
    name: str
    frames: tuple[_BagFrame, ...]
    image_type: str
    track_ids: tuple[int, ...]       # kept tracks (class known to the model), ascending
    class_ids: tuple[int, ...]
    skipped_images: int


def _topic_connections(reader: Any, topic: str, expected_types: Sequence[str],
                       role: str, path: Path) -> list[Connection]:
    connections = [c for c in reader.connections if c.topic == topic]
    if not connections:
        available = ", ".join(sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections}))
        raise ValueError(f"{path}: no {role} topic {topic!r}; the bag has: {available or 'none'}")
    types = {c.msgtype for c in connections}
    if len(types) > 1 or not types <= set(expected_types):
        raise ValueError(f"{path}: {role} topic {topic!r} has type {', '.join(sorted(types))}; "
                         f"expected {' or '.join(expected_types)}")
    return connections


def _check_definition(connections: Sequence[Connection], path: Path) -> None:
    """Refuse ground truth recorded with another InstanceMaskArray definition (hash)."""
    expected = metaseg_typestore().hash_rihs01(GROUND_TRUTH_TYPE)
    for connection in connections:
        if connection.digest and connection.digest.startswith("RIHS01_") \
                and connection.digest != expected:
            raise ValueError(f"{path}: topic {connection.topic!r} was recorded with another "
                             f"definition of {GROUND_TRUTH_TYPE} ({connection.digest}; this "
                             f"package's is {expected})")


def _index_bag(path: Path, image_topic: str, gt_topic: str, mapper: ClassMapper) -> _BagVideo:
    """Read a bag once: stamps and log times of images and ground truth, the tracks."""
    from rosbags.rosbag2 import Reader

    store = metaseg_typestore()
    images: dict[int, int] = {}
    truth: dict[int, int] = {}
    votes: dict[int, Counter[str]] = {}
    with Reader(path) as reader:
        image_connections = _topic_connections(reader, image_topic,
                                               (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE), "image", path)
        gt_connections = _topic_connections(reader, gt_topic, (GROUND_TRUTH_TYPE,),
                                            "ground-truth", path)
        _check_definition(gt_connections, path)
        image_type = image_connections[0].msgtype
        for connection, log_time, raw in reader.messages([*image_connections, *gt_connections]):
            msg = store.deserialize_cdr(raw, connection.msgtype)
            stamp = _stamp_ns(msg.header)
            table = images if connection.topic == image_topic else truth
            if stamp in table:
                raise ValueError(f"{path}: two messages on {connection.topic!r} with stamp "
                                 f"{stamp} ns")
            table[stamp] = log_time
            if connection.topic == gt_topic:
                seen: set[int] = set()
                for instance in msg.instances:
                    track_id = int(instance.track_id)
                    if track_id in seen:
                        raise ValueError(f"{path}: track {track_id} appears twice in the "
                                         f"ground truth of stamp {stamp} ns")
                    seen.add(track_id)
                    votes.setdefault(track_id, Counter())[str(instance.class_name)] += 1
    unmatched = sorted(set(truth) - set(images))
    if unmatched:
        raise ValueError(f"{path}: {len(unmatched)} ground-truth messages on {gt_topic!r} match "
                         f"no image stamp on {image_topic!r} (first: {unmatched[0]} ns)")
    stamps = sorted(truth)
    if not stamps:
        raise ValueError(f"{path}: no ground truth on {gt_topic!r}")
    tracks = []
    for track_id in sorted(votes):
        # Counter.most_common keeps first-seen order among equal counts.
        class_id = mapper.class_id(votes[track_id].most_common(1)[0][0])
        if class_id is not None:
            tracks.append((track_id, class_id))
    return _BagVideo(
        path=path, name=path.stem if path.is_file() else path.name,
        frames=tuple(_BagFrame(s, images[s], truth[s]) for s in stamps), image_type=image_type,
        track_ids=tuple(t for t, _ in tracks), class_ids=tuple(c for _, c in tracks),
        skipped_images=len(images) - len(stamps))


def _read_groups(frames: Sequence[int]) -> Iterator[list[int]]:
    """Sorted distinct frame indices in runs without large gaps (one bag pass each)."""
    ordered = sorted(set(frames))
    group: list[int] = []
    for index in ordered:
        if group and index - group[-1] > _MAX_FRAME_GAP_PER_READ:
            yield group
            group = []
        group.append(index)
    if group:
        yield group


class BagVideoSource(VideoSource):
    """Videos of ROS 2 bags with InstanceMaskArray ground truth as a VideoSource.

    path: a bag or a directory of bags (one video per bag; see the module docstring).
    The bags are indexed once here; load_clip reads only the messages of the frames asked
    for (by log-time window, the bag's own index) and decodes them.
    """

    def __init__(self, path: str | Path, image_topic: str, gt_topic: str,
                 class_names: Sequence[str], class_mapping: str | Path | None = None) -> None:
        if image_topic == gt_topic:
            raise ValueError(f"image and ground-truth topics are the same: {image_topic!r}")
        self.path = Path(path)
        self.image_topic = image_topic
        self.gt_topic = gt_topic
        self._class_names = tuple(class_names)
        mapper = ClassMapper.from_file(class_mapping, self._class_names)
        self._videos = tuple(_index_bag(bag, image_topic, gt_topic, mapper)
                             for bag in find_bags(self.path))
        names = [v.name for v in self._videos]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.path}: bags with the same name: {sorted(names)}")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's classes that class ids index."""
        return self._class_names

    def __len__(self) -> int:
        return len(self._videos)

    def num_frames(self, video_index: int) -> int:
        """Number of annotated frames of the bag."""
        return len(self._videos[video_index].frames)

    def video_name(self, video_index: int) -> str:
        """The bag's directory name (or file stem)."""
        return self._videos[video_index].name

    def bag_path(self, video_index: int) -> Path:
        """The bag a video comes from."""
        return self._videos[video_index].path

    def skipped_images(self, video_index: int) -> int:
        """Images of the bag without ground truth (not part of the video)."""
        return self._videos[video_index].skipped_images

    def frame_stamps_ns(self, video_index: int) -> tuple[int, ...]:
        """Header stamps (ns) of the video's frames, in frame order."""
        return tuple(f.stamp_ns for f in self._videos[video_index].frames)

    def load_clip(self, video_index: int, frame_indices: Sequence[int]) -> ClipSample:
        """Decode the given frames' images and ground-truth masks from the bag."""
        from rosbags.rosbag2 import Reader

        video = self._videos[video_index]
        indices = [int(t) for t in frame_indices]
        for t in indices:
            if not 0 <= t < len(video.frames):
                raise IndexError(f"frame {t} outside 0..{len(video.frames) - 1} of {video.name}")
        store = metaseg_typestore()
        images: dict[int, Any] = {}
        truth: dict[int, Any] = {}
        with Reader(video.path) as reader:
            connections = [c for c in reader.connections
                           if c.topic in (self.image_topic, self.gt_topic)]
            for group in _read_groups(indices):
                frames = [video.frames[t] for t in group]
                image_times = {f.image_log_time for f in frames}
                gt_times = {f.gt_log_time for f in frames}
                wanted = {f.stamp_ns for f in frames}
                start = min(min(image_times), min(gt_times))
                stop = max(max(image_times), max(gt_times)) + 1
                for connection, log_time, raw in reader.messages(connections, start, stop):
                    is_image = connection.topic == self.image_topic
                    if log_time not in (image_times if is_image else gt_times):
                        continue
                    msg = store.deserialize_cdr(raw, connection.msgtype)
                    stamp = _stamp_ns(msg.header)
                    if stamp in wanted:
                        (images if is_image else truth)[stamp] = msg
        track_index = {track_id: n for n, track_id in enumerate(video.track_ids)}
        rgb_frames = []
        masks = []
        for t in indices:
            stamp = video.frames[t].stamp_ns
            if stamp not in images or stamp not in truth:
                raise ValueError(f"{video.path}: frame {t} (stamp {stamp} ns) is no longer in "
                                 f"the bag; was it changed after indexing?")
            image_msg = images[stamp]
            rgb = (compressed_to_rgb(image_msg) if video.image_type == COMPRESSED_IMAGE_TYPE
                   else image_to_rgb(image_msg))
            rgb_frames.append(rgb)
            masks.append(self._frame_masks(truth[stamp], rgb.shape[:2], track_index, video, t))
        return ClipSample(
            frames=np.stack(rgb_frames), masks=np.stack(masks),
            class_ids=np.array(video.class_ids, dtype=np.int64),
            instance_ids=np.array(video.track_ids, dtype=np.int64), video_name=video.name,
            frame_indices=tuple(indices))

    @staticmethod
    def _frame_masks(msg: Any, size: tuple[int, int], track_index: dict[int, int],
                     video: _BagVideo, t: int) -> np.ndarray:
        height, width = size
        if (int(msg.height), int(msg.width)) != (height, width):
            raise ValueError(f"{video.path}: ground truth of frame {t} is {msg.height}x"
                             f"{msg.width} (HxW), its image {height}x{width}")
        masks = np.zeros((len(track_index), height, width), dtype=bool)
        for instance in msg.instances:
            n = track_index.get(int(instance.track_id))
            if n is not None:
                masks[n] = decode_rle(instance.mask_rle, height, width)
        return masks


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x_offset, y_offset, width, height) of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
            int(rows[-1] - rows[0] + 1))


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
        import io

        from PIL import Image

        buffer = io.BytesIO()
        pil_format = "JPEG" if self.image_format == "jpeg" else "PNG"
        options = {"quality": 95, "subsampling": 0} if pil_format == "JPEG" else {}
        Image.fromarray(rgb).save(buffer, format=pil_format, **options)
        return self.types[COMPRESSED_IMAGE_TYPE](
            header=header, format=self.image_format,
            data=np.frombuffer(buffer.getvalue(), dtype=np.uint8))

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
            x, y, box_width, box_height = _bounding_box(mask)
            box = self.types["sensor_msgs/msg/RegionOfInterest"](
                x_offset=x, y_offset=y, height=box_height, width=box_width, do_rectify=False)
            instances.append(self.types["metaseg_ros/msg/InstanceMask"](
                track_id=track_id, class_id=int(class_id),
                class_name=self.class_names[int(class_id)], score=1.0, bbox=box,
                age=frame_number - self.first_seen[track_id] + 1, hits=self.hits[track_id],
                mask_rle=encode_rle(mask)))
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
