"""3-D per instance from depth (metaseg_ros/geometry.py) on synthetic depth of known geometry:
rectangles facing the camera and tilted, a box in front of a wall seen through a mask that
spills onto the wall, at several distances and intrinsics, depth at full and half
resolution, holes and out-of-range depths; the depth codecs; stamp matching."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from metaseg_ros.geometry import (
    CameraIntrinsics,
    DepthError,
    DepthSettings,
    depth_to_metres,
    frame_geometry,
    intrinsics_from_camera_info,
)
from metaseg_ros.results import BoundingBox, TrackedFrame, TrackedInstance
from metaseg_ros.stamp_match import StampBuffer

pytestmark = pytest.mark.torch_free

CAMERAS = {
    "vga": CameraIntrinsics(500.0, 500.0, 319.5, 239.5, 640, 480),
    "off-centre": CameraIntrinsics(610.0, 585.0, 301.3, 251.8, 640, 480),
    "small wide": CameraIntrinsics(190.0, 190.0, 161.0, 118.0, 320, 240),
}
WALL = 9.0  # m, behind everything
SETTINGS = DepthSettings(enabled=True)


def rays(camera: CameraIntrinsics, depth_shape: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) ray directions (z = 1) through the centres of a depth image of
    `depth_shape` registered to the colour camera: depth pixel j sees colour x = (j + 0.5) *
    W / w - 0.5 (no scaled intrinsics involved: they are what is under test)."""
    h, w = depth_shape
    u = (np.arange(w) + 0.5) * camera.width / w - 0.5
    v = (np.arange(h) + 0.5) * camera.height / h - 0.5
    return np.stack(np.broadcast_arrays(((u - camera.cx) / camera.fx)[None, :],
                                        ((v - camera.cy) / camera.fy)[:, None],
                                        np.ones((h, w))), axis=-1)


def rectangle(directions: np.ndarray, center, width: float, height: float,
              yaw: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Depth (z) and hit mask of a width x height rectangle centred at `center`, turned by
    `yaw` about the camera's y axis (0: facing the camera)."""
    center = np.asarray(center, float)
    normal = np.array([np.sin(yaw), 0.0, np.cos(yaw)])
    across = np.array([np.cos(yaw), 0.0, -np.sin(yaw)])
    t = (center @ normal) / (directions @ normal)
    offset = directions * t[..., None] - center
    hit = (np.abs(offset @ across) <= width / 2) & (np.abs(offset[..., 1]) <= height / 2) & (t > 0)
    return np.where(hit, t, np.inf), hit


def box(directions: np.ndarray, low, high) -> tuple[np.ndarray, np.ndarray]:
    """Depth and hit mask of an axis-aligned box (slab test)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = np.asarray(low, float) / directions
        t1 = np.asarray(high, float) / directions
    near = np.nanmax(np.minimum(t0, t1), axis=-1)
    far = np.nanmin(np.maximum(t0, t1), axis=-1)
    hit = (near <= far) & (near > 0)
    return np.where(hit, near, np.inf), hit  # t is z: directions have z = 1


def frame_of(mask: np.ndarray) -> TrackedFrame:
    instance = TrackedInstance(track_id=7, class_id=0, class_name="person", score=0.9,
                               mask=mask, bbox=BoundingBox.from_mask(mask), age=1, hits=1)
    return TrackedFrame(mask.shape[0], mask.shape[1], (instance,))


def scene_depth(camera: CameraIntrinsics, depth_shape, obj) -> np.ndarray:
    """Depth in metres (float32) of the object `obj` (a function of rays) before the wall."""
    depth, _ = obj(rays(camera, depth_shape))
    return np.minimum(depth, WALL).astype(np.float32)


def colour_mask(camera: CameraIntrinsics, obj, spill: int = 0) -> np.ndarray:
    """The object's mask at the colour resolution, grown by `spill` pixels onto the wall (as
    a segmentation mask that is too large)."""
    _, hit = obj(rays(camera, (camera.height, camera.width)))
    if spill:
        from scipy import ndimage

        hit = ndimage.binary_dilation(hit, iterations=spill)
    return hit


def geometry_of(camera, depth_shape, obj, spill=0, settings=SETTINGS):
    depth = scene_depth(camera, depth_shape, obj)
    frame = frame_geometry(frame_of(colour_mask(camera, obj, spill)), depth, camera, settings)
    return frame.instances[0].geometry


def check(geometry, position, low, high, distance: float) -> None:
    """Position within 1 % of the distance; extent within 5 % of the size along each axis
    (1 % of the distance along an axis where the object is flat). The percentile box (1 to
    99) is 2 % short of a uniform surface's; the pixel grid takes up to ~2.5 % more from an
    object 20 depth pixels wide (the smallest here: 4.5 % short in depth)."""
    assert geometry.valid
    error = np.linalg.norm(np.subtract(geometry.position, position))
    assert error < 0.01 * distance, (geometry.position, position)
    size = np.subtract(high, low)
    got = np.subtract(geometry.extent_max, geometry.extent_min)
    for axis in range(3):
        allowed = 0.05 * size[axis] if size[axis] > 0 else 0.01 * distance
        assert abs(got[axis] - size[axis]) <= allowed, (axis, got, size)


@pytest.mark.parametrize("name", CAMERAS)
@pytest.mark.parametrize("distance", [1.0, 3.0, 7.0])
@pytest.mark.parametrize("half", [False, True], ids=["full", "half-resolution"])
def test_rectangle_facing_the_camera(name, distance, half) -> None:
    camera = CAMERAS[name]
    shape = (camera.height // 2, camera.width // 2) if half else (camera.height, camera.width)
    center = (0.1 * distance, -0.05 * distance, distance)
    width, height = 0.35 * distance, 0.25 * distance
    geometry = geometry_of(camera, shape, lambda d: rectangle(d, center, width, height))
    check(geometry, center, np.subtract(center, (width / 2, height / 2, 0)),
          np.add(center, (width / 2, height / 2, 0)), distance)


@pytest.mark.parametrize("name", CAMERAS)
@pytest.mark.parametrize("half", [False, True], ids=["full", "half-resolution"])
def test_tilted_rectangle(name, half) -> None:
    camera = CAMERAS[name]
    shape = (camera.height // 2, camera.width // 2) if half else (camera.height, camera.width)
    center, width, height, yaw = (-0.2, 0.1, 4.0), 1.2, 0.8, np.radians(40)
    geometry = geometry_of(camera, shape, lambda d: rectangle(d, center, width, height, yaw))
    half_x, half_z = width / 2 * np.cos(yaw), width / 2 * np.sin(yaw)
    # Projection makes the near half of the rectangle cover more pixels; weighted by the
    # surface they see, they do not pull the centre towards them.
    check(geometry, center, np.subtract(center, (half_x, height / 2, half_z)),
          np.add(center, (half_x, height / 2, half_z)), 4.0)


@pytest.mark.parametrize("distance", [1.5, 4.0, 8.0])
@pytest.mark.parametrize("half", [False, True], ids=["full", "half-resolution"])
def test_box_in_front_of_a_wall_through_a_mask_that_spills_onto_the_wall(distance, half) -> None:
    camera = CAMERAS["vga"]
    shape = (240, 320) if half else (480, 640)
    low = (0.0, -0.4 * distance / 3, distance)
    high = (0.6 * distance / 3, 0.2 * distance / 3, distance + 0.5)
    geometry = geometry_of(camera, shape, lambda d: box(d, low, high), spill=4)
    front = ((low[0] + high[0]) / 2, (low[1] + high[1]) / 2, distance)
    # Only the front face is visible (the x = 0 face is seen edge-on): it is the extent.
    check(geometry, front, low, (high[0], high[1], distance), distance)


def test_invalid_depth_is_excluded_and_counted() -> None:
    camera = CAMERAS["vga"]
    center, width, height = (0.0, 0.0, 2.5), 0.8, 0.6

    def obj(d):
        return rectangle(d, center, width, height)

    clean = scene_depth(camera, (480, 640), obj)
    mask = colour_mask(camera, obj)
    holes = clean.copy()
    rng = np.random.default_rng(0)
    holes[rng.random(holes.shape) < 0.3] = np.nan              # no return
    holes[200:210] = 50.0                                       # beyond max_depth
    holes[300:305] = 0.05                                       # nearer than min_depth
    full = frame_geometry(frame_of(mask), clean, camera, SETTINGS).instances[0].geometry
    sparse = frame_geometry(frame_of(mask), holes, camera, SETTINGS).instances[0].geometry
    valid = mask & np.isfinite(holes) & (holes >= 0.1) & (holes <= 20.0)
    assert sparse.depth_pixels == int(valid.sum()) < 0.7 * full.depth_pixels
    check(sparse, center, (-0.4, -0.3, 2.5), (0.4, 0.3, 2.5), 2.5)


def test_too_few_valid_pixels_give_no_position() -> None:
    camera = CAMERAS["vga"]
    depth = np.full((480, 640), np.nan, np.float32)
    mask = np.zeros((480, 640), bool)
    mask[100:110, 100:110] = True
    depth[100:102, 100:110] = 2.0  # 20 of 100 pixels valid; min_pixels 25 wants more
    geometry = frame_geometry(frame_of(mask), depth, camera,
                              DepthSettings(min_pixels=25)).instances[0].geometry
    assert not geometry.valid and geometry.position is None and geometry.depth_pixels == 20
    assert frame_geometry(frame_of(mask), depth, camera, DepthSettings(min_pixels=20)
                          ).instances[0].geometry.valid


def test_scaled_intrinsics_keep_pixel_centres() -> None:
    camera = CAMERAS["off-centre"]
    half = camera.scaled(320, 240)
    # The colour pixel centre x maps to depth coordinate (x + 0.5) / 2 - 0.5; the principal
    # point (a point, not a pixel) maps the same way.
    assert half.cx == pytest.approx((camera.cx + 0.5) / 2 - 0.5)
    assert (half.fx, half.fy) == (camera.fx / 2, camera.fy / 2)
    assert camera.scaled(640, 480) == camera


def camera_info(k=(500.0, 0, 320.0, 0, 500.0, 240.0, 0, 0, 1), p=None, size=(640, 480),
                binning=0, roi=(0, 0)):
    return SimpleNamespace(width=size[0], height=size[1], k=list(k),
                           p=list(p or (600.0, 0, 300.0, 0, 0, 610.0, 250.0, 0, 0, 0, 1, 0)),
                           binning_x=binning, binning_y=binning,
                           roi=SimpleNamespace(width=roi[0], height=roi[1]))


def test_camera_info_k_p_and_what_is_refused() -> None:
    assert intrinsics_from_camera_info(camera_info()) == \
        CameraIntrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)
    assert intrinsics_from_camera_info(camera_info(), "P") == \
        CameraIntrinsics(600.0, 610.0, 300.0, 250.0, 640, 480)
    for info, message in [(camera_info(k=(0,) * 9), "calibrated"),
                          (camera_info(size=(0, 0)), "no image size"),
                          (camera_info(binning=2), "binning"),
                          (camera_info(roi=(100, 80)), "region of interest")]:
        with pytest.raises(DepthError, match=message):
            intrinsics_from_camera_info(info)


def depth_msg(pixels: np.ndarray, encoding: str, big_endian: bool = False, padding: int = 0):
    order = ">" if big_endian else "<"
    rows = np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder(order)))
    data = rows.view(np.uint8).reshape(pixels.shape[0], -1)
    data = np.concatenate([data, np.zeros((data.shape[0], padding), np.uint8)], axis=1)
    return SimpleNamespace(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                           is_bigendian=int(big_endian), step=data.shape[1], data=data.tobytes())


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("padding", [0, 6])
def test_depth_encodings(big_endian, padding) -> None:
    millimetres = np.array([[0, 1000, 2500], [65535, 7, 300]], np.uint16)
    metres = depth_to_metres(depth_msg(millimetres, "16UC1", big_endian, padding))
    np.testing.assert_array_equal(np.isnan(metres), millimetres == 0)
    np.testing.assert_allclose(metres[millimetres > 0], millimetres[millimetres > 0] / 1000.0)
    floats = np.array([[np.nan, 1.25, np.inf], [-1.0, 0.0, 4.5]], np.float32)
    metres = depth_to_metres(depth_msg(floats, "32FC1", big_endian, padding))
    np.testing.assert_array_equal(np.isnan(metres), [[True, False, True], [True, True, False]])
    assert metres[0, 1] == np.float32(1.25) and metres[1, 2] == np.float32(4.5)


def test_bad_depth_images_are_clear_errors() -> None:
    good = depth_msg(np.ones((4, 5), np.uint16), "16UC1")
    for change, message in [({"encoding": "rgb8"}, "not one of"),
                            ({"data": good.data[:-2]}, "expected height\\*step"),
                            ({"height": 0}, "empty"), ({"step": 4}, "do not match")]:
        with pytest.raises(DepthError, match=message):
            depth_to_metres(SimpleNamespace(**{**vars(good), **change}))


def test_depth_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        DepthSettings(min_depth=5.0, max_depth=2.0)
    assert DepthSettings.from_parameters({"depth.enabled": True, "score_threshold": 0.3,
                                          "depth.tolerance": 0}).tolerance == 0.0


def test_stamp_buffer_nearest_within_tolerance_and_bounded() -> None:
    buffer: StampBuffer[str] = StampBuffer(3)
    for stamp in (100, 200, 300, 400):
        buffer.put(stamp, f"d{stamp}")
    assert len(buffer) == 3  # the oldest went
    assert buffer.nearest(100, 10) is None
    assert buffer.nearest(300, 0) == "d300"
    assert buffer.nearest(260, 50) == "d300" and buffer.nearest(240, 50) == "d200"
    assert buffer.nearest(260, 30) is None


def test_stamp_buffer_waits_only_while_a_nearer_item_can_come() -> None:
    buffer: StampBuffer[str] = StampBuffer(5)
    buffer.put(100, "old")
    start = time.monotonic()
    # Nothing at or after 500 yet: it waits, and the item put meanwhile is returned.
    timer = threading.Timer(0.2, buffer.put, (505, "late"))
    timer.start()
    assert buffer.wait_nearest(500, 10, timeout=5.0) == "late"
    assert 0.15 < time.monotonic() - start < 4.0
    # An item after the stamp has arrived: no nearer one can come, no waiting.
    start = time.monotonic()
    assert buffer.wait_nearest(490, 10, timeout=5.0) is None
    assert time.monotonic() - start < 1.0
    # Nothing within the tolerance and nothing later: waits for the timeout, then None.
    start = time.monotonic()
    assert buffer.wait_nearest(10_000, 10, timeout=0.3) is None
    assert time.monotonic() - start >= 0.29
