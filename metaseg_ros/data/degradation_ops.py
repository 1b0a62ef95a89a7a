"""The pixel operations of the synthetic videos' degradations (data/degradations.py holds
their configuration and schedule): blur, noise, exposure, flicker, JPEG, dropped rows, a
blurred object, the occluder's texture. Pure numpy and Pillow; pixel arithmetic is in
integers or IEEE-exact float operations, so every machine renders the same frames.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from metaseg_ros.data.degradations import (
    IMAGE_KINDS,
    DegradationConfig,
    OccluderPlan,
    integer_in,
    uniform_in,
)


def motion_blur_sum(image: np.ndarray, length: int, angle: float) -> np.ndarray:
    """Sum (uint32) of `length` copies of an (H, W[, C]) image shifted along a line through
    the pixel at `angle` radians (edges replicated); divide by length for the blur."""
    length = max(1, int(length))
    steps = [k - (length - 1) / 2 for k in range(length)]
    offsets = [(round(s * math.sin(angle)), round(s * math.cos(angle))) for s in steps]
    reach = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    pad = [(reach, reach), (reach, reach)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="edge").astype(np.uint32)
    height, width = image.shape[:2]
    total = np.zeros(image.shape, dtype=np.uint32)
    for dy, dx in offsets:
        total += padded[reach + dy:reach + dy + height, reach + dx:reach + dx + width]
    return total


def _divide(total: np.ndarray, length: int) -> np.ndarray:
    """Rounded integer division back to uint8."""
    return ((total + length // 2) // length).astype(np.uint8)


def _scale(frame: np.ndarray, gain: np.ndarray | float, noise: np.ndarray | None = None
           ) -> np.ndarray:
    out = frame.astype(np.float64) * gain
    if noise is not None:
        out += noise
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def jpeg_roundtrip(frame: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with Pillow's JPEG at the given quality (4:2:0 chroma)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=int(quality), subsampling=2)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()


def drop_rows(frame: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Lose about `fraction` of the rows in 1-3 bands: zeroed, random bytes, or the last
    good row smeared down (what decoders show for missing packets)."""
    out = frame.copy()
    height = frame.shape[0]
    bands = int(rng.integers(1, 4))
    rows = max(1, round(fraction * height / bands))
    for _ in range(bands):
        top = int(rng.integers(0, max(1, height - rows + 1)))
        mode = int(rng.integers(3))
        band = np.s_[top:top + rows]
        if mode == 0:
            out[band] = 0
        elif mode == 1:
            out[band] = rng.integers(0, 256, size=out[band].shape, dtype=np.uint8)
        else:
            out[band] = out[max(top - 1, 0)] if top > 0 else out[min(top + rows, height - 1)]
    return out


def degrade_frame(frame: np.ndarray, kind: str, config: DegradationConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """One (H, W, 3) uint8 frame with the image degradation `kind` ('' returns it as is)."""
    height, width = frame.shape[:2]
    side = min(height, width)
    if kind == "":
        return frame
    if kind == "blur":
        length = max(2, round(uniform_in(rng, config.blur_length) * side))
        return _divide(motion_blur_sum(frame, length, float(rng.uniform(0, math.pi))), length)
    if kind == "noise":
        return _scale(frame, 1.0, rng.normal(0, uniform_in(rng, config.noise_sigma),
                                             frame.shape))
    if kind == "dark":
        return _scale(frame, uniform_in(rng, config.dark_gain),
                      rng.normal(0, config.dark_noise_sigma, frame.shape))
    if kind == "flicker":
        gain = uniform_in(rng, config.flicker_gain)
        gain = gain if rng.random() < 0.5 else 1 / gain
        period = uniform_in(rng, (0.15, 0.5)) * height
        phase = uniform_in(rng, (0, 2 * math.pi))
        rows = np.array([gain * (1 + config.flicker_banding * math.sin(
            2 * math.pi * y / period + phase)) for y in range(height)])
        return _scale(frame, rows[:, None, None])
    if kind == "jpeg":
        return jpeg_roundtrip(frame, integer_in(rng, config.jpeg_quality))
    if kind == "dropout":
        return drop_rows(frame, uniform_in(rng, config.dropout_fraction), rng)
    raise ValueError(f"unknown image degradation {kind!r}: {IMAGE_KINDS}")


def frame_rng(seed: int, video_index: int, t: int) -> np.random.Generator:
    """The random stream of one frame's degradation parameters."""
    return np.random.default_rng([seed, video_index, t, 0xDE6])


def blur_region(frame: np.ndarray, mask: np.ndarray, length: int, angle: float
                ) -> np.ndarray:
    """Motion-blur the object under `mask` (and smear it over its surroundings): frame x
    (1 - a) + blurred frame x a, with a the mask blurred the same way (integer exact)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0 or length < 2:
        return frame
    reach = length // 2 + 1
    y0, y1 = max(rows[0] - reach, 0), min(rows[-1] + reach + 1, frame.shape[0])
    x0, x1 = max(cols[0] - reach, 0), min(cols[-1] + reach + 1, frame.shape[1])
    crop = frame[y0:y1, x0:x1]
    blurred = motion_blur_sum(crop, length, angle)            # sum of `length` pixels
    cover = motion_blur_sum(mask[y0:y1, x0:x1].astype(np.uint8), length, angle)[..., None]
    mixed = crop.astype(np.uint32) * (length - cover) * length + blurred * cover
    out = frame.copy()
    out[y0:y1, x0:x1] = _divide(mixed, length * length)
    return out


def occluder_texture(background: np.ndarray, plan: OccluderPlan, height: int, bar: int
                     ) -> np.ndarray:
    """(height, bar, 3) uint8 texture of the occluder: a darkened, defocused crop of a
    background photograph (something close to the camera)."""
    _, u, v, zoom, shade = plan.texture
    bg_h, bg_w = background.shape[:2]
    crop_h = (0.3 + 0.5 * zoom) * bg_h
    crop_w = min(crop_h * bar / height, bg_w)
    left, top = u * (bg_w - crop_w), v * (bg_h - crop_h)
    image = Image.fromarray(background).resize((bar, height), Image.BILINEAR,
                                               box=(left, top, left + crop_w, top + crop_h))
    sharp = np.asarray(image)
    defocus = _divide(motion_blur_sum(sharp, 5, 0.0), 5)
    return _scale(defocus, 0.35 + 0.4 * shade)
