"""metaseg-make-bag: a real video file (H.264 written and read by PyAV) and image folders into
bags (Image rgb8/bgr8, CompressedImage jpeg; MCAP and sqlite3), with YouTube-VIS ground
truth that metaseg-eval's bag reader scores, and its user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.cli.make_bag import main
from metaseg_ros.data.bag_access import BagReader
from metaseg_ros.data.bag_format import metaseg_typestore
from metaseg_ros.data.bag_frames import bag_frames, image_topic_of
from metaseg_ros.data.bag_reader import BagVideoSource
from metaseg_ros.data.video_io import VideoWriter
from metaseg_ros.masks import encode_rle

av = pytest.importorskip("av")


def gradient(t: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Smooth frames (H.264 keeps them close) that differ from frame to frame."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 4 + t * 10) % 256, (y * 5) % 256, np.full_like(x, 40 * (t % 6))],
                    axis=2).astype(np.uint8)


def test_video_file_to_bag_at_its_own_rate(tmp_path: Path, capsys) -> None:
    writer = VideoWriter(tmp_path / "clip.mp4", frame_rate=15)
    for t in range(10):
        writer.write(gradient(t))
    video = writer.close()
    assert video is not None and video.suffix == ".mp4"
    assert main([str(video), "--output", str(tmp_path / "bag"), "--encoding", "bgr8",
                 "--frame-id", "front"]) == 0
    assert "wrote 10 frames at 15 Hz" in capsys.readouterr().out
    with BagReader(tmp_path / "bag") as reader:
        topic = image_topic_of(reader)
        frames = list(bag_frames(reader, topic))
    assert topic.name == "/camera/image_raw" and len(frames) == 10
    assert frames[0].msg.encoding == "bgr8" and frames[0].header.frame_id == "front"
    assert frames[1].log_time - frames[0].log_time == round(1e9 / 15)
    for t, frame in enumerate(frames):
        error = np.abs(frame.rgb().astype(int) - gradient(t).astype(int)).mean()
        assert error < 8, (t, error)  # lossy H.264, right channel order and frame


def test_image_folder_with_youtube_vis_ground_truth(tmp_path: Path) -> None:
    folder = tmp_path / "walk"
    folder.mkdir()
    masks = []
    for t in range(4):
        PILImage.fromarray(gradient(t)).save(folder / f"{t:05d}.png")
        mask = np.zeros((48, 64), bool)
        mask[10:20, 5 + 3 * t:15 + 3 * t] = True
        masks.append(mask)
    annotation = {
        "videos": [{"id": 1, "height": 48, "width": 64, "length": 4,
                    "file_names": [f"walk/{t:05d}.png" for t in range(4)]}],
        "categories": [{"id": 7, "name": "person"}],
        "annotations": [{"id": 3, "video_id": 1, "category_id": 7, "iscrowd": 0,
                         "segmentations": [{"size": [48, 64], "counts": encode_rle(m).tolist()}
                                           if t != 2 else None
                                           for t, m in enumerate(masks)]}]}
    json_path = tmp_path / "instances.json"
    json_path.write_text(json.dumps(annotation))
    assert main([str(folder), "--output", str(tmp_path / "bag"), "--storage", "sqlite3",
                 "--encoding", "jpeg", "--rate", "5", "--gt-ytvis", str(json_path)]) == 0
    source = BagVideoSource(tmp_path / "bag", "/camera/image_raw", "/ground_truth/instances",
                            DEFAULT_CLASSES)
    clip = source.load_clip(0, range(source.num_frames(0)))
    assert clip.num_frames == 4 and clip.instance_ids.tolist() == [3]
    assert DEFAULT_CLASSES[clip.class_ids[0]] == "person"
    for t in range(4):
        expected = masks[t] if t != 2 else np.zeros_like(masks[t])
        assert np.array_equal(clip.masks[t, 0], expected)
    assert np.abs(clip.frames[0].astype(int) - gradient(0).astype(int)).mean() < 4  # JPEG
    with BagReader(tmp_path / "bag") as reader:
        store = metaseg_typestore()
        truth = [store.deserialize_cdr(m.data, m.msgtype)
                 for m in reader.messages(["/ground_truth/instances"])]
    assert [(i.age, i.hits) for m in truth for i in m.instances] == [(1, 1), (2, 2), (4, 3)]


def test_user_errors_are_one_line(tmp_path: Path, capsys) -> None:
    def error(*argv: str) -> str:
        assert main(list(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("metaseg-make-bag: error: "), err
        return err

    assert "no video file or image folder" in error(str(tmp_path / "nope.avi"), "--output",
                                                     str(tmp_path / "b"))
    (tmp_path / "not_a_video.avi").write_bytes(b"\x00" * 100)
    assert "not a video FFmpeg can read" in error(str(tmp_path / "not_a_video.avi"),
                                                   "--output", str(tmp_path / "b"))
    (tmp_path / "empty").mkdir()
    assert "no images" in error(str(tmp_path / "empty"), "--output", str(tmp_path / "b"))
    folder = tmp_path / "frames"
    folder.mkdir()
    PILImage.fromarray(gradient(0)).save(folder / "00000.png")
    davis = tmp_path / "davis"
    davis.mkdir()
    PILImage.fromarray(np.ones((20, 30), np.uint8)).save(davis / "00000.png")
    assert "ground truth is 20x30 (HxW), its image 48x64" in error(
        str(folder), "--output", str(tmp_path / "b"), "--gt-davis", str(davis))
    assert not (tmp_path / "b").exists()  # nothing half-written left behind
    assert "invalid choice: 'mono8'" in error(str(folder), "--output", str(tmp_path / "b"),
                                              "--encoding", "mono8")
    assert "rate must be in (0, 1000]" in error(str(folder), "--output", str(tmp_path / "b"),
                                                "--rate", "0")
