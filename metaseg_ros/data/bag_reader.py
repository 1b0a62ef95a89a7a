"""Reading ROS 2 bags with InstanceMaskArray ground truth as a VideoSource (the format is
described in data/bag_format.py). Reading goes through data/bag_access.py (rosbags, and
recovery of bags cut short); no rclpy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metaseg_ros.data.bag_access import BagReader, TopicInfo
from metaseg_ros.data.bag_format import (
    COMPRESSED_IMAGE_TYPE,
    GROUND_TRUTH_TYPE,
    IMAGE_TYPE,
    deserialize_instance_array,
    find_bags,
    instance_array_stores,
    metaseg_typestore,
    stamp_ns,
)
from metaseg_ros.data.types import ClassMapper, ClipSample, VideoSource
from metaseg_ros.image_codec import compressed_to_rgb, image_to_rgb
from metaseg_ros.masks import decode_rle

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

# Requested frames closer than this (in frames) are read in one pass over the bag.
_MAX_FRAME_GAP_PER_READ = 4


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


def topic_info(reader: BagReader, topic: str, expected_types: Sequence[str],
               role: str) -> TopicInfo:
    """The topic, checked to exist with one of the expected types (clear errors otherwise)."""
    info = reader.topics.get(topic)
    if info is None:
        raise ValueError(f"{reader.path}: no {role} topic {topic!r}; the bag has: "
                         f"{reader.describe()}")
    if info.msgtype not in expected_types:
        raise ValueError(f"{reader.path}: {role} topic {topic!r} has type {info.msgtype}; "
                         f"expected {' or '.join(expected_types)}")
    return info


def check_definition(info: TopicInfo, path: Path) -> tuple[Typestore, ...]:
    """The type stores that decode this ground-truth topic (the current InstanceMaskArray or
    the one before the 3-D fields); ValueError for any other definition (by type hash)."""
    return instance_array_stores(info.digest, f"{path}: topic {info.name!r}")


def _index_bag(path: Path, image_topic: str, gt_topic: str, mapper: ClassMapper) -> _BagVideo:
    """Read a bag once: stamps and log times of images and ground truth, the tracks."""
    store = metaseg_typestore()
    images: dict[int, int] = {}
    truth: dict[int, int] = {}
    votes: dict[int, Counter[str]] = {}
    with BagReader(path) as reader:
        image_type = topic_info(reader, image_topic, (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE),
                                "image").msgtype
        truth_stores = check_definition(
            topic_info(reader, gt_topic, (GROUND_TRUTH_TYPE,), "ground-truth"), path)
        for raw in reader.messages([image_topic, gt_topic]):
            msg = deserialize_instance_array(raw.data, truth_stores) if raw.topic == gt_topic \
                else store.deserialize_cdr(raw.data, raw.msgtype)
            stamp = stamp_ns(msg.header)
            table = images if raw.topic == image_topic else truth
            if stamp in table:
                raise ValueError(f"{path}: two messages on {raw.topic!r} with stamp "
                                 f"{stamp} ns")
            table[stamp] = raw.log_time
            if raw.topic == gt_topic:
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
        video = self._videos[video_index]
        indices = [int(t) for t in frame_indices]
        for t in indices:
            if not 0 <= t < len(video.frames):
                raise IndexError(f"frame {t} outside 0..{len(video.frames) - 1} of {video.name}")
        store = metaseg_typestore()
        images: dict[int, Any] = {}
        truth: dict[int, Any] = {}
        with BagReader(video.path) as reader:
            truth_stores = check_definition(reader.topics[self.gt_topic], video.path)
            for group in _read_groups(indices):
                frames = [video.frames[t] for t in group]
                image_times = {f.image_log_time for f in frames}
                gt_times = {f.gt_log_time for f in frames}
                wanted = {f.stamp_ns for f in frames}
                start = min(min(image_times), min(gt_times))
                stop = max(max(image_times), max(gt_times)) + 1
                for raw in reader.messages([self.image_topic, self.gt_topic], start, stop):
                    is_image = raw.topic == self.image_topic
                    if raw.log_time not in (image_times if is_image else gt_times):
                        continue
                    msg = store.deserialize_cdr(raw.data, raw.msgtype) if is_image else \
                        deserialize_instance_array(raw.data, truth_stores)
                    stamp = stamp_ns(msg.header)
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
