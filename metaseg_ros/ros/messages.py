"""Building and reading metaseg_ros messages (InstanceMask, InstanceMaskArray)."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from metaseg_ros.image_codec import label_to_image_fields, rgb_to_image_fields
from metaseg_ros.masks import decode_rle, encode_rle
from metaseg_ros.msg import InstanceMask, InstanceMaskArray
from metaseg_ros.results import TrackedFrame, TrackedInstance
from metaseg_ros.visualization import label_image, render_overlay


def instance_to_msg(instance: TrackedInstance) -> InstanceMask:
    """One tracked instance as an InstanceMask (mask run-length encoded, see the .msg)."""
    box = instance.bbox
    return InstanceMask(
        track_id=int(instance.track_id),
        class_id=int(instance.class_id),
        class_name=instance.class_name,
        score=float(instance.score),
        bbox=RegionOfInterest(x_offset=box.x, y_offset=box.y, width=box.width,
                              height=box.height, do_rectify=False),
        age=int(instance.age),
        hits=int(instance.hits),
        mask_rle=encode_rle(instance.mask, box),
    )


def frame_to_msg(frame: TrackedFrame, header: Header) -> InstanceMaskArray:
    """A whole frame's instances, stamped with the source image's header."""
    return InstanceMaskArray(header=header, height=frame.height, width=frame.width,
                             instances=[instance_to_msg(inst) for inst in frame.instances])


def decode_instance_mask(instance: InstanceMask, height: int, width: int) -> np.ndarray:
    """The (height, width) bool mask of an InstanceMask (sizes from its InstanceMaskArray)."""
    return decode_rle(np.asarray(instance.mask_rle, dtype=np.int64), height, width)


def label_image_msg(frame: TrackedFrame, header: Header) -> Image:
    """32SC1 image whose pixels hold track ids (0 = no instance), for costmap layers."""
    labels = label_image(frame.instances, frame.height, frame.width)
    return Image(header=header, **label_to_image_fields(labels))


def overlay_msg(rgb: np.ndarray, frame: TrackedFrame, header: Header) -> Image:
    """rgb8 debug image: the source frame with masks coloured by track id and labelled."""
    return Image(header=header, **rgb_to_image_fields(render_overlay(rgb, frame.instances)))
