"""Bags recorded before InstanceMask had its 3-D fields stay readable: ground truth of the
earlier definition (known by its type hash, or in a bag cut short without hashes by the
bytes) reads with the same masks through metaseg-eval's bag reader and replay's ground
truth; a bag of the current definition without hashes reads too, and a definition this
package never had is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.data.bag_access import BagReader
from metaseg_ros.data.bag_format import (
    GROUND_TRUTH_TYPE,
    IMAGE_TYPE,
    LEGACY_INSTANCE_ARRAY_HASH,
    instance_array_stores,
    legacy_typestore,
    metaseg_typestore,
)
from metaseg_ros.data.bag_reader import BagVideoSource
from metaseg_ros.data.frame_truth import BagTopicTruth
from metaseg_ros.masks import encode_rle
from metaseg_ros.message_content import no_geometry_fields

pytestmark = pytest.mark.torch_free

HEIGHT, WIDTH, FRAMES = 24, 32, 6
STAMP0 = 1_600_000_000


def masks(t: int) -> list[tuple[int, str, np.ndarray]]:
    """Two objects per frame, moving (wider than tall: a transposed read would show)."""
    found = []
    for track, name, (top, left) in ((3, "person", (2 + t, 1 + 2 * t)), (9, "car", (14, 20 - t))):
        mask = np.zeros((HEIGHT, WIDTH), bool)
        mask[top:top + 5, left:left + 8] = True
        found.append((track, name, mask))
    return found


def write(path: Path, legacy: bool, storage: str = "mcap") -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = legacy_typestore() if legacy else metaseg_typestore()
    types = store.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as bag:
        images = bag.add_connection("/camera/image_raw", IMAGE_TYPE, typestore=store)
        truth = bag.add_connection("/ground_truth/instances", GROUND_TRUTH_TYPE, typestore=store)
        for t in range(FRAMES):
            time = types["builtin_interfaces/msg/Time"](sec=STAMP0 + t, nanosec=0)
            header = types["std_msgs/msg/Header"](stamp=time, frame_id="cam")
            image = types[IMAGE_TYPE](header=header, height=HEIGHT, width=WIDTH, encoding="rgb8",
                                      is_bigendian=0, step=WIDTH * 3,
                                      data=np.full(HEIGHT * WIDTH * 3, 90, np.uint8))
            extra = {} if legacy else no_geometry_fields(types["geometry_msgs/msg/Point"])
            instances = [types["metaseg_ros/msg/InstanceMask"](
                track_id=track, class_id=0, class_name=name, score=1.0,
                bbox=types["sensor_msgs/msg/RegionOfInterest"](
                    x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
                age=t + 1, hits=t + 1, mask_rle=encode_rle(mask), **extra)
                for track, name, mask in masks(t)]
            array = types[GROUND_TRUTH_TYPE](header=header, height=HEIGHT, width=WIDTH,
                                             instances=instances)
            log_time = (STAMP0 + t) * 10**9
            bag.write(images, log_time, store.serialize_cdr(image, IMAGE_TYPE))
            bag.write(truth, log_time, store.serialize_cdr(array, GROUND_TRUTH_TYPE))
    return path


def cut(bag: Path, fraction: float) -> None:
    """What a power loss leaves: the storage file cut, no metadata.yaml."""
    (bag / "metadata.yaml").unlink()
    storage = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    data = storage.read_bytes()
    storage.write_bytes(data[: int(len(data) * fraction)])


def check_truth(bag: Path, frames: int) -> None:
    """Both readers give every frame's masks, track ids and classes."""
    source = BagVideoSource(bag, "/camera/image_raw", "/ground_truth/instances",
                            DEFAULT_CLASSES)
    clip = source.load_clip(0, range(frames))
    assert clip.instance_ids.tolist() == [3, 9]
    assert [DEFAULT_CLASSES[k] for k in clip.class_ids] == ["person", "car"]
    for t in range(frames):
        for k, (_, _, mask) in enumerate(masks(t)):
            np.testing.assert_array_equal(clip.masks[t, k], mask)
    with BagReader(bag) as reader:
        truth = BagTopicTruth(reader, "/ground_truth/instances")
    for t in range(frames):
        objects = truth.objects(t, (STAMP0 + t) * 10**9)
        assert [(o.instance_id, o.class_name) for o in objects] == [(3, "person"), (9, "car")]
        for obj, (_, _, mask) in zip(objects, masks(t), strict=True):
            np.testing.assert_array_equal(obj.mask, mask)


def test_the_legacy_definition_hashes_as_the_bags_of_before() -> None:
    """The constant is the hash rosidl gave InstanceMaskArray before the 3-D fields
    (share/metaseg_ros/msg/InstanceMaskArray.json of that build)."""
    assert legacy_typestore().hash_rihs01(GROUND_TRUTH_TYPE) == LEGACY_INSTANCE_ARRAY_HASH
    assert metaseg_typestore().hash_rihs01(GROUND_TRUTH_TYPE) != LEGACY_INSTANCE_ARRAY_HASH


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bags_of_the_earlier_definition_read_as_before(tmp_path: Path, storage) -> None:
    bag = write(tmp_path / "old", legacy=True, storage=storage)
    with BagReader(bag) as reader:
        assert reader.topics["/ground_truth/instances"].digest == LEGACY_INSTANCE_ARRAY_HASH
    check_truth(bag, FRAMES)


@pytest.mark.parametrize("legacy", [True, False], ids=["earlier", "current"])
def test_bags_cut_short_without_hashes_read_with_the_definition_that_fits(tmp_path: Path,
                                                                         legacy) -> None:
    bag = write(tmp_path / "cut", legacy=legacy)
    cut(bag, 0.8)
    with BagReader(bag) as reader:
        assert reader.topics["/ground_truth/instances"].digest == ""  # no hashes recovered
    check_truth(bag, 3)


def test_another_definition_is_refused_naming_both_known_ones() -> None:
    with pytest.raises(ValueError, match="another definition") as error:
        instance_array_stores("RIHS01_" + "ab" * 32, "bag.mcap: topic '/gt'")
    assert LEGACY_INSTANCE_ARRAY_HASH in str(error.value)
    assert metaseg_typestore().hash_rihs01(GROUND_TRUTH_TYPE) in str(error.value)
