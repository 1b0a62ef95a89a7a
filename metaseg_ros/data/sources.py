"""Describing a set of annotated videos in one config, and building the VideoSource for it.

Training (`DataConfig` extends `VideoSourceConfig` with clip sampling), evaluation and
replay all build their sources here, with one set of defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metaseg_ros.data.bag_format import DEFAULT_GT_TOPIC, DEFAULT_IMAGE_TOPIC
from metaseg_ros.data.degradations import DegradationConfig
from metaseg_ros.data.types import VideoSource

SOURCE_KINDS = ("synthetic", "youtube_vis", "davis", "bag")


@dataclass(frozen=True)
class VideoSourceConfig:
    """Where annotated videos come from.

    kind "synthetic": num_videos videos of the generator with `seed`, starting at
    first_video (so a held-out split is another range), frames_per_video frames of
    synthetic_size, with optional `degradations` (a DegradationConfig, its fields as a
    mapping, or a preset name; see data/degradations.py). kind "youtube_vis":
    annotation_file + image_root. kind "davis": root (+ split, resolution, semantics_file
    or default_class). kind "bag": root is a ROS 2 bag or a directory of bags (one video
    each) with images on image_topic and InstanceMaskArray ground truth on gt_topic (see
    data/bag_format.py). class_mapping: optional JSON/YAML file mapping dataset category
    names to the model's classes.
    """

    kind: str = "synthetic"
    num_videos: int = 400
    first_video: int = 0
    seed: int = 0
    frames_per_video: int = 24
    synthetic_size: tuple[int, int] = (512, 512)
    degradations: DegradationConfig | Mapping[str, Any] | str | None = None
    annotation_file: str = ""
    image_root: str = ""
    root: str = ""
    split: str | None = None
    resolution: str | None = "480p"
    semantics_file: str | None = None
    default_class: str | None = None
    class_mapping: str | None = None
    image_topic: str = DEFAULT_IMAGE_TOPIC
    gt_topic: str = DEFAULT_GT_TOPIC

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"data.kind {self.kind!r} not in {SOURCE_KINDS}")
        if self.kind == "bag" and not self.root:
            raise ValueError("data.kind bag needs data.root (a bag or a directory of bags)")


def build_video_source(config: VideoSourceConfig, class_names: Sequence[str]) -> VideoSource:
    """The VideoSource a config describes (its class ids index `class_names`).

    Each kind's module is imported only when used: bags need rosbags, DAVIS and YouTube-VIS
    need their files, none of which a synthetic run should have to load.
    """
    if config.kind == "synthetic":
        from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource

        extra = {} if config.degradations is None else {"degradations": config.degradations}
        synthetic = SyntheticConfig(image_size=tuple(config.synthetic_size),
                                    num_frames=config.frames_per_video,
                                    class_names=tuple(class_names), **extra)
        return SyntheticVideoSource(config.num_videos, synthetic, seed=config.seed,
                                    first_video=config.first_video)
    if config.kind == "youtube_vis":
        from metaseg_ros.data.ytvis import YouTubeVISSource

        return YouTubeVISSource(config.annotation_file, config.image_root, class_names,
                                config.class_mapping)
    if config.kind == "bag":
        from metaseg_ros.data.bag_reader import BagVideoSource

        return BagVideoSource(config.root, config.image_topic, config.gt_topic, class_names,
                              config.class_mapping)
    from metaseg_ros.data.davis import DavisSource

    return DavisSource(config.root, class_names, split=config.split,
                       resolution=config.resolution, semantics_file=config.semantics_file,
                       default_class=config.default_class, class_mapping=config.class_mapping)
