"""3-D per tracked instance from a depth image registered to the colour camera (no ROS).

    depth message (16UC1 mm | 32FC1 m) -> metres, invalid = NaN          depth_to_metres
    camera_info K (or P) at its resolution -> intrinsics at the depth's   CameraIntrinsics
    per instance: the mask sampled on the depth grid, valid depths only,
        pixels far from the median depth dropped (background seen through the mask's
        edge), back-projected -> per-axis medians and percentile box of the points, each
        weighted by the surface its pixel sees (~ depth^3), valid pixel count  instance_geometry

A depth image of another resolution than the colour image (a depth camera at half
resolution, registered to the colour camera) is used at its own resolution: the mask is
sampled at each depth pixel's centre and the intrinsics are scaled to the depth image,
pixel centres kept in place (cx' = (cx + 0.5) * s - 0.5). Lens distortion is not undone:
give depth registered to a rectified or distortion-free colour image (`intrinsics: P` takes
the rectified projection matrix).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from metaseg_ros.results import InstanceGeometry, TrackedFrame, TrackedInstance
from metaseg_ros.settings import check_settings, setting

DEPTH_PREFIX = "depth."
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
# Pixels whose depth lies further than this many robust standard deviations (1.4826 x the
# median absolute deviation) from the mask's median depth are not the object; the band is at
# least MIN_BAND_FRACTION of the median depth (a flat object facing the camera has MAD 0).
MAD_SIGMAS = 3.0
MIN_BAND_FRACTION = 0.03


class DepthError(ValueError):
    """A depth image or camera_info that cannot be used (the frame gets no 3-D)."""


@dataclass(frozen=True)
class DepthSettings:
    """Depth input and the per-instance 3-D (ROS parameters 'depth.<field>')."""

    enabled: bool = setting(
        False, "Subscribe to 'depth' (16UC1 mm or 32FC1 m, registered to the colour camera) "
        "and 'camera_info', and publish each instance's 3-D position")
    tolerance: float = setting(
        0.02, "Largest stamp difference (s) between a colour frame and the depth image matched "
        "to it (the nearest one; 0 = exact stamps only)", minimum=0.0, maximum=1.0)
    wait: float = setting(
        0.1, "Seconds the processing thread waits, after segmenting a frame, for its depth "
        "image to arrive", minimum=0.0, maximum=2.0)
    buffer_size: int = setting(
        10, "Depth images kept for matching by stamp", minimum=1, maximum=100)
    min_depth: float = setting(0.1, "Depths below this (m) are invalid", minimum=0.0,
                               maximum=100.0)
    max_depth: float = setting(20.0, "Depths beyond this (m) are invalid", minimum=0.01,
                               maximum=1000.0)
    min_pixels: int = setting(
        20, "Fewest valid depth pixels inside a mask for a 3-D position", minimum=1,
        maximum=100000)
    extent_percentile: float = setting(
        1.0, "The extent box spans this percentile to (100 - it) of the points per axis",
        minimum=0.0, maximum=25.0)
    intrinsics: str = setting(
        "K", "Camera matrix of camera_info used to back-project: K (raw or distortion-free "
        "images) or P (rectified images)", choices=("K", "P"))

    def __post_init__(self) -> None:
        check_settings(self)
        if self.max_depth <= self.min_depth:
            raise ValueError(f"DepthSettings.max_depth ({self.max_depth}) must be > "
                             f"min_depth ({self.min_depth})")

    @classmethod
    def from_parameters(cls, params: dict[str, Any]) -> DepthSettings:
        """From the node's flat parameters ('depth.<field>'; others ignored)."""
        names = {spec.name for spec in dataclasses.fields(cls)}
        return cls(**{key.removeprefix(DEPTH_PREFIX): value for key, value in params.items()
                      if key.startswith(DEPTH_PREFIX)
                      and key.removeprefix(DEPTH_PREFIX) in names})


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics for images of width x height (pixel centres at integers)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """The intrinsics of the same camera resampled to width x height."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                                (self.cy + 0.5) * sy - 0.5, width, height)


def intrinsics_from_camera_info(msg: Any, matrix: str = "K") -> CameraIntrinsics:
    """CameraIntrinsics of a sensor_msgs/CameraInfo (K, or P for rectified images);
    DepthError for an uncalibrated, binned or cropped one."""
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise DepthError(f"camera_info has no image size ({width}x{height})")
    if int(msg.binning_x) > 1 or int(msg.binning_y) > 1:
        raise DepthError("camera_info with binning is not supported")
    roi = msg.roi
    if int(roi.width) and (int(roi.width), int(roi.height)) != (width, height):
        raise DepthError("camera_info with a region of interest is not supported")
    values = [float(v) for v in (msg.k if matrix == "K" else msg.p)]
    columns = 3 if matrix == "K" else 4
    fx, cx, fy, cy = values[0], values[2], values[columns + 1], values[columns + 2]
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
        raise DepthError(f"camera_info {matrix} has no focal lengths (fx={fx}, fy={fy}): "
                         "is the camera calibrated?")
    return CameraIntrinsics(fx, fy, cx, cy, width, height)


def depth_to_metres(msg: Any) -> np.ndarray:
    """(h, w) float32 metres of a 16UC1/mono16 (mm) or 32FC1 (m) sensor_msgs/Image, with
    NaN where the sensor has no depth (0, NaN, infinite, negative); DepthError otherwise."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if msg.encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"depth encoding '{msg.encoding}' is not one of "
                         f"{', '.join(DEPTH_ENCODINGS)}")
    size = 2 if msg.encoding in ("16UC1", "mono16") else 4
    if height <= 0 or width <= 0:
        raise DepthError(f"empty depth image ({width}x{height})")
    if step < width * size or len(msg.data) != height * step:
        raise DepthError(f"depth image of {width}x{height} {msg.encoding}: step {step} and "
                         f"{len(msg.data)} bytes do not match (expected height*step)")
    order = ">" if msg.is_bigendian else "<"
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(height, step)
    pixels = rows[:, : width * size].copy().view(f"{order}{'u2' if size == 2 else 'f4'}")
    if size == 2:
        metres = pixels.astype(np.float32) / 1000.0
        metres[pixels == 0] = np.nan
    else:
        metres = pixels.astype(np.float32)
        metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


def _mask_on_depth_grid(instance: TrackedInstance, depth_shape: tuple[int, int]
                        ) -> tuple[np.ndarray, slice, slice]:
    """The instance's mask sampled at the centres of the depth pixels inside its box: the
    (rows, cols) bool array and the depth-image slices it covers."""
    mask = instance.mask
    height, width = mask.shape
    depth_h, depth_w = depth_shape
    x0, y0, x1, y1 = instance.bbox.clipped(height, width)
    # Depth pixel j has its centre at colour x = (j + 0.5) * width / depth_w - 0.5.
    cols = np.arange(int(np.floor(x0 * depth_w / width)),
                     min(int(np.ceil(x1 * depth_w / width)), depth_w))
    rows = np.arange(int(np.floor(y0 * depth_h / height)),
                     min(int(np.ceil(y1 * depth_h / height)), depth_h))
    source_x = np.clip(np.floor((cols + 0.5) * width / depth_w).astype(np.int64), 0, width - 1)
    source_y = np.clip(np.floor((rows + 0.5) * height / depth_h).astype(np.int64), 0, height - 1)
    sampled = mask[np.ix_(source_y, source_x)] if rows.size and cols.size else \
        np.zeros((rows.size, cols.size), bool)
    # Only the box holds the mask (TrackedInstance.bbox): nothing outside it counts.
    sampled &= ((source_y >= y0) & (source_y < y1))[:, None] & \
        ((source_x >= x0) & (source_x < x1))[None, :]
    column_slice = slice(int(cols[0]), int(cols[-1]) + 1) if cols.size else slice(0, 0)
    row_slice = slice(int(rows[0]), int(rows[-1]) + 1) if rows.size else slice(0, 0)
    return sampled, row_slice, column_slice


def instance_geometry(instance: TrackedInstance, depth: np.ndarray,
                      intrinsics: CameraIntrinsics, settings: DepthSettings) -> InstanceGeometry:
    """The 3-D of one instance from a depth image in metres (NaN = no depth) and the
    intrinsics of that depth image (see the module docstring for the statistic)."""
    sampled, rows, cols = _mask_on_depth_grid(instance, depth.shape)
    window = depth[rows, cols]
    valid = sampled & np.isfinite(window) & (window >= settings.min_depth) & \
        (window <= settings.max_depth)
    count = int(valid.sum())
    if count < settings.min_pixels:
        return InstanceGeometry(None, None, None, count)
    ys, xs = np.nonzero(valid)
    z = window[ys, xs].astype(np.float64)
    median = float(np.median(z))
    spread = MAD_SIGMAS * 1.4826 * float(np.median(np.abs(z - median)))
    inliers = np.abs(z - median) <= max(spread, MIN_BAND_FRACTION * median)
    if int(inliers.sum()) < settings.min_pixels:
        return InstanceGeometry(None, None, None, count)
    z, u, v = z[inliers], xs[inliers] + cols.start, ys[inliers] + rows.start
    points = np.stack([(u - intrinsics.cx) * z / intrinsics.fx,
                       (v - intrinsics.cy) * z / intrinsics.fy, z], axis=1)
    # Each pixel weighs as much as the surface it sees: on a locally flat surface that is
    # ~ z^3 (z^2 from the distance, one z more from the slant of a plane seen at depth z).
    # A surface turned away from the camera covers more pixels near it; unweighted, they
    # would pull the centre closer (by 2 % of the distance for a plane turned by 40 deg).
    low, position, high = weighted_quantiles(
        points, z ** 3, (settings.extent_percentile / 100.0, 0.5,
                        1.0 - settings.extent_percentile / 100.0))
    # Each pixel sees a patch of the surface half a pixel's footprint around its centre.
    footprint = 0.5 * position[2] * np.array([1.0 / intrinsics.fx, 1.0 / intrinsics.fy, 0.0])
    return InstanceGeometry(_triple(position), _triple(low - footprint),
                            _triple(high + footprint), count)


def weighted_quantiles(points: np.ndarray, weights: np.ndarray, quantiles: tuple[float, ...]
                       ) -> np.ndarray:
    """(len(quantiles), D) per-axis quantiles of (N, D) points with (N,) positive weights:
    each point sits at the middle of its share of the cumulative weight, values in between
    are interpolated (equal weights: the median of an even count is the mean of the two
    middle values)."""
    order = np.argsort(points, axis=0, kind="stable")
    values = np.take_along_axis(points, order, axis=0)
    shares = weights[order]
    middles = np.cumsum(shares, axis=0) - shares / 2.0
    result = np.empty((len(quantiles), points.shape[1]))
    for axis in range(points.shape[1]):
        total = middles[-1, axis] + shares[-1, axis] / 2.0
        result[:, axis] = np.interp(np.asarray(quantiles) * total, middles[:, axis],
                                    values[:, axis])
    return result


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


def frame_geometry(frame: TrackedFrame, depth: np.ndarray, intrinsics: CameraIntrinsics,
                   settings: DepthSettings) -> TrackedFrame:
    """The frame with each instance's geometry from `depth` (metres, any resolution) and the
    camera's intrinsics (scaled here to the depth image's resolution)."""
    at_depth = intrinsics.scaled(depth.shape[1], depth.shape[0])
    return dataclasses.replace(frame, instances=tuple(
        dataclasses.replace(instance, geometry=instance_geometry(instance, depth, at_depth,
                                                                 settings))
        for instance in frame.instances))

