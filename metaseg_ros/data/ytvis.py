"""YouTube-VIS / OVIS-style video instance segmentation JSON: reading and writing.

Layout (as in the YouTube-VIS 2019/2021 and OVIS releases)::

    {"videos": [{"id", "width", "height", "length", "file_names": [...]}],
     "categories": [{"id", "name"}],
     "annotations": [{"id", "video_id", "category_id", "iscrowd",
                      "segmentations": [RLE | polygons | null per frame],
                      "areas": [...], "bboxes": [[x, y, w, h] | null, ...]}]}

Per-frame segmentations are COCO RLE, uncompressed (``counts`` a list, column-major,
as in YouTube-VIS 2019) or compressed (``counts`` a string), or polygons; pycocotools
decodes all three. File names are relative to an image root directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from metaseg_ros.data.types import ClassMapper, ClipSample, VideoSource
from metaseg_ros.masks import encode_rle


@dataclass(frozen=True)
class _Track:
    instance_id: int
    class_id: int
    segmentations: tuple[Any, ...]


@dataclass(frozen=True)
class _Video:
    video_id: int
    name: str
    height: int
    width: int
    file_names: tuple[str, ...]
    tracks: tuple[_Track, ...]


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of one per-frame segmentation (RLE, compressed RLE, polygons, None)."""
    if segmentation is None:
        return np.zeros((height, width), dtype=bool)
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"],
               "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    if tuple(rle["size"]) != (height, width):
        raise ValueError(f"segmentation of size {rle['size']} in a {height}x{width} video")
    return mask_utils.decode(rle).astype(bool)


class YouTubeVISSource(VideoSource):
    """Videos of a YouTube-VIS/OVIS JSON file as a VideoSource.

    Categories are mapped onto class_names through a ClassMapper (dropped categories
    and crowd annotations are left out, i.e. their pixels count as unlabelled).
    """

    def __init__(self, annotation_file: str | Path, image_root: str | Path,
                 class_names: Sequence[str], class_mapping: str | Path | None = None) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_root = Path(image_root)
        self._class_names = tuple(class_names)
        mapper = ClassMapper.from_file(class_mapping, self._class_names)
        data = json.loads(self.annotation_file.read_text())
        category_names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        tracks: dict[int, list[_Track]] = {}
        for ann in data.get("annotations", []):
            class_id = mapper.class_id(category_names[int(ann["category_id"])])
            if class_id is None or ann.get("iscrowd", 0):
                continue
            tracks.setdefault(int(ann["video_id"]), []).append(
                _Track(int(ann["id"]), class_id, tuple(ann["segmentations"])))
        videos = []
        for video in data["videos"]:
            names = tuple(video["file_names"])
            own = tuple(tracks.get(int(video["id"]), ()))
            for track in own:
                if len(track.segmentations) != len(names):
                    raise ValueError(f"annotation {track.instance_id}: {len(track.segmentations)}"
                                     f" segmentations for {len(names)} frames")
            videos.append(_Video(int(video["id"]), Path(names[0]).parent.name or str(video["id"]),
                                 int(video["height"]), int(video["width"]), names, own))
        self._videos = tuple(videos)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's classes that class ids index."""
        return self._class_names

    def __len__(self) -> int:
        return len(self._videos)

    def num_frames(self, video_index: int) -> int:
        """Number of frames listed for the video."""
        return len(self._videos[video_index].file_names)

    def video_name(self, video_index: int) -> str:
        """The folder name of the video's frames."""
        return self._videos[video_index].name

    def video_id(self, video_index: int) -> int:
        """The video's id in the JSON file."""
        return self._videos[video_index].video_id

    def load_clip(self, video_index: int, frame_indices: Sequence[int]) -> ClipSample:
        """Read the frames from disk and decode every track's masks on them."""
        video = self._videos[video_index]
        frames = []
        for t in frame_indices:
            with Image.open(self.image_root / video.file_names[t]) as image:
                frame = np.asarray(image.convert("RGB"))
            if frame.shape[:2] != (video.height, video.width):
                raise ValueError(f"{video.file_names[t]} is {frame.shape[:2]}, the JSON says "
                                 f"{(video.height, video.width)}")
            frames.append(frame)
        masks = np.zeros((len(frames), len(video.tracks), video.height, video.width), dtype=bool)
        for n, track in enumerate(video.tracks):
            for k, t in enumerate(frame_indices):
                masks[k, n] = decode_segmentation(track.segmentations[t], video.height,
                                                  video.width)
        return ClipSample(
            frames=np.stack(frames), masks=masks,
            class_ids=np.array([tr.class_id for tr in video.tracks], dtype=np.int64),
            instance_ids=np.array([tr.instance_id for tr in video.tracks], dtype=np.int64),
            video_name=video.name, frame_indices=tuple(int(t) for t in frame_indices))


def write_youtube_vis(source: VideoSource, output_dir: str | Path,
                      annotation_name: str = "instances.json", image_format: str = "jpg",
                      jpeg_quality: int = 95) -> Path:
    """Write every video of a source as YouTube-VIS JSON (uncompressed RLE) plus frames.

    Frames go to ``output_dir/JPEGImages/<video>/<frame:05d>.<image_format>``; the JSON
    (categories = source.class_names with ids 1..C) to ``output_dir/<annotation_name>``.
    Instances that are never visible are left out. Returns the JSON path.
    """
    output_dir = Path(output_dir)
    categories = [{"id": i + 1, "name": name, "supercategory": "object"}
                  for i, name in enumerate(source.class_names)]
    videos, annotations = [], []
    for video_index in range(len(source)):
        clip = source.load_clip(video_index, range(source.num_frames(video_index)))
        clip = clip.drop_absent()
        name = source.video_name(video_index)
        frame_dir = output_dir / "JPEGImages" / name
        frame_dir.mkdir(parents=True, exist_ok=True)
        file_names = []
        for t, frame in enumerate(clip.frames):
            file_name = f"{name}/{t:05d}.{image_format}"
            jpeg = image_format in ("jpg", "jpeg")
            options = {"quality": jpeg_quality, "subsampling": 0} if jpeg else {}
            Image.fromarray(frame).save(output_dir / "JPEGImages" / file_name, **options)
            file_names.append(file_name)
        height, width = clip.frames.shape[1:3]
        video_id = video_index + 1
        videos.append({"id": video_id, "width": int(width), "height": int(height),
                       "length": clip.num_frames, "file_names": file_names})
        for n in range(clip.class_ids.shape[0]):
            segmentations, areas, boxes = [], [], []
            for t in range(clip.num_frames):
                mask = clip.masks[t, n]
                if not mask.any():
                    segmentations.append(None)
                    areas.append(None)
                    boxes.append(None)
                    continue
                segmentations.append({"size": [int(height), int(width)],
                                      "counts": [int(c) for c in encode_rle(mask)]})
                areas.append(int(mask.sum()))
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                boxes.append([int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
                              int(rows[-1] - rows[0] + 1)])
            annotations.append({
                "id": len(annotations) + 1, "video_id": video_id,
                "category_id": int(clip.class_ids[n]) + 1, "iscrowd": 0,
                "instance_id_in_source": int(clip.instance_ids[n]),
                "segmentations": segmentations, "areas": areas, "bboxes": boxes,
                "height": int(height), "width": int(width), "length": 1})
    path = output_dir / annotation_name
    path.write_text(json.dumps({
        "info": {"description": "written by metaseg_ros.data.ytvis.write_youtube_vis"},
        "licenses": [], "videos": videos, "categories": categories,
        "annotations": annotations}))
    return path
