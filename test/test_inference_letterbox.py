"""Letterboxing frames into the network input and undoing it exactly on masks."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from metaseg_ros.inference.preprocess import Letterbox, letterbox_image, masks_to_frame

INPUT = (128, 128)
PAD = (127.0, 127.0, 127.0)

# (frame height, frame width) -> expected resized size inside the 128x128 input.
FITS = {(240, 320): (96, 128), (320, 240): (128, 96), (100, 400): (32, 128),
        (128, 128): (128, 128), (64, 96): (85, 128), (480, 480): (128, 128)}


@pytest.mark.parametrize("frame, resized", list(FITS.items()))
def test_fit_keeps_the_aspect_ratio(frame, resized):
    box = Letterbox.fit(*frame, INPUT)
    assert (box.resized_h, box.resized_w) == resized
    assert (box.height, box.width, box.input_h, box.input_w) == (*frame, *INPUT)


def frame_rectangle(box: Letterbox, stride: int) -> tuple[int, int, int, int]:
    """A rectangle (top, bottom, left, right) in frame pixels whose edges fall on whole
    stride-`stride` cells of the network input, so its image in every space is exact."""
    edges = []
    for frame_size, resized in ((box.height, box.resized_h), (box.width, box.resized_w)):
        ratio = Fraction(frame_size, resized)
        cells = [c for c in range(resized // stride + 1) if (c * stride * ratio).denominator == 1]
        start, stop = cells[len(cells) // 4], cells[(3 * len(cells)) // 4]
        assert stop > start, "no exact rectangle for this aspect ratio"
        edges += [start, stop]
    return tuple(edges)  # in cells


@pytest.mark.parametrize("frame", [(240, 320), (320, 240), (100, 400), (128, 128)])
@pytest.mark.parametrize("stride", [1, 4])
def test_mask_in_network_space_maps_back_to_the_right_frame_pixels(frame, stride):
    """stride 1: logits at the input resolution; stride 4: at the network's mask resolution.

    A band of rows and a band of columns (bilinear resizing rounds a rectangle's corners, so
    each axis is checked on its own): their edges land on exactly the frame pixels the
    letterbox's scale maps them to.
    """
    box = Letterbox.fit(*frame, INPUT)
    top, bottom, left, right = frame_rectangle(box, stride)
    size = (INPUT[0] // stride, INPUT[1] // stride)
    logits = torch.full((3, *size), -8.0)
    logits[0, top:bottom, :] = 8.0
    logits[1, :, left:right] = 8.0
    # Confident logits in the padding must not leak into the frame.
    logits[2, box.resized_h // stride + 1:, :] = 8.0
    logits[2, :, box.resized_w // stride + 1:] = 8.0
    on_frame = masks_to_frame(logits, box)
    assert on_frame.shape == (3, *frame)
    ratio_h = Fraction(box.height, box.resized_h) * stride
    ratio_w = Fraction(box.width, box.resized_w) * stride
    rows = np.zeros(frame, dtype=bool)
    rows[int(top * ratio_h):int(bottom * ratio_h), :] = True
    columns = np.zeros(frame, dtype=bool)
    columns[:, int(left * ratio_w):int(right * ratio_w)] = True
    assert 0 < rows.sum() < rows.size and 0 < columns.sum() < columns.size
    np.testing.assert_array_equal(on_frame[0].numpy() > 0, rows)
    np.testing.assert_array_equal(on_frame[1].numpy() > 0, columns)
    assert not (on_frame[2] > 0).any()


def test_frame_of_the_input_size_passes_unchanged():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (*INPUT, 3), dtype=np.uint8)
    image, box = letterbox_image(rgb, INPUT, PAD)
    assert (box.resized_h, box.resized_w) == INPUT
    np.testing.assert_array_equal(image[0].permute(1, 2, 0).numpy(), rgb.astype(np.float32))
    logits = torch.randn(3, *INPUT)
    torch.testing.assert_close(masks_to_frame(logits, box), logits, rtol=0, atol=0)


@pytest.mark.parametrize("frame", [(240, 320), (320, 240), (100, 400), (64, 96)])
def test_frame_is_placed_top_left_and_the_rest_is_padding(frame):
    rgb = np.zeros((*frame, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    rgb[frame[0] // 4: frame[0] // 2, frame[1] // 4: frame[1] // 2] = 255
    image, box = letterbox_image(rgb, INPUT, PAD)
    assert image.shape == (1, 3, *INPUT) and image.dtype == torch.float32
    content = image[0, :, :box.resized_h, :box.resized_w]
    assert content.min() >= 0 and content.max() <= 255
    # The padding holds the pad value (the model's mean, which normalises to zero).
    below = image[0, :, box.resized_h:, :]
    right = image[0, :, :, box.resized_w:]
    for region in (below, right):
        if region.numel():
            assert (region == torch.tensor(PAD).view(3, 1, 1)).all()
    # The bright square lands where the scale puts it (1 px of interpolation at its edges).
    scale_h, scale_w = box.resized_h / frame[0], box.resized_w / frame[1]
    top, left = int(np.ceil(frame[0] // 4 * scale_h)) + 1, int(np.ceil(frame[1] // 4 * scale_w)) + 1
    bottom, right_edge = int(frame[0] // 2 * scale_h) - 1, int(frame[1] // 2 * scale_w) - 1
    assert (image[0, 1, top:bottom, left:right_edge] > 250).all()
    assert (image[0, 1, :max(top - 3, 0), :box.resized_w] < 5).all()


def test_empty_mask_batch_keeps_the_frame_shape():
    box = Letterbox.fit(240, 320, INPUT)
    assert masks_to_frame(torch.zeros(0, 32, 32), box).shape == (0, 240, 320)


def test_letterbox_on_an_explicit_cpu_device_is_the_default():
    rgb = np.random.default_rng(2).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    default, box = letterbox_image(rgb, INPUT, PAD)
    explicit, box_explicit = letterbox_image(rgb, INPUT, PAD, device="cpu")
    assert box_explicit == box
    assert torch.equal(explicit, default)


@pytest.mark.parametrize("frame", [(480, 640), (720, 1280), (100, 150), (90, 300), (300, 90),
                                   (60, 80)])
def test_the_uint8_resize_is_within_a_grey_level_of_the_float_resize(frame):
    """On the CPU the frame is resized as uint8 (rounded to whole grey levels): every value
    is within one grey level of the float bilinear resize (antialiased when shrinking)."""
    rgb = np.random.default_rng(frame[0]).integers(0, 256, (*frame, 3), dtype=np.uint8)
    image, box = letterbox_image(rgb, INPUT, PAD)
    size = (box.resized_h, box.resized_w)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), size=size, mode="bilinear",
        align_corners=False, antialias=size[0] < frame[0] or size[1] < frame[1]).clamp(0, 255)
    content = image[:, :, : size[0], : size[1]]
    assert torch.equal(content, content.round())
    difference = (content - expected).abs()
    assert difference.max() <= 1.0 + 1e-3 and difference.mean() < 0.4
