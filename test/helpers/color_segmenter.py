"""A deterministic segmenter for ROS plumbing tests: one instance per palette colour.

It implements metaseg_ros.results.Segmenter exactly as StreamingSegmenter does (the node
loads it through the `segmenter` parameter), so the track-id test controls precisely
what is detected in each frame. Embeddings are one-hot per colour, like a perfectly
discriminative model's.

A gate lets a test hold the node's processing thread: a frame whose top-left pixel is
GATE_COLOR waits in step() until the file `open` exists in the directory named by
$METASEG_TEST_GATE_DIR (it creates `entered` there first; without the variable, or after
GATE_TIMEOUT seconds, it goes on). Frames arriving meanwhile pile up in the node's
keep-latest slot, which makes an overload exact instead of a race with the model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.results import Detection, FrameDetections

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240]], dtype=np.uint8)
GATE_COLOR = (255, 255, 255)
GATE_VARIABLE = "METASEG_TEST_GATE_DIR"
GATE_TIMEOUT = 300.0


class ColorSegmenter:
    """Segments pixels of exactly the palette colours; counts resets."""

    def __init__(self) -> None:
        self.frames = 0
        self.resets = 0

    @property
    def class_names(self) -> tuple[str, ...]:
        return DEFAULT_CLASSES

    def step(self, image: np.ndarray) -> FrameDetections:
        self.frames += 1
        if tuple(image[0, 0]) == GATE_COLOR and os.environ.get(GATE_VARIABLE):
            wait_at_gate(Path(os.environ[GATE_VARIABLE]))
        detections = []
        for index, color in enumerate(PALETTE):
            mask = np.all(image == color, axis=2)
            if mask.sum() < 4:
                continue
            embedding = np.zeros(len(PALETTE), np.float32)
            embedding[index] = 1.0
            probs = np.full(len(DEFAULT_CLASSES), 0.001, np.float32)
            probs[index] = 0.95
            detections.append(Detection(class_id=index, score=0.9, mask=mask,
                                        embedding=embedding, class_probs=probs,
                                        query_index=index))
        return FrameDetections(image.shape[0], image.shape[1], tuple(detections))

    def reset(self) -> None:
        self.resets += 1


def wait_at_gate(gate: Path) -> None:
    """Announce the wait (`entered`), then hold until `open` exists (or the timeout)."""
    (gate / "entered").touch()
    deadline = time.monotonic() + GATE_TIMEOUT
    while not (gate / "open").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def create() -> ColorSegmenter:
    """Factory named in the node's `segmenter` parameter: 'color_segmenter:create'."""
    return ColorSegmenter()


def draw_squares(height: int, width: int, squares: dict[int, tuple[int, int, int]],
                 gate: bool = False) -> np.ndarray:
    """Grey frame with palette squares: {palette index: (x, y, side)}; with `gate`, the
    top-left pixel is GATE_COLOR (see the module docstring)."""
    image = np.full((height, width, 3), 90, np.uint8)
    if gate:
        image[0, 0] = GATE_COLOR
    for index, (x, y, side) in squares.items():
        image[max(y, 0): y + side, max(x, 0): x + side] = PALETTE[index]
    return image
