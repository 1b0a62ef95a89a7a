"""Ground truth of a recorded video, frame by frame, for replay and for metaseg-make-bag.

Three kinds, each answering "which objects, with which class names and masks, are in
this frame?" (None: the frame is not annotated):

- `BagTopicTruth`: InstanceMaskArray messages on a topic of the bag, matched to an image
  by header stamp (the format of data/bag_format.py);
- `DavisTruth`: DAVIS/MOSE palette PNGs (a folder of them, or a dataset root with
  Annotations/[480p/]<video>/), matched by frame number (the PNG's numeric name, else its
  position); classes from the root's davis_semantics.json, else one default class;
- `YouTubeVisTruth`: one video of a YouTube-VIS/OVIS JSON, matched by frame number.

Masks are checked against the image size by the caller (`check_size`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from metaseg_ros.data.bag_access import BagReader
from metaseg_ros.data.bag_format import (
    GROUND_TRUTH_TYPE,
    deserialize_instance_array,
    stamp_ns,
)
from metaseg_ros.data.bag_reader import check_definition, topic_info
from metaseg_ros.data.davis import VOID_LABEL
from metaseg_ros.data.ytvis import decode_segmentation
from metaseg_ros.masks import decode_rle


@dataclass(frozen=True, eq=False)
class TruthObject:
    """One annotated object in one frame: persistent id, class name, (H, W) bool mask."""

    instance_id: int
    class_name: str
    mask: np.ndarray


class FrameTruth(Protocol):
    """Ground truth by frame."""

    def objects(self, index: int, stamp: int) -> list[TruthObject] | None:
        """Objects of the frame with this index in the video and header stamp (ns)."""
        ...


def check_size(objects: list[TruthObject], height: int, width: int, where: str) -> None:
    """ValueError when a mask's size differs from its image's."""
    for obj in objects:
        if obj.mask.shape != (height, width):
            raise ValueError(f"{where}: ground truth is {obj.mask.shape[0]}x{obj.mask.shape[1]} "
                             f"(HxW), its image {height}x{width}")


class BagTopicTruth:
    """InstanceMaskArray messages of a bag topic, by header stamp."""

    def __init__(self, reader: BagReader, topic: str) -> None:
        stores = check_definition(
            topic_info(reader, topic, (GROUND_TRUTH_TYPE,), "ground-truth"), reader.path)
        self._messages: dict[int, Any] = {}
        for raw in reader.messages([topic]):
            msg = deserialize_instance_array(raw.data, stores)
            stamp = stamp_ns(msg.header)
            if stamp in self._messages:
                raise ValueError(f"{reader.path}: two messages on {topic!r} with stamp {stamp} ns")
            self._messages[stamp] = msg
        if not self._messages:
            raise ValueError(f"{reader.path}: no messages on the ground-truth topic {topic!r}")

    def objects(self, index: int, stamp: int) -> list[TruthObject] | None:
        msg = self._messages.get(stamp)
        if msg is None:
            return None
        height, width = int(msg.height), int(msg.width)
        return [TruthObject(int(i.track_id), str(i.class_name),
                            decode_rle(i.mask_rle, height, width)) for i in msg.instances]


def _frame_number(path: Path, position: int) -> int:
    return int(path.stem) if path.stem.isdigit() else position


class DavisTruth:
    """Palette PNGs of one DAVIS/MOSE video (0 background, 255 void, k object k)."""

    def __init__(self, path: str | Path, video: str = "", default_class: str = "object") -> None:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no DAVIS annotation folder at {path}")
        folder, semantics = path, {}
        if not any(path.glob("*.png")):  # a dataset root: Annotations/[480p/]<video>/
            root = next((d for d in (path / "Annotations" / "480p", path / "Annotations")
                         if d.is_dir() and any(d.iterdir())), None)
            if root is None:
                raise ValueError(f"{path}: neither annotation PNGs nor Annotations/<video>/")
            videos = sorted(d.name for d in root.iterdir() if d.is_dir())
            name = video if video in videos else (videos[0] if len(videos) == 1 else "")
            if not name:
                raise ValueError(f"{path}: {len(videos)} videos ({', '.join(videos[:8])}); none "
                                 f"is named {video!r}")
            folder = root / name
            semantics_file = path / "davis_semantics.json"
            if semantics_file.is_file():
                semantics = json.loads(semantics_file.read_text()).get(name, {})
        files = sorted(folder.glob("*.png"))
        self._files = {_frame_number(p, n): p for n, p in enumerate(files)}
        self._classes = {int(k): str(v) for k, v in semantics.items()}
        self._default = default_class
        self.num_frames = max(self._files) + 1 if self._files else 0

    def objects(self, index: int, stamp: int) -> list[TruthObject] | None:
        path = self._files.get(index)
        if path is None:
            return None
        with Image.open(path) as image:
            labels = np.asarray(image)
        if labels.ndim != 2:
            raise ValueError(f"{path} is not an indexed (palette or grey) PNG")
        ids = sorted(set(np.unique(labels).tolist()) - {0, VOID_LABEL})
        return [TruthObject(k, self._classes.get(k, self._default), labels == k) for k in ids]


class YouTubeVisTruth:
    """One video of a YouTube-VIS/OVIS JSON file (crowd annotations left out)."""

    def __init__(self, path: str | Path, video: str = "") -> None:
        data = json.loads(Path(path).read_text())
        videos = data.get("videos", [])
        names = [Path(v["file_names"][0]).parent.name or str(v["id"]) for v in videos]
        if video in names:
            chosen = videos[names.index(video)]
        elif len(videos) == 1:
            chosen = videos[0]
        else:
            raise ValueError(f"{path}: {len(videos)} videos ({', '.join(names[:8])}); none is "
                             f"named {video!r}")
        categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
        self.height, self.width = int(chosen["height"]), int(chosen["width"])
        self.num_frames = len(chosen["file_names"])
        self._tracks = [(int(a["id"]), categories[int(a["category_id"])], a["segmentations"])
                        for a in data.get("annotations", [])
                        if a["video_id"] == chosen["id"] and not a.get("iscrowd", 0)]

    def objects(self, index: int, stamp: int) -> list[TruthObject] | None:
        if index >= self.num_frames:
            return None
        found = []
        for track_id, name, segmentations in self._tracks:
            if segmentations[index] is not None:
                mask = decode_segmentation(segmentations[index], self.height, self.width)
                if mask.any():
                    found.append(TruthObject(track_id, name, mask))
        return found
