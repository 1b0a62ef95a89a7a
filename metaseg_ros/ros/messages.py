"""Building and reading metaseg_ros messages (InstanceMask, InstanceMaskArray) with rclpy.

The content comes from metaseg_ros.message_content, which replay uses too (with rosbags'
classes), so the node's messages and a results bag hold the same fields.
"""

from __future__ import annotations

import array

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from metaseg_ros import message_content
from metaseg_ros.masks import decode_rle
from metaseg_ros.message_content import MessageTypes
from metaseg_ros.msg import InstanceMask, InstanceMaskArray
from metaseg_ros.results import TrackedFrame, TrackedInstance


def uint32_array(values: np.ndarray) -> array.array:
    """A uint32[] field's value as rclpy stores it (array.array 'I'), copied as bytes: rclpy
    converts any other sequence element by element."""
    out = array.array("I")
    out.frombytes(np.ascontiguousarray(values, dtype=np.uint32).tobytes())
    return out


RCLPY_TYPES = MessageTypes(instance_array=InstanceMaskArray, instance=InstanceMask,
                           region_of_interest=RegionOfInterest, image=Image, byte_array=bytes,
                           point=Point, uint32_array=uint32_array)


def instance_to_msg(instance: TrackedInstance) -> InstanceMask:
    """One tracked instance as an InstanceMask (mask run-length encoded, see the .msg)."""
    return message_content.instance_msg(instance, RCLPY_TYPES)


def frame_to_msg(frame: TrackedFrame, header: Header) -> InstanceMaskArray:
    """A whole frame's instances, stamped with the source image's header."""
    return message_content.instance_array_msg(frame, header, RCLPY_TYPES)


def decode_instance_mask(instance: InstanceMask, height: int, width: int) -> np.ndarray:
    """The (height, width) bool mask of an InstanceMask (sizes from its InstanceMaskArray)."""
    return decode_rle(np.asarray(instance.mask_rle, dtype=np.int64), height, width)


def label_image_msg(frame: TrackedFrame, header: Header, encoding: str = "16UC1") -> Image:
    """Image whose pixels hold track ids (0 = no instance): 16UC1 (ids folded into
    1..65535) or 32SC1."""
    return message_content.label_image_msg(frame, header, RCLPY_TYPES, encoding)


def overlay_msg(rgb: np.ndarray, frame: TrackedFrame, header: Header) -> Image:
    """rgb8 debug image: the source frame with masks coloured by track id and labelled."""
    return message_content.overlay_msg(rgb, frame, header, RCLPY_TYPES)
