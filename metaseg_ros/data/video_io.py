"""Video files in and out, through PyAV (FFmpeg's libraries), with a GIF fallback.

Reading: any container and codec the installed FFmpeg decodes (AVI, MP4, MKV, ...).
Writing: H.264 in MP4 (libx264, yuv420p) when PyAV and the encoder are there, otherwise an
animated GIF through Pillow, so a report always gets its overlay video.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

MP4_CODEC = "libx264"


def _import_av():
    try:
        import av
    except ImportError:
        return None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """A video file's frame rate (frames/s), frame count (0 when the container does not say)
    and size."""

    frame_rate: float
    frame_count: int
    height: int
    width: int


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, count and size of a video file (ValueError when it cannot be read)."""
    av = _import_av()
    if av is None:
        raise ValueError("reading video files needs PyAV (pip install av)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(0)
            return VideoInfo(float(rate), int(stream.frames or 0),
                             int(stream.codec_context.height), int(stream.codec_context.width))
    except av.FFmpegError as error:
        raise ValueError(f"{path}: not a video FFmpeg can read ({error})") from error


def read_video(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of a video file as (H, W, 3) uint8 RGB, in order."""
    av = _import_av()
    if av is None:
        raise ValueError("reading video files needs PyAV (pip install av)")
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as error:
        raise ValueError(f"{path}: cannot decode ({error})") from error


def mp4_available() -> bool:
    """Whether MP4 (H.264) can be written here."""
    av = _import_av()
    return av is not None and MP4_CODEC in av.codecs_available


class VideoWriter:
    """Frames in, a video file out: `path` with .mp4 when H.264 can be written, else .gif.

    Frames of odd size are padded by one black row/column (H.264 in yuv420p needs even
    sizes). `path` holds the written file's name after close().
    """

    def __init__(self, path: str | Path, frame_rate: float, force_gif: bool = False) -> None:
        self.frame_rate = max(float(frame_rate), 0.1)
        self.gif = force_gif or not mp4_available()
        self.path = Path(path).with_suffix(".gif" if self.gif else ".mp4")
        self.frames = 0
        self._gif_frames: list[np.ndarray] = []
        self._container = None
        self._stream = None

    def write(self, rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        if self.gif:
            self._gif_frames.append(rgb)
        else:
            self._write_mp4(rgb)
        self.frames += 1

    def _write_mp4(self, rgb: np.ndarray) -> None:
        av = _import_av()
        height, width = rgb.shape[0] + rgb.shape[0] % 2, rgb.shape[1] + rgb.shape[1] % 2
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), mode="w")
            rate = Fraction(self.frame_rate).limit_denominator(1000)
            self._stream = self._container.add_stream(MP4_CODEC, rate=rate)
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"preset": "veryfast", "crf": "23"}
        if rgb.shape[:2] != (height, width):
            padded = np.zeros((height, width, 3), np.uint8)
            padded[:rgb.shape[0], :rgb.shape[1]] = rgb
            rgb = padded
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path | None:
        """Finish the file; its path (None when no frame was written)."""
        if self.gif:
            if not self._gif_frames:
                return None
            from PIL import Image

            images = [Image.fromarray(f) for f in self._gif_frames]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            images[0].save(self.path, save_all=True, append_images=images[1:], loop=0,
                           duration=round(1000 / self.frame_rate))
            self._gif_frames = []
            return self.path
        if self._container is None:
            return None
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        return self.path
