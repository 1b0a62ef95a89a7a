"""Decoding the node's incoming image messages: cv_bridge when it is importable, else the
pure-numpy converters of metaseg_ros.image_codec (which import no ROS module)."""

from __future__ import annotations

import numpy as np

from metaseg_ros.image_codec import (
    CompressedImageLike,
    ImageConversionError,
    RawImage,
    compressed_to_rgb,
    image_to_rgb,
)


class ImageDecoder:
    """Turns incoming image messages into RGB arrays, through cv_bridge when available.

    backend: "auto" (cv_bridge when importable, else numpy), "numpy" or "cv_bridge".
    """

    def __init__(self, backend: str = "auto") -> None:
        if backend not in ("auto", "numpy", "cv_bridge"):
            raise ValueError(f"image converter must be auto, numpy or cv_bridge, not '{backend}'")
        self._bridge = None
        if backend in ("auto", "cv_bridge"):
            try:
                from cv_bridge import CvBridge
                self._bridge = CvBridge()
            except Exception as error:  # ImportError, or a broken install (numpy ABI)
                if backend == "cv_bridge":
                    raise RuntimeError(f"cv_bridge requested but not usable: {error}") from error
        self.backend = "cv_bridge" if self._bridge is not None else "numpy"

    def decode(self, msg: RawImage) -> np.ndarray:
        """(H, W, 3) uint8 RGB from a sensor_msgs/Image; raises ImageConversionError."""
        if self._bridge is None:
            return image_to_rgb(msg)
        _check_raw_geometry(msg)
        try:
            return np.ascontiguousarray(self._bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception as error:
            raise ImageConversionError(f"cv_bridge cannot convert {msg.encoding}: {error}") \
                from error

    def decode_compressed(self, msg: CompressedImageLike) -> np.ndarray:
        """(H, W, 3) uint8 RGB from a sensor_msgs/CompressedImage; raises ImageConversionError."""
        if self._bridge is None:
            return compressed_to_rgb(msg)
        try:
            rgb = self._bridge.compressed_imgmsg_to_cv2(msg, desired_encoding="rgb8")
        except Exception as error:
            raise ImageConversionError(f"cv_bridge cannot decode {msg.format}: {error}") from error
        if rgb is None or rgb.size == 0:
            raise ImageConversionError(f"cannot decode {msg.format or 'compressed'} image")
        return np.ascontiguousarray(rgb)


def _check_raw_geometry(msg: RawImage) -> None:
    """The size checks cv_bridge skips (it can crash or read garbage on short data)."""
    if int(msg.height) == 0 or int(msg.width) == 0:
        raise ImageConversionError(f"empty image ({msg.width}x{msg.height})")
    if len(msg.data) < int(msg.step) * int(msg.height):
        raise ImageConversionError(
            f"data has {len(msg.data)} bytes, expected height*step = "
            f"{msg.height}*{msg.step} = {int(msg.height) * int(msg.step)}")
