"""The clip record every data source yields, the source protocol, and class mapping."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, eq=False)
class ClipSample:
    """Frames of one video with exact instance masks and persistent instance ids.

    frames: (T, H, W, 3) uint8 RGB.
    masks: (T, N, H, W) bool; an instance absent from frame t has an all-False mask there.
    class_ids: (N,) int64 indices into the model's class list.
    instance_ids: (N,) int64 ids, persistent through the whole video (not only the clip).
    frame_tags: per frame, the degradations it has ("" for none; kinds joined by "+", see
        metaseg_ros.data.degradations), or () where the source does not record them.
    """

    frames: np.ndarray
    masks: np.ndarray
    class_ids: np.ndarray
    instance_ids: np.ndarray
    video_name: str = ""
    frame_indices: tuple[int, ...] = ()
    frame_tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        t, h, w, c = self.frames.shape
        if c != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8, got {self.frames.shape} "
                             f"{self.frames.dtype}")
        n = self.class_ids.shape[0]
        if self.masks.shape != (t, n, h, w) or self.masks.dtype != bool:
            raise ValueError(f"masks must be ({t}, {n}, {h}, {w}) bool, got {self.masks.shape} "
                             f"{self.masks.dtype}")
        if self.instance_ids.shape != (n,):
            raise ValueError("instance_ids and class_ids must have the same length")
        if self.frame_tags and len(self.frame_tags) != t:
            raise ValueError(f"{len(self.frame_tags)} frame tags for {t} frames")

    @property
    def num_frames(self) -> int:
        """Number of frames T."""
        return int(self.frames.shape[0])

    @property
    def present(self) -> np.ndarray:
        """(T, N) bool: whether instance n is visible in frame t."""
        return self.masks.any(axis=(2, 3))

    def drop_absent(self) -> ClipSample:
        """The same clip without instances that are visible in none of its frames."""
        keep = self.present.any(axis=0)
        if keep.all():
            return self
        return ClipSample(self.frames, self.masks[:, keep], self.class_ids[keep],
                          self.instance_ids[keep], self.video_name, self.frame_indices,
                          self.frame_tags)


@runtime_checkable
class VideoSource(Protocol):
    """A collection of annotated videos from which clips can be loaded by frame index."""

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's classes that ClipSample.class_ids index."""
        ...

    def __len__(self) -> int:
        """Number of videos."""
        ...

    def num_frames(self, video_index: int) -> int:
        """Number of frames of one video."""
        ...

    def video_name(self, video_index: int) -> str:
        """A stable name of one video."""
        ...

    def load_clip(self, video_index: int, frame_indices: Sequence[int]) -> ClipSample:
        """Frames and masks of the given frames of one video (all its instances)."""
        ...


class ClassMapper:
    """Maps a dataset's category names onto the model's class list.

    A mapping entry `dataset name -> model name` renames; `dataset name -> None` drops
    the category (its instances are left unlabelled). Names without an entry keep
    their own name if the model has that class and are dropped otherwise.
    """

    def __init__(self, model_classes: Sequence[str],
                 mapping: Mapping[str, str | None] | None = None) -> None:
        self.model_classes = tuple(model_classes)
        self._index = {name: i for i, name in enumerate(self.model_classes)}
        self.mapping = dict(mapping or {})
        for source, target in self.mapping.items():
            if target is not None and target not in self._index:
                raise ValueError(f"class mapping sends {source!r} to {target!r}, which is not "
                                 f"one of the model's classes")

    def class_id(self, dataset_name: str) -> int | None:
        """The model class index of a dataset category, or None if it is dropped."""
        target = self.mapping.get(dataset_name, dataset_name)
        if target is None:
            return None
        return self._index.get(target)

    @classmethod
    def from_file(cls, path: str | Path | None, model_classes: Sequence[str]) -> ClassMapper:
        """Read a JSON or YAML file of `dataset name: model name | null` (None: identity)."""
        if path is None:
            return cls(model_classes)
        text = Path(path).read_text()
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise ValueError(f"{path}: a class mapping must be a mapping of names to names")
        return cls(model_classes, data)
