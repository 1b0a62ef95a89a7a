"""Image message -> RGB conversion without cv_bridge (all supported encodings, bad input)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PILImage

from metaseg_ros.image_codec import ImageConversionError, compressed_to_rgb, image_to_rgb
from metaseg_ros.ros.conversions import ImageDecoder

pytestmark = pytest.mark.torch_free

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)


def raw(encoding: str, pixels: np.ndarray, padding: int = 0, big_endian: bool = False):
    """A sensor_msgs/Image-like object holding `pixels` with `padding` bytes per row."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1).view(np.uint8) if pixels.dtype != np.uint8 \
        else pixels.reshape(height, -1)
    rows = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    width = pixels.shape[1]
    return SimpleNamespace(height=height, width=width, encoding=encoding,
                           is_bigendian=int(big_endian), step=rows.shape[1],
                           data=rows.tobytes())


@pytest.mark.parametrize("padding", [0, 7])
def test_eight_bit_colour_encodings(padding: int) -> None:
    alpha = np.full((*RGB.shape[:2], 1), 200, np.uint8)
    cases = {
        "rgb8": RGB, "bgr8": RGB[..., ::-1], "rgba8": np.concatenate([RGB, alpha], axis=2),
        "bgra8": np.concatenate([RGB[..., ::-1], alpha], axis=2), "8UC3": RGB[..., ::-1],
    }
    for encoding, pixels in cases.items():
        result = image_to_rgb(raw(encoding, np.ascontiguousarray(pixels), padding))
        np.testing.assert_array_equal(result, RGB, err_msg=encoding)
        assert result.flags.c_contiguous and result.dtype == np.uint8


@pytest.mark.parametrize("padding", [0, 3])
def test_mono_encodings(padding: int) -> None:
    gray = RGB[..., 0]
    for encoding in ("mono8", "8UC1"):
        result = image_to_rgb(raw(encoding, gray, padding))
        assert result.shape == (6, 10, 3)
        np.testing.assert_array_equal(result, np.repeat(gray[..., None], 3, axis=2))
    wide = gray.astype(np.uint16) * 256 + 77  # low byte must be dropped
    for big_endian in (False, True):
        pixels = wide.astype(">u2" if big_endian else "<u2")
        result = image_to_rgb(raw("mono16", pixels, padding * 2, big_endian))
        np.testing.assert_array_equal(result[..., 1], gray)


def test_sixteen_bit_colour() -> None:
    pixels = (RGB.astype(np.uint16) << 8).astype("<u2")
    np.testing.assert_array_equal(image_to_rgb(raw("rgb16", pixels)), RGB)
    np.testing.assert_array_equal(
        image_to_rgb(raw("bgr16", np.ascontiguousarray(pixels[..., ::-1]))), RGB)


def _yuv_from_rgb(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 limited-range Y, U, V (as a camera would produce them)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return y, u, v


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
@pytest.mark.parametrize("padding", [0, 4])
def test_yuv422(encoding: str, padding: int) -> None:
    # Pairs of equal pixels share chroma exactly, so the round trip is exact up to rounding.
    rgb = np.repeat(RGB[:, ::2], 2, axis=1)
    y, u, v = _yuv_from_rgb(rgb)
    u_pair, v_pair = u[:, ::2], v[:, ::2]
    y0, y1 = y[:, ::2], y[:, 1::2]
    if encoding in ("yuv422", "uyvy"):  # ROS "yuv422" is UYVY
        quads = np.stack([u_pair, y0, v_pair, y1], axis=-1)
    else:
        quads = np.stack([y0, u_pair, y1, v_pair], axis=-1)
    packed = np.rint(quads).astype(np.uint8).reshape(rgb.shape[0], rgb.shape[1], 2)
    result = image_to_rgb(raw(encoding, packed, padding))
    assert np.abs(result.astype(int) - rgb.astype(int)).max() <= 3


def test_bad_input_gives_clear_errors() -> None:
    good = raw("rgb8", RGB)
    with pytest.raises(ImageConversionError, match="unsupported encoding 'bayer_rggb8'"):
        image_to_rgb(SimpleNamespace(**{**vars(good), "encoding": "bayer_rggb8"}))
    with pytest.raises(ImageConversionError, match="step 20 is smaller"):
        image_to_rgb(SimpleNamespace(**{**vars(good), "step": 20}))
    with pytest.raises(ImageConversionError, match="expected height\\*step"):
        image_to_rgb(SimpleNamespace(**{**vars(good), "data": good.data[:-1]}))
    with pytest.raises(ImageConversionError, match="empty image"):
        image_to_rgb(SimpleNamespace(**{**vars(good), "height": 0, "data": b""}))
    with pytest.raises(ImageConversionError, match="even width"):
        image_to_rgb(SimpleNamespace(height=2, width=3, encoding="yuyv", is_bigendian=0,
                                     step=6, data=bytes(12)))


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


def test_compressed_png_is_lossless_and_jpeg_close() -> None:
    png = SimpleNamespace(format="png", data=_encode(RGB, "PNG"))
    np.testing.assert_array_equal(compressed_to_rgb(png), RGB)
    smooth = np.repeat(np.repeat(RGB, 8, axis=0), 8, axis=1)
    jpeg = SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=_encode(smooth, "JPEG"))
    decoded = compressed_to_rgb(jpeg)
    assert decoded.shape == smooth.shape
    assert np.abs(decoded.astype(int) - smooth.astype(int)).mean() < 12


def test_corrupted_compressed_images_are_rejected() -> None:
    jpeg = _encode(RGB, "JPEG")
    for data, pattern in [(b"", "no data"), (b"not an image at all", "cannot decode"),
                          (jpeg[: len(jpeg) // 3], "cannot decode")]:
        with pytest.raises(ImageConversionError, match=pattern):
            compressed_to_rgb(SimpleNamespace(format="jpeg", data=data))


def test_decoder_falls_back_to_numpy_without_cv_bridge() -> None:
    decoder = ImageDecoder("auto")
    try:
        import cv_bridge  # noqa: F401
    except ImportError:
        assert decoder.backend == "numpy"
    np.testing.assert_array_equal(decoder.decode(raw("bgr8", RGB[..., ::-1].copy())), RGB)
    with pytest.raises(ValueError, match="auto, numpy or cv_bridge"):
        ImageDecoder("opencv")


def test_converted_frames_are_writable_copies() -> None:
    """torch.from_numpy warns on (and cannot safely use) a read-only array: the message's
    buffer must not leak into the pipeline."""
    data = bytes(np.arange(2 * 3 * 3, dtype=np.uint8))
    for encoding in ("rgb8", "bgr8", "mono8"):
        channels = 1 if encoding == "mono8" else 3
        msg = SimpleNamespace(height=2, width=3, encoding=encoding, is_bigendian=0,
                              step=3 * channels, data=data[: 6 * channels])
        rgb = image_to_rgb(msg)
        assert rgb.flags.writeable and rgb.flags.c_contiguous, encoding
