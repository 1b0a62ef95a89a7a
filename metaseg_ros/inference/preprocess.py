"""Letterboxing frames to the network's input size, and undoing it on masks exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Letterbox:
    """How a (height, width) frame was placed into the (input_h, input_w) network input.

    The frame is scaled by `scale` (aspect ratio kept) to (resized_h, resized_w) and put at
    the top-left corner; the rest is padding.
    """

    height: int
    width: int
    input_h: int
    input_w: int
    resized_h: int
    resized_w: int

    @classmethod
    def fit(cls, height: int, width: int, input_size: tuple[int, int]) -> Letterbox:
        """The largest aspect-preserving fit of a height x width frame into input_size."""
        input_h, input_w = input_size
        scale = min(input_h / height, input_w / width)
        resized_h = min(input_h, max(1, round(height * scale)))
        resized_w = min(input_w, max(1, round(width * scale)))
        return cls(height, width, input_h, input_w, resized_h, resized_w)


def letterbox_image(rgb: np.ndarray, input_size: tuple[int, int],
                    pad_value: tuple[float, float, float],
                    device: torch.device | str | None = None) -> tuple[torch.Tensor, Letterbox]:
    """(1, 3, H_in, W_in) float32 tensor in 0..255 holding the resized frame, and its Letterbox.

    Padding takes `pad_value` (the model's pixel mean, which normalises to zero, as
    Mask2Former pads after normalisation). The resize is bilinear, antialiased when it
    shrinks. device: where to resize (default: the CPU). On the CPU the uint8 frame is
    resized as uint8 (PyTorch's vectorised kernel: 2-4x less time than converting the whole
    frame to float first, docs/benchmarks.md; values rounded to whole grey levels, as the
    reference preprocessing's uint8 image resize gives them); on a GPU the uint8 frame is
    uploaded as it is and resized there in float.
    """
    letterbox = Letterbox.fit(rgb.shape[0], rgb.shape[1], input_size)
    image = torch.from_numpy(np.ascontiguousarray(rgb))
    on_cpu = device is None or torch.device(device).type == "cpu"
    if not on_cpu:
        image = image.to(device, non_blocking=True)
    image = image.permute(2, 0, 1)[None]  # a channels-last view, as the uint8 kernel wants
    if not on_cpu:
        image = image.float()
    resized = (letterbox.resized_h, letterbox.resized_w)
    if resized != (letterbox.height, letterbox.width):
        shrinking = resized[0] < letterbox.height or resized[1] < letterbox.width
        image = F.interpolate(image, size=resized, mode="bilinear", align_corners=False,
                              antialias=shrinking)
        if not on_cpu:
            image = image.clamp_(0.0, 255.0)
    padded = torch.empty((1, 3, letterbox.input_h, letterbox.input_w), dtype=torch.float32,
                         device=image.device)
    padded[:] = torch.tensor(pad_value, dtype=torch.float32).view(1, 3, 1, 1)
    padded[:, :, : letterbox.resized_h, : letterbox.resized_w] = image
    return padded, letterbox


def masks_to_frame(mask_logits: torch.Tensor, letterbox: Letterbox) -> torch.Tensor:
    """(K, h, w) low-resolution mask logits -> (K, height, width) logits on the source frame.

    As Mask2Former: upsample to the network input size, crop the padding away, resize to
    the frame's size (bilinear each time).
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0, letterbox.height, letterbox.width))
    logits = F.interpolate(mask_logits[:, None], size=(letterbox.input_h, letterbox.input_w),
                           mode="bilinear", align_corners=False)
    logits = logits[:, :, : letterbox.resized_h, : letterbox.resized_w]
    if (letterbox.resized_h, letterbox.resized_w) != (letterbox.height, letterbox.width):
        logits = F.interpolate(logits, size=(letterbox.height, letterbox.width), mode="bilinear",
                               align_corners=False)
    return logits[:, 0]
