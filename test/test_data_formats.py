"""YouTube-VIS JSON and DAVIS/MOSE folders: write, read back, RLE variants, class mapping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.data.davis import DavisSource, write_davis
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.data.types import ClassMapper
from metaseg_ros.data.ytvis import YouTubeVISSource, decode_segmentation, write_youtube_vis

pytestmark = pytest.mark.torch_free

CONFIG = SyntheticConfig(image_size=(72, 96), num_frames=5, min_visible_pixels=8)


@pytest.fixture(scope="module")
def source() -> SyntheticVideoSource:
    return SyntheticVideoSource(3, CONFIG, seed=2)


def _by_instance(clip, instance_ids):
    order = [list(clip.instance_ids).index(i) for i in instance_ids]
    return clip.masks[:, order]


def test_youtube_vis_round_trip_is_exact(tmp_path: Path, source) -> None:
    json_path = write_youtube_vis(source, tmp_path, image_format="png")
    data = json.loads(json_path.read_text())
    assert [c["name"] for c in data["categories"]] == list(DEFAULT_CLASSES)
    assert isinstance(data["annotations"][0]["segmentations"][0] or {"counts": []}, dict)
    loaded = YouTubeVISSource(json_path, tmp_path / "JPEGImages", DEFAULT_CLASSES)
    assert len(loaded) == len(source)
    for v in range(len(source)):
        original = source.load_video(v).drop_absent()
        clip = loaded.load_clip(v, range(loaded.num_frames(v)))
        assert np.array_equal(clip.frames, original.frames)  # PNG frames are lossless
        ann_ids = [a["instance_id_in_source"] for a in data["annotations"]
                   if a["video_id"] == loaded.video_id(v)]
        assert sorted(ann_ids) == sorted(original.instance_ids.tolist())
        assert np.array_equal(clip.masks, _by_instance(original, ann_ids))
        assert np.array_equal(np.sort(clip.class_ids), np.sort(original.class_ids))


def test_youtube_vis_jpeg_frames_are_close(tmp_path: Path, source) -> None:
    json_path = write_youtube_vis(source, tmp_path)
    loaded = YouTubeVISSource(json_path, tmp_path / "JPEGImages", DEFAULT_CLASSES)
    clip, original = loaded.load_clip(0, [0, 4]), source.load_clip(0, [0, 4])
    error = np.abs(clip.frames.astype(int) - original.frames.astype(int)).mean()
    assert 0 < error < 6


def test_reads_compressed_rle_polygons_and_null(tmp_path: Path) -> None:
    """A hand-written OVIS/YouTube-VIS-2021-style file with every segmentation kind."""
    height, width = 20, 30
    mask0 = np.zeros((height, width), dtype=np.uint8)
    mask0[2:9, 3:20] = 1  # wide, so a transposed decode would differ
    compressed = mask_utils.encode(np.asfortranarray(mask0))
    polygon = [[5.0, 10.0, 25.0, 10.0, 25.0, 18.0, 5.0, 18.0]]
    (tmp_path / "v1").mkdir()
    for t in range(3):
        Image.fromarray(np.full((height, width, 3), 40 * t, np.uint8)).save(
            tmp_path / "v1" / f"{t}.png")
    data = {
        "videos": [{"id": 7, "height": height, "width": width, "length": 3,
                    "file_names": ["v1/0.png", "v1/1.png", "v1/2.png"]}],
        "categories": [{"id": 1, "name": "diningtable"}, {"id": 2, "name": "sofa"},
                       {"id": 3, "name": "person"}, {"id": 4, "name": "zebra"}],
        "annotations": [
            {"id": 11, "video_id": 7, "category_id": 1, "iscrowd": 0,
             "segmentations": [{"size": [height, width],
                                "counts": compressed["counts"].decode("ascii")},
                               polygon, None]},
            {"id": 12, "video_id": 7, "category_id": 2, "iscrowd": 0,
             "segmentations": [None, None, None]},
            {"id": 13, "video_id": 7, "category_id": 3, "iscrowd": 1,
             "segmentations": [None, None, None]},
            {"id": 14, "video_id": 7, "category_id": 4, "iscrowd": 0,
             "segmentations": [None, None, None]},
        ]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    (tmp_path / "map.yaml").write_text("diningtable: dining table\nsofa: null\n")
    loaded = YouTubeVISSource(tmp_path / "ann.json", tmp_path, DEFAULT_CLASSES,
                              class_mapping=tmp_path / "map.yaml")
    clip = loaded.load_clip(0, [0, 1, 2])
    # sofa dropped by the mapping, the crowd person dropped, zebra is not a model class
    assert clip.instance_ids.tolist() == [11]
    assert clip.class_ids.tolist() == [DEFAULT_CLASSES.index("dining table")]
    assert np.array_equal(clip.masks[0, 0], mask0.astype(bool))
    assert clip.masks[1, 0].sum() == decode_segmentation(polygon, height, width).sum() > 100
    assert not clip.masks[2, 0].any()
    assert clip.frames[2].mean() == 80


def test_class_mapping_rejects_unknown_target() -> None:
    with pytest.raises(ValueError, match="not one of the model's classes"):
        ClassMapper(DEFAULT_CLASSES, {"sofa": "couch"})
    mapper = ClassMapper(DEFAULT_CLASSES, {"motorbike": "motorcycle"})
    assert mapper.class_id("motorbike") == DEFAULT_CLASSES.index("motorcycle")
    assert mapper.class_id("person") == 0 and mapper.class_id("zebra") is None


def test_davis_round_trip_with_semantics(tmp_path: Path, source) -> None:
    root = write_davis(source, tmp_path / "davis", split="val")
    assert (root / "Annotations" / "480p").is_dir()
    png = Image.open(next((root / "Annotations" / "480p").glob("*/00000.png")))
    assert png.mode == "P"
    loaded = DavisSource(root, DEFAULT_CLASSES, split="val",
                         semantics_file=root / "davis_semantics.json")
    assert len(loaded) == len(source)
    for v in range(len(source)):
        original = source.load_video(v).drop_absent()
        clip = loaded.load_clip(v, range(loaded.num_frames(v)))
        assert clip.instance_ids.tolist() == list(range(1, len(original.instance_ids) + 1))
        assert np.array_equal(clip.masks, original.masks)
        assert np.array_equal(clip.class_ids, original.class_ids)
        assert np.abs(clip.frames.astype(int) - original.frames.astype(int)).mean() < 6


def test_mose_layout_with_default_class(tmp_path: Path, source) -> None:
    root = write_davis(source, tmp_path / "mose", resolution=None)
    loaded = DavisSource(root, DEFAULT_CLASSES, resolution=None, default_class="person")
    clip = loaded.load_clip(1, [0, 2])
    assert (clip.class_ids == 0).all()
    assert clip.masks.shape[:2] == (2, len(source.load_video(1).drop_absent().instance_ids))
    with pytest.raises(ValueError, match="semantics_file or a default_class"):
        DavisSource(root, DEFAULT_CLASSES, resolution=None)
