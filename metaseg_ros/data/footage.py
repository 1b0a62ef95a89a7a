"""Bringing footage in: a video file or an image folder as a ROS 2 bag (metaseg-make-bag).

Frames are read with PyAV (any container and codec FFmpeg decodes) or Pillow (image
folders, sorted by name) and written with `rosbags` as sensor_msgs/Image (rgb8 or bgr8) or
CompressedImage (jpeg) at a fixed rate, header stamp = log time = start + n / rate. Ground
truth (DAVIS PNGs or a YouTube-VIS JSON of the same frames, data/frame_truth.py) goes on an
InstanceMaskArray topic in the format data/bag_format.py describes, so metaseg-replay and
metaseg-eval score it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
from metaseg_ros.data.frame_truth import FrameTruth, check_size
from metaseg_ros.data.video_io import probe_video, read_video
from metaseg_ros.image_codec import encode_compressed, rgb_to_image_fields
from metaseg_ros.message_content import MessageTypes, instance_array_msg
from metaseg_ros.results import BoundingBox, TrackedFrame, TrackedInstance

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ENCODINGS = ("rgb8", "bgr8", "jpeg")


@dataclass(frozen=True)
class MakeBagOptions:
    """rate: frames per second (None: the video's own rate, 10 for image folders)."""

    rate: float | None = None
    frame_id: str = "camera"
    encoding: str = "rgb8"
    storage: str = "mcap"
    image_topic: str = DEFAULT_IMAGE_TOPIC
    gt_topic: str = DEFAULT_GT_TOPIC
    start_time_ns: int = 1_700_000_000 * 1_000_000_000
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding {self.encoding!r} is not one of {', '.join(ENCODINGS)}")
        if self.storage not in STORAGES:
            raise ValueError(f"storage {self.storage!r} is not one of {', '.join(STORAGES)}")
        if self.rate is not None and not 0 < self.rate <= 1000:
            raise ValueError(f"rate must be in (0, 1000] Hz, got {self.rate}")


@dataclass(frozen=True)
class Footage:
    """Frames of a video file or an image folder, their native rate (None when unknown)."""

    path: Path
    rate: float | None
    count: int

    @property
    def name(self) -> str:
        """The video's name (file stem or folder name)."""
        return self.path.stem if self.path.is_file() else self.path.name

    def frames(self) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 RGB frames in order."""
        if self.path.is_file():
            yield from read_video(self.path)
            return
        from PIL import Image

        for image_path in _image_files(self.path):
            with Image.open(image_path) as image:
                yield np.asarray(image.convert("RGB"))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def open_footage(path: str | Path) -> Footage:
    """A video file or a folder of images (ValueError/FileNotFoundError when neither)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no video file or image folder at {path}")
    if path.is_dir():
        count = len(_image_files(path))
        if not count:
            raise ValueError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return Footage(path, None, count)
    info = probe_video(path)
    return Footage(path, info.frame_rate or None, info.frame_count)


def _image_msg(rgb: np.ndarray, header: object, encoding: str, types: dict) -> object:
    if encoding == "jpeg":
        return types[COMPRESSED_IMAGE_TYPE](
            header=header, format="jpeg",
            data=np.frombuffer(encode_compressed(rgb, "jpeg"), dtype=np.uint8))
    pixels = rgb if encoding == "rgb8" else np.ascontiguousarray(rgb[..., ::-1])
    fields = rgb_to_image_fields(pixels)
    fields["encoding"] = encoding
    fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
    return types[IMAGE_TYPE](header=header, **fields)


class _TruthTracks:
    """Ground-truth objects of successive frames as the InstanceMaskArray content."""

    def __init__(self) -> None:
        self.first_seen: dict[int, int] = {}
        self.hits: dict[int, int] = {}
        self.classes: list[str] = []

    def frame(self, number: int, objects: list, height: int, width: int) -> TrackedFrame:
        instances = []
        for obj in objects:
            if not obj.mask.any():
                continue
            if not 0 < obj.instance_id < 2**32:
                raise ValueError(f"ground-truth object id {obj.instance_id} of frame {number} "
                                 f"is not in 1..2^32-1")
            self.first_seen.setdefault(obj.instance_id, number)
            self.hits[obj.instance_id] = self.hits.get(obj.instance_id, 0) + 1
            if obj.class_name not in self.classes:
                self.classes.append(obj.class_name)
            instances.append(TrackedInstance(
                obj.instance_id, self.classes.index(obj.class_name), obj.class_name, 1.0,
                obj.mask, BoundingBox.from_mask(obj.mask),
                number - self.first_seen[obj.instance_id] + 1, self.hits[obj.instance_id]))
        return TrackedFrame(height, width, tuple(instances))


@dataclass(frozen=True)
class MadeBag:
    """What metaseg-make-bag wrote."""

    path: Path
    frames: int
    rate: float
    annotated_frames: int


def make_bag(footage: Footage, output: str | Path, options: MakeBagOptions | None = None,
             truth: FrameTruth | None = None) -> MadeBag:
    """Write the footage (and its ground truth) as one rosbag2 at `output`."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    options = options or MakeBagOptions()
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output} already exists; choose another --output or remove it")
    rate = options.rate or footage.rate or 10.0
    store = metaseg_typestore()
    types = store.types
    message_types = MessageTypes.from_names(types, lambda b: np.frombuffer(b, np.uint8))
    image_type = COMPRESSED_IMAGE_TYPE if options.encoding == "jpeg" else IMAGE_TYPE
    plugin = StoragePlugin.MCAP if options.storage == "mcap" else StoragePlugin.SQLITE3
    tracks = _TruthTracks()
    written = annotated = 0
    try:
        with Writer(output, version=Writer.VERSION_LATEST, storage_plugin=plugin) as bag:
            images = bag.add_connection(options.image_topic, image_type, typestore=store)
            gt = bag.add_connection(options.gt_topic, GROUND_TRUTH_TYPE, typestore=store) \
                if truth is not None else None
            for number, rgb in enumerate(footage.frames()):
                if options.max_frames is not None and number >= options.max_frames:
                    break
                stamp = options.start_time_ns + round(number * 1e9 / rate)
                header = types["std_msgs/msg/Header"](
                    stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000,
                                                               nanosec=stamp % 1_000_000_000),
                    frame_id=options.frame_id)
                bag.write(images, stamp, store.serialize_cdr(
                    _image_msg(rgb, header, options.encoding, types), image_type))
                written += 1
                objects = truth.objects(number, stamp) if truth is not None else None
                if gt is not None and objects is not None:
                    check_size(objects, rgb.shape[0], rgb.shape[1],
                               f"{footage.path} frame {number}")
                    frame = tracks.frame(number, objects, rgb.shape[0], rgb.shape[1])
                    bag.write(gt, stamp, store.serialize_cdr(
                        instance_array_msg(frame, header, message_types), GROUND_TRUTH_TYPE))
                    annotated += 1
    except BaseException:
        shutil.rmtree(output, ignore_errors=True)  # no half-written bag left behind
        raise
    if not written:
        raise ValueError(f"{footage.path}: no frame could be read")
    return MadeBag(output, written, rate, annotated)
