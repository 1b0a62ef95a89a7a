"""InstanceMask/InstanceMaskArray: size bound, RLE helpers, round trip between processes."""

from __future__ import annotations

import array
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from ros_probe import Probe
from shapes import random_tracked_frame
from std_msgs.msg import Header

from metaseg_ros.masks import encode_rle, to_coco_rle
from metaseg_ros.msg import InstanceMask, InstanceMaskArray
from metaseg_ros.ros.messages import decode_instance_mask, frame_to_msg, uint32_array

pytestmark = pytest.mark.torch_free

HELPERS = Path(__file__).parent / "helpers"


def assert_matches(msg: InstanceMaskArray, seed: int) -> None:
    """`msg` carries exactly random_tracked_frame(seed)."""
    frame = random_tracked_frame(seed)
    assert (msg.height, msg.width) == (frame.height, frame.width)
    assert len(msg.instances) == len(frame.instances)
    for sent, got in zip(frame.instances, msg.instances, strict=True):
        assert got.track_id == sent.track_id and got.class_id == sent.class_id
        assert got.class_name == sent.class_name
        assert got.score == pytest.approx(sent.score, rel=1e-6)
        assert (got.age, got.hits) == (sent.age, sent.hits)
        box = sent.bbox
        assert (got.bbox.x_offset, got.bbox.y_offset, got.bbox.width, got.bbox.height) == \
            (box.x, box.y, box.width, box.height)
        np.testing.assert_array_equal(decode_instance_mask(got, msg.height, msg.width), sent.mask)


def test_twenty_instances_at_512_serialise_well_under_100_kb() -> None:
    sizes = []
    for seed in range(5):
        msg = frame_to_msg(random_tracked_frame(seed), Header(frame_id="camera"))
        data = serialize_message(msg)
        assert_matches(deserialize_message(data, InstanceMaskArray), seed)
        sizes.append(len(data))
    print(f"serialised sizes of 20 instances at 512x512: {sizes} bytes")
    assert max(sizes) < 50_000


def test_decode_as_documented_in_the_msg_file_and_with_pycocotools() -> None:
    from pycocotools import mask as mask_utils

    msg = frame_to_msg(random_tracked_frame(3, height=120, width=90, count=4), Header())
    for instance, sent in zip(msg.instances, random_tracked_frame(3, 120, 90, 4).instances,
                              strict=True):
        counts = instance.mask_rle  # the three lines of InstanceMask.msg
        flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
        mask = flat.reshape(msg.width, msg.height).T
        np.testing.assert_array_equal(mask, sent.mask)
        coco = mask_utils.decode(to_coco_rle(counts, msg.height, msg.width)).astype(bool)
        np.testing.assert_array_equal(coco, sent.mask)


def test_uint32_fields_are_copied_as_bytes_with_every_value_kept() -> None:
    """rclpy keeps uint32[] as array.array('I'): the node hands it one (copied as bytes, not
    element by element), with values past 2**31 and the full range intact."""
    values = np.array([0, 1, 2**31 + 5, 2**32 - 1, 640 * 480], dtype=np.uint32)
    msg = InstanceMask(mask_rle=uint32_array(values))
    assert isinstance(msg.mask_rle, array.array) and msg.mask_rle.typecode == "I"
    assert list(msg.mask_rle) == values.tolist()
    again = deserialize_message(serialize_message(msg), InstanceMask)
    assert list(again.mask_rle) == values.tolist()
    built = frame_to_msg(random_tracked_frame(1, height=48, width=64, count=2), Header())
    for instance, sent in zip(built.instances, random_tracked_frame(1, 48, 64, 2).instances,
                              strict=True):
        assert list(instance.mask_rle) == encode_rle(sent.mask, sent.bbox).tolist()


def test_bad_rle_is_rejected() -> None:
    bad = InstanceMask(mask_rle=[5, 5])
    with pytest.raises(ValueError, match="sum to 10"):
        decode_instance_mask(bad, 4, 4)


def test_round_trip_between_two_processes(rclpy_context, tmp_path) -> None:
    topic, count = "/metaseg_test/instances", 5
    probe = Probe("message_receiver")
    probe.record(InstanceMaskArray, topic,
                 QoSProfile(depth=count, reliability=ReliabilityPolicy.RELIABLE))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HELPERS),
                                                       os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, str(HELPERS / "publish_instances.py"), topic,
                              str(count)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        probe.wait_for(lambda: len(probe.messages(topic)) == count, 60, f"{count} messages")
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
        output = child.communicate()[0]
        probe.close()
    assert "error" not in output.lower(), output
    for seed, msg in enumerate(probe.messages(topic)):
        assert msg.header.frame_id == f"camera_{seed}"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1700000000 + seed, 123456789)
        assert_matches(msg, seed)
