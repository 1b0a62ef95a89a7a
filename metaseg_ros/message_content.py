"""What the node's messages hold, built once for every message library (no ROS import).

The node publishes rclpy messages (ros/messages.py) and replay records rosbags messages
(eval/results_bag.py). Both build them here from the same TrackedFrame and differ only in
the classes they pass in `MessageTypes`, so a results bag holds exactly what the node
publishes: the source header (copied, not rebuilt), the instances with their RLE masks,
tight boxes and 3-D from depth, the label image (16UC1 or 32SC1) and the rgb8 overlay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaseg_ros.image_codec import label_to_image_fields, rgb_to_image_fields
from metaseg_ros.masks import encode_rle
from metaseg_ros.results import TrackedFrame, TrackedInstance
from metaseg_ros.visualization import label_image, render_overlay

INSTANCE_ARRAY_TYPE = "metaseg_ros/msg/InstanceMaskArray"
INSTANCE_TYPE = "metaseg_ros/msg/InstanceMask"
IMAGE_TYPE = "sensor_msgs/msg/Image"
REGION_OF_INTEREST_TYPE = "sensor_msgs/msg/RegionOfInterest"
POINT_TYPE = "geometry_msgs/msg/Point"
ORIGIN = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class MessageTypes:
    """The message classes of one library, and how it takes uint8[] and uint32[] fields.

    byte_array: rclpy takes bytes (a numpy array is copied element by element, ~60x
    slower); rosbags takes a numpy uint8 array.
    uint32_array: from a numpy uint32 array; rclpy copies anything but an array.array
    element by element; rosbags takes the numpy array as it is (the default).
    """

    instance_array: Callable[..., Any]
    instance: Callable[..., Any]
    region_of_interest: Callable[..., Any]
    image: Callable[..., Any]
    byte_array: Callable[[bytes], Any]
    point: Callable[..., Any]
    uint32_array: Callable[[np.ndarray], Any] = np.asarray

    @classmethod
    def from_names(cls, types: dict[str, Any], byte_array: Callable[[bytes], Any]
                   ) -> MessageTypes:
        """From a mapping of ROS type names to classes (e.g. a rosbags typestore's types)."""
        return cls(types[INSTANCE_ARRAY_TYPE], types[INSTANCE_TYPE],
                   types[REGION_OF_INTEREST_TYPE], types[IMAGE_TYPE], byte_array,
                   types[POINT_TYPE])


def no_geometry_fields(point: Callable[..., Any]) -> dict[str, Any]:
    """InstanceMask's 3-D fields for an instance without 3-D (`point`: the library's
    geometry_msgs/Point class), for writers that build InstanceMask themselves."""
    return {"position_valid": False, "position": point(x=0.0, y=0.0, z=0.0),
            "extent_min": point(x=0.0, y=0.0, z=0.0), "extent_max": point(x=0.0, y=0.0, z=0.0),
            "depth_pixels": 0}


def instance_msg(instance: TrackedInstance, types: MessageTypes) -> Any:
    """One tracked instance as an InstanceMask (mask run-length encoded, see the .msg); the
    3-D fields all zero and position_valid false without a position."""
    box = instance.bbox
    geometry = instance.geometry
    valid = geometry is not None and geometry.valid

    def point(values: tuple[float, float, float] | None) -> Any:
        x, y, z = values if valid and values is not None else ORIGIN
        return types.point(x=x, y=y, z=z)

    return types.instance(
        track_id=int(instance.track_id),
        class_id=int(instance.class_id),
        class_name=instance.class_name,
        score=float(instance.score),
        bbox=types.region_of_interest(x_offset=box.x, y_offset=box.y, height=box.height,
                                      width=box.width, do_rectify=False),
        age=int(instance.age),
        hits=int(instance.hits),
        mask_rle=types.uint32_array(encode_rle(instance.mask, box)),
        position_valid=valid,
        position=point(geometry.position if geometry else None),
        extent_min=point(geometry.extent_min if geometry else None),
        extent_max=point(geometry.extent_max if geometry else None),
        depth_pixels=geometry.depth_pixels if geometry else 0,
    )


def instance_array_msg(frame: TrackedFrame, header: Any, types: MessageTypes) -> Any:
    """A whole frame's instances, stamped with the source image's header."""
    return types.instance_array(header=header, height=frame.height, width=frame.width,
                                instances=[instance_msg(inst, types) for inst in frame.instances])


def _image_msg(fields: dict[str, Any], header: Any, types: MessageTypes) -> Any:
    fields["data"] = types.byte_array(fields["data"])
    return types.image(header=header, **fields)


def label_image_msg(frame: TrackedFrame, header: Any, types: MessageTypes,
                    encoding: str = "16UC1") -> Any:
    """Image whose pixels hold track ids (0 = no instance), for costmap layers and viewers:
    16UC1 (ids folded into 1..65535, visualization.fold_track_id) or 32SC1."""
    labels = label_image(frame.instances, frame.height, frame.width, encoding)
    return _image_msg(label_to_image_fields(labels), header, types)


def overlay_image(rgb: np.ndarray, frame: TrackedFrame) -> np.ndarray:
    """The debug overlay: the frame with masks coloured by track id, '#id class score'."""
    return render_overlay(rgb, frame.instances)


def rgb_image_msg(rgb: np.ndarray, header: Any, types: MessageTypes) -> Any:
    """An rgb8 image (unpadded rows)."""
    return _image_msg(rgb_to_image_fields(rgb), header, types)


def overlay_msg(rgb: np.ndarray, frame: TrackedFrame, header: Any, types: MessageTypes) -> Any:
    """rgb8 debug image: the source frame with masks coloured by track id and labelled."""
    return rgb_image_msg(overlay_image(rgb, frame), header, types)
