"""DAVIS / MOSE-style video object segmentation folders: reading and writing.

Layout (DAVIS 2017; MOSE is the same without the resolution folder)::

    root/JPEGImages/480p/<video>/00000.jpg
    root/Annotations/480p/<video>/00000.png     # palette PNG: 0 background, k object k,
                                                #  255 void (treated as unlabelled)
    root/ImageSets/2017/<split>.txt              # optional list of video names

These datasets carry no classes in their masks. Classes come from a semantics file in
the layout of DAVIS 2017's ``davis_semantics.json`` (``{video: {"<object id>": name}}``)
mapped through a ClassMapper, or, without one, every object gets ``default_class``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from metaseg_ros.data.types import ClassMapper, ClipSample, VideoSource

VOID_LABEL = 255
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _palette() -> list[int]:
    """The PASCAL/DAVIS colour map (bit-interleaved), 256 RGB triples flattened."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette.extend((r, g, b))
    return palette


class DavisSource(VideoSource):
    """Videos of a DAVIS/MOSE-style folder as a VideoSource.

    resolution: '480p' or 'Full-Resolution' for DAVIS, None for MOSE (no such folder).
    split: name of an ImageSets/2017 list, or None for every folder in JPEGImages.
    """

    def __init__(self, root: str | Path, class_names: Sequence[str], split: str | None = None,
                 resolution: str | None = "480p", semantics_file: str | Path | None = None,
                 default_class: str | None = None,
                 class_mapping: str | Path | None = None) -> None:
        self.root = Path(root)
        self._class_names = tuple(class_names)
        sub = Path(resolution) if resolution else Path()
        self.image_dir = self.root / "JPEGImages" / sub
        self.mask_dir = self.root / "Annotations" / sub
        if split is not None:
            names = (self.root / "ImageSets" / "2017" / f"{split}.txt").read_text().split()
        else:
            names = sorted(p.name for p in self.image_dir.iterdir() if p.is_dir())
        self._names = tuple(names)
        mapper = ClassMapper.from_file(class_mapping, self._class_names)
        semantics = json.loads(Path(semantics_file).read_text()) if semantics_file else {}
        if not semantics and default_class is None:
            raise ValueError("DAVIS/MOSE masks carry no classes: give a semantics_file or a "
                             "default_class")
        self._frames: list[tuple[Path, ...]] = []
        self._classes: list[dict[int, int]] = []
        for name in self._names:
            frames = tuple(sorted(p for p in (self.image_dir / name).iterdir()
                                  if p.suffix.lower() in _IMAGE_SUFFIXES))
            if not frames:
                raise ValueError(f"no frames in {self.image_dir / name}")
            self._frames.append(frames)
            object_ids = self._object_ids(name)
            classes = {}
            for object_id in object_ids:
                category = semantics.get(name, {}).get(str(object_id), default_class)
                class_id = mapper.class_id(category) if category is not None else None
                if class_id is not None:
                    classes[object_id] = class_id
            self._classes.append(classes)

    def _object_ids(self, name: str) -> list[int]:
        ids: set[int] = set()
        for path in sorted((self.mask_dir / name).glob("*.png")):
            with Image.open(path) as image:
                ids.update(int(v) for v in np.unique(np.asarray(image)))
        return sorted(ids - {0, VOID_LABEL})

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's classes that class ids index."""
        return self._class_names

    def __len__(self) -> int:
        return len(self._names)

    def num_frames(self, video_index: int) -> int:
        """Number of image files of the video."""
        return len(self._frames[video_index])

    def video_name(self, video_index: int) -> str:
        """The video's folder name."""
        return self._names[video_index]

    def load_clip(self, video_index: int, frame_indices: Sequence[int]) -> ClipSample:
        """Frames and per-object masks; frames without an annotation PNG have no objects."""
        name = self._names[video_index]
        classes = self._classes[video_index]
        object_ids = sorted(classes)
        frames, masks = [], []
        for t in frame_indices:
            frame_path = self._frames[video_index][t]
            with Image.open(frame_path) as image:
                frame = np.asarray(image.convert("RGB"))
            mask_path = self.mask_dir / name / f"{frame_path.stem}.png"
            if mask_path.exists():
                with Image.open(mask_path) as image:
                    labels = np.asarray(image)
                if labels.ndim != 2:
                    raise ValueError(f"{mask_path} is not an indexed (palette/grey) PNG")
            else:
                labels = np.zeros(frame.shape[:2], dtype=np.uint8)
            frames.append(frame)
            masks.append(np.stack([labels == k for k in object_ids]) if object_ids
                         else np.zeros((0, *frame.shape[:2]), dtype=bool))
        return ClipSample(
            frames=np.stack(frames), masks=np.stack(masks),
            class_ids=np.array([classes[k] for k in object_ids], dtype=np.int64),
            instance_ids=np.array(object_ids, dtype=np.int64), video_name=name,
            frame_indices=tuple(int(t) for t in frame_indices))


def write_davis(source: VideoSource, root: str | Path, split: str = "train",
                resolution: str | None = "480p", jpeg_quality: int = 95) -> Path:
    """Write a source as a DAVIS-style folder with a davis_semantics.json; returns root.

    Object k of a video is its k-th instance that is ever visible (1-based), drawn in
    the palette PNGs; where instances overlap, the later one wins (sources such as the
    synthetic generator give disjoint masks, so nothing is lost there).
    """
    root = Path(root)
    sub = Path(resolution) if resolution else Path()
    semantics: dict[str, dict[str, str]] = {}
    names = []
    palette = _palette()
    for video_index in range(len(source)):
        clip = source.load_clip(video_index, range(source.num_frames(video_index)))
        clip = clip.drop_absent()
        if clip.class_ids.shape[0] > 254:
            raise ValueError("an indexed PNG holds at most 254 objects")
        name = source.video_name(video_index)
        names.append(name)
        (root / "JPEGImages" / sub / name).mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / sub / name).mkdir(parents=True, exist_ok=True)
        semantics[name] = {str(n + 1): source.class_names[int(c)]
                           for n, c in enumerate(clip.class_ids)}
        for t in range(clip.num_frames):
            Image.fromarray(clip.frames[t]).save(
                root / "JPEGImages" / sub / name / f"{t:05d}.jpg", quality=jpeg_quality,
                subsampling=0)
            labels = np.zeros(clip.frames.shape[1:3], dtype=np.uint8)
            for n in range(clip.class_ids.shape[0]):
                labels[clip.masks[t, n]] = n + 1
            png = Image.fromarray(labels, mode="P")
            png.putpalette(palette)
            png.save(root / "Annotations" / sub / name / f"{t:05d}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / f"{split}.txt").write_text("\n".join(names) + "\n")
    (root / "davis_semantics.json").write_text(json.dumps(semantics, indent=1))
    return root
