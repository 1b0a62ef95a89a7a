"""Image fields and compressed images <-> numpy RGB, with no ROS import.

`image_to_rgb` / `compressed_to_rgb` read the fields of sensor_msgs/Image and
CompressedImage (duck typing: a ROS message, a rosbags message or a plain object), and
`rgb_to_image_fields` / `encode_compressed` make them. The node (through ros/conversions.py),
the bag reader and writer and the demo all use these.

Every malformed input raises `ImageConversionError` with a message that says what is
wrong; callers count and report the frame as dropped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image as PILImage


class ImageConversionError(ValueError):
    """A message that cannot be turned into an RGB image (bad size, step, encoding, data)."""


class RawImage(Protocol):
    """The fields of sensor_msgs/Image that conversion reads."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


class CompressedImageLike(Protocol):
    """The fields of sensor_msgs/CompressedImage that conversion reads."""

    format: str
    data: Any


@dataclass(frozen=True)
class _Layout:
    channels: int
    bytes_per_channel: int
    order: str  # how to reach RGB: "rgb", "bgr", "rgba", "bgra", "mono", "uyvy", "yuyv"


# ROS image encodings (sensor_msgs/image_encodings.hpp) accepted on input. Note that ROS
# names UYVY "yuv422" and YUYV "yuv422_yuy2"; "uyvy"/"yuyv" are the newer aliases.
_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, 1, "rgb"),
    "bgr8": _Layout(3, 1, "bgr"),
    "rgba8": _Layout(4, 1, "rgba"),
    "bgra8": _Layout(4, 1, "bgra"),
    "mono8": _Layout(1, 1, "mono"),
    "8UC1": _Layout(1, 1, "mono"),
    "8UC3": _Layout(3, 1, "bgr"),  # OpenCV's default channel order
    "rgb16": _Layout(3, 2, "rgb"),
    "bgr16": _Layout(3, 2, "bgr"),
    "rgba16": _Layout(4, 2, "rgba"),
    "bgra16": _Layout(4, 2, "bgra"),
    "mono16": _Layout(1, 2, "mono"),
    "16UC1": _Layout(1, 2, "mono"),
    "yuv422": _Layout(2, 1, "uyvy"),
    "uyvy": _Layout(2, 1, "uyvy"),
    "yuv422_yuy2": _Layout(2, 1, "yuyv"),
    "yuyv": _Layout(2, 1, "yuyv"),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)
MAX_IMAGE_SIDE = 16384


def image_to_rgb(msg: RawImage) -> np.ndarray:
    """Convert a sensor_msgs/Image to a (H, W, 3) uint8 RGB array (a copy).

    Handles row padding (step > width * pixel size), 16-bit data in either byte order
    (scaled to 8 bits), and packed YUV 4:2:2 (BT.601 limited range, as cameras send it).
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    layout = _LAYOUTS.get(msg.encoding)
    if layout is None:
        raise ImageConversionError(
            f"unsupported encoding '{msg.encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    if height == 0 or width == 0:
        raise ImageConversionError(f"empty image ({width}x{height})")
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE:
        raise ImageConversionError(f"image of {width}x{height} exceeds {MAX_IMAGE_SIDE} per side")
    if layout.order in ("uyvy", "yuyv") and width % 2:
        raise ImageConversionError(f"{msg.encoding} needs an even width, got {width}")
    row_bytes = width * layout.channels * layout.bytes_per_channel
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*pixel size = {row_bytes} for {msg.encoding}")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * height:
        raise ImageConversionError(
            f"data has {data.size} bytes, expected height*step = {height}*{step} = {height * step}")
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]

    if layout.bytes_per_channel == 2:
        big_endian = bool(msg.is_bigendian)
        dtype = np.dtype(">u2" if big_endian else "<u2")
        pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, layout.channels)
        pixels = (pixels >> 8).astype(np.uint8)
    else:
        pixels = rows.reshape(height, width, layout.channels)

    if layout.order == "rgb":  # a copy: the message's buffer is read-only
        return pixels.copy()
    if layout.order == "bgr":
        return np.ascontiguousarray(pixels[..., ::-1])
    if layout.order == "rgba":
        return np.ascontiguousarray(pixels[..., :3])
    if layout.order == "bgra":
        return np.ascontiguousarray(pixels[..., 2::-1])
    if layout.order == "mono":
        return np.repeat(pixels, 3, axis=2)
    return _yuv422_to_rgb(pixels.reshape(height, width * 2), uyvy=layout.order == "uyvy")


def _yuv422_to_rgb(packed: np.ndarray, uyvy: bool) -> np.ndarray:
    """Packed 4:2:2 (two pixels share U and V) to RGB, BT.601 limited range."""
    height = packed.shape[0]
    quads = packed.reshape(height, -1, 4).astype(np.float32)
    if uyvy:
        u, y0, v, y1 = quads[..., 0], quads[..., 1], quads[..., 2], quads[..., 3]
    else:
        y0, u, y1, v = quads[..., 0], quads[..., 1], quads[..., 2], quads[..., 3]
    y = np.stack([y0, y1], axis=-1).reshape(height, -1) - 16.0
    u = np.repeat(u - 128.0, 2, axis=1)
    v = np.repeat(v - 128.0, 2, axis=1)
    y = 1.164 * y
    rgb = np.stack([y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def compressed_to_rgb(msg: CompressedImageLike) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG) to a (H, W, 3) uint8 RGB array."""
    fmt = msg.format.lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(
            f"compressedDepth images are not supported (format '{msg.format}')")
    payload = bytes(msg.data)
    if not payload:
        raise ImageConversionError("compressed image has no data")
    try:
        with PILImage.open(io.BytesIO(payload)) as image:
            if image.format not in ("JPEG", "PNG"):
                raise ImageConversionError(
                    f"compressed format {image.format} is not supported (jpeg, png)")
            image.load()
            if image.mode in ("I;16", "I;16B", "I"):
                array = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
                rgb = np.repeat(array[..., None], 3, axis=2)
            else:
                rgb = np.asarray(image.convert("RGB"))
    except ImageConversionError:
        raise
    except Exception as error:  # PIL raises many types for corrupted data
        raise ImageConversionError(f"cannot decode {msg.format or 'compressed'} image: {error}") \
            from error
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageConversionError("decoded image is empty")
    return np.ascontiguousarray(rgb)


def rgb_to_image_fields(rgb: np.ndarray) -> dict[str, Any]:
    """Fields of a sensor_msgs/Image (rgb8, unpadded) holding `rgb` (H, W, 3) uint8."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    return {"height": height, "width": width, "encoding": "rgb8", "is_bigendian": 0,
            "step": width * 3, "data": np.ascontiguousarray(rgb).tobytes()}


def label_to_image_fields(labels: np.ndarray) -> dict[str, Any]:
    """Fields of a sensor_msgs/Image (little endian) holding (H, W) track ids: 32SC1 for
    int32 labels, 16UC1 for uint16 ones."""
    if labels.ndim != 2:
        raise ValueError(f"expected a (H, W) label image, got {labels.shape}")
    encodings = {np.dtype(np.int32): ("32SC1", "<i4"), np.dtype(np.uint16): ("16UC1", "<u2")}
    if labels.dtype not in encodings:
        raise ValueError(f"label images are int32 or uint16, got {labels.dtype}")
    encoding, dtype = encodings[labels.dtype]
    height, width = labels.shape
    data = np.ascontiguousarray(labels, dtype=dtype).tobytes()
    return {"height": height, "width": width, "encoding": encoding, "is_bigendian": 0,
            "step": width * labels.dtype.itemsize, "data": data}


COMPRESSED_FORMATS = ("jpeg", "png")


def encode_compressed(rgb: np.ndarray, image_format: str, jpeg_quality: int = 95) -> bytes:
    """(H, W, 3) uint8 RGB as JPEG (4:4:4, `jpeg_quality`) or lossless PNG bytes."""
    if image_format not in COMPRESSED_FORMATS:
        raise ValueError(f"image format must be one of {COMPRESSED_FORMATS}, not "
                         f"{image_format!r}")
    buffer = io.BytesIO()
    options = {"quality": jpeg_quality, "subsampling": 0} if image_format == "jpeg" else {}
    PILImage.fromarray(rgb).save(buffer, format=image_format.upper(), **options)
    return buffer.getvalue()
