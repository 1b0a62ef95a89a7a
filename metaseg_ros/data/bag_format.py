"""ROS 2 bags with ground truth: the format, the message types, finding bags.

Reading them as a VideoSource: data/bag_reader.py; writing them: data/bag_writer.py.

Format (rosbag2, storage ``sqlite3`` or ``mcap``, as ``ros2 bag record`` writes it):

- an image topic (default ``/camera/image_raw``) of ``sensor_msgs/msg/Image`` in any encoding
  `metaseg_ros.image_codec.image_to_rgb` reads (rgb8, bgr8, mono8, 16-bit, YUV 4:2:2,
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

One bag is one video. ``path`` is a bag (a rosbag2 directory, or a single ``.db3`` /
``.mcap`` file; a bag cut short by a power loss is read up to the cut, see bag_access.py)
or a directory whose entries are bags (one video each, sorted by name, which is also the
video name).

Reading and writing use the pure-Python `rosbags` package; the custom message types are
registered from this package's ``msg/*.msg`` files (the source tree's, or the installed
``share/metaseg_ros/msg``). No rclpy is imported.

Bags recorded before InstanceMask had its 3-D fields (position_valid, position, extent_min,
extent_max, depth_pixels) stay readable: their topic's type hash (or, in a bag without
hashes, the bytes themselves) selects the earlier definition, and their messages read as
before, without those fields.
"""

from __future__ import annotations

import os
import re
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rosbags is imported when a bag is read or written
    from rosbags.typesys.store import Typestore

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
GROUND_TRUTH_TYPE = "metaseg_ros/msg/InstanceMaskArray"
CUSTOM_MESSAGES = ("InstanceMask", "InstanceMaskArray")
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_GT_TOPIC = "/ground_truth/instances"
STORAGES = ("sqlite3", "mcap")
BAG_FILE_SUFFIXES = (".db3", ".mcap")


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


# InstanceMask before the 3-D fields; only the fields count for the type hash and the bytes.
LEGACY_INSTANCE_MASK = """uint32 track_id
uint16 class_id
string class_name
float32 score
sensor_msgs/RegionOfInterest bbox
uint32 age
uint32 hits
uint32[] mask_rle
"""
LEGACY_INSTANCE_ARRAY_HASH = \
    "RIHS01_3d57565a1155f0d46426ab235738041ab05cb501bf4775b0c70215ca2d0d8c7e"


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


@cache
def legacy_typestore() -> Typestore:
    """A type store whose InstanceMask(Array) is the definition before the 3-D fields."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = dict(get_types_from_msg(LEGACY_INSTANCE_MASK,
                                                    "metaseg_ros/msg/InstanceMask"))
    text = (_find_message_dir() / "InstanceMaskArray.msg").read_text()
    types.update(get_types_from_msg(text, GROUND_TRUTH_TYPE))
    store.register(types)
    return store


def instance_array_stores(digest: str, where: str) -> tuple[Typestore, ...]:
    """The type stores to decode InstanceMaskArray messages recorded with type hash
    `digest` ('' where the bag has none: the current definition, then the earlier one);
    ValueError for a definition this package never had."""
    current = metaseg_typestore()
    if not digest.startswith("RIHS01_") or digest == current.hash_rihs01(GROUND_TRUTH_TYPE):
        return (current, legacy_typestore()) if not digest.startswith("RIHS01_") else (current,)
    if digest == LEGACY_INSTANCE_ARRAY_HASH:
        return (legacy_typestore(),)
    raise ValueError(f"{where} was recorded with another definition of {GROUND_TRUTH_TYPE} "
                     f"({digest}; this package's is {current.hash_rihs01(GROUND_TRUTH_TYPE)}, "
                     f"before the 3-D fields {LEGACY_INSTANCE_ARRAY_HASH})")


def deserialize_instance_array(data: bytes | memoryview, stores: tuple[Typestore, ...]) -> Any:
    """An InstanceMaskArray from CDR bytes with the first of `stores` that decodes them
    (the current definition reads no earlier message: it needs more bytes per instance)."""
    error: Exception | None = None
    for store in stores:
        try:
            return store.deserialize_cdr(data, GROUND_TRUTH_TYPE)
        except Exception as failure:  # rosbags raises assorted errors on foreign bytes
            error = failure
    raise ValueError(f"cannot decode an {GROUND_TRUTH_TYPE} message: {error}") from error


def stamp_ns(header: Any) -> int:
    """A std_msgs/Header's stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def is_bag(path: str | Path) -> bool:
    """Whether path is one bag: a rosbag2 directory or a single .db3/.mcap file.

    A directory without metadata.yaml (rosbag2 writes it when the bag is closed, so a
    recorder that died leaves none) is one bag when its storage files are named as rosbag2
    names them, ``<directory name>[_<N>].db3|mcap``.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return True
        files = [p for p in path.iterdir() if p.suffix in BAG_FILE_SUFFIXES]
        pattern = re.compile(re.escape(path.name) + r"(_\d+)?")
        return bool(files) and all(pattern.fullmatch(p.stem) for p in files)
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
