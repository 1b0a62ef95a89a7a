"""ROS 2 bags with InstanceMaskArray ground truth: write, read back, errors, training."""

from __future__ import annotations

import json
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.cli.make_synthetic import main as make_synthetic
from metaseg_ros.data.bag_format import (
    COMPRESSED_IMAGE_TYPE,
    DEFAULT_GT_TOPIC,
    DEFAULT_IMAGE_TOPIC,
    GROUND_TRUTH_TYPE,
    IMAGE_TYPE,
    metaseg_typestore,
)
from metaseg_ros.data.bag_reader import BagVideoSource
from metaseg_ros.data.bag_writer import write_bag
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.masks import encode_rle
from metaseg_ros.message_content import no_geometry_fields

CONFIG = SyntheticConfig(image_size=(72, 96), num_frames=5, min_visible_pixels=8)
STAMP0 = 1_700_000_123 * 1_000_000_000 + 250_000_000


@pytest.fixture(scope="module")
def source() -> SyntheticVideoSource:
    return SyntheticVideoSource(3, CONFIG, seed=2)


def assert_same_video(loaded, original) -> None:
    """Same frames and, matched by instance id, the same masks and classes."""
    assert np.array_equal(loaded.frames, original.frames)
    assert sorted(loaded.instance_ids.tolist()) == sorted(original.instance_ids.tolist())
    order = [original.instance_ids.tolist().index(i) for i in loaded.instance_ids]
    assert np.array_equal(loaded.masks, original.masks[:, order])
    assert np.array_equal(loaded.class_ids, original.class_ids[order])


@pytest.mark.torch_free
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("compressed", [False, "png"])
def test_round_trip_is_exact(tmp_path: Path, source, storage: str, compressed) -> None:
    root = write_bag(source, tmp_path, storage=storage, compressed=compressed)
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert sorted(p.name for p in root.iterdir()) == [source.video_name(v) for v in range(3)]
    assert (root / source.video_name(0) / f"{source.video_name(0)}{suffix}").is_file()
    loaded = BagVideoSource(root, DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC, DEFAULT_CLASSES)
    assert len(loaded) == 3 and loaded.class_names == DEFAULT_CLASSES
    for v in range(3):
        assert loaded.video_name(v) == source.video_name(v)
        assert loaded.num_frames(v) == CONFIG.num_frames and loaded.skipped_images(v) == 0
        stamps = loaded.frame_stamps_ns(v)
        assert np.all(np.diff(stamps) == 100_000_000)  # 10 Hz by default
        original = source.load_video(v).drop_absent()
        clip = loaded.load_clip(v, range(loaded.num_frames(v)))
        assert clip.video_name == source.video_name(v)
        assert_same_video(clip, original)


@pytest.mark.torch_free
def test_jpeg_frames_are_close_and_masks_exact(tmp_path: Path, source) -> None:
    root = write_bag(source, tmp_path, storage="mcap", compressed="jpeg")
    loaded = BagVideoSource(root, DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC, DEFAULT_CLASSES)
    clip, original = loaded.load_clip(2, [0, 4]), source.load_clip(2, [0, 4]).drop_absent()
    error = np.abs(clip.frames.astype(int) - original.frames.astype(int)).mean()
    assert 0 < error < 6
    order = [original.instance_ids.tolist().index(i) for i in clip.instance_ids]
    assert np.array_equal(clip.masks, original.masks[:, order])


@pytest.mark.torch_free
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_clip_reads_only_the_frames_asked_for(tmp_path: Path, source, storage: str) -> None:
    loaded = BagVideoSource(write_bag(source, tmp_path, storage=storage), DEFAULT_IMAGE_TOPIC,
                            DEFAULT_GT_TOPIC, DEFAULT_CLASSES)
    whole = loaded.load_clip(0, range(5))
    clip = loaded.load_clip(0, [4, 1, 1, 3])  # unordered, repeated (as clip sampling does)
    assert clip.frame_indices == (4, 1, 1, 3)
    assert np.array_equal(clip.frames, whole.frames[[4, 1, 1, 3]])
    assert np.array_equal(clip.masks, whole.masks[[4, 1, 1, 3]])
    assert np.array_equal(clip.instance_ids, whole.instance_ids)
    # the whole video's tracks, also those absent from these frames
    assert clip.masks.shape[1] == whole.masks.shape[1]
    with pytest.raises(IndexError, match=r"frame 5 outside 0\.\.4"):
        loaded.load_clip(0, [0, 5])
    copy = pickle.loads(pickle.dumps(loaded))  # DataLoader workers under spawn/forkserver
    assert np.array_equal(copy.load_clip(0, [2]).masks, whole.masks[[2]])


@pytest.mark.torch_free
def test_class_mapping_renames_and_drops(tmp_path: Path, source) -> None:
    root = write_bag(source, tmp_path)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("person: human\nchair: seat\ndining table: null\n")
    model_classes = ("human", "seat", "bottle")
    loaded = BagVideoSource(root, DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC, model_classes,
                            class_mapping=mapping)
    seen = set()
    for v in range(len(source)):
        original = source.load_video(v).drop_absent()
        names = [DEFAULT_CLASSES[c] for c in original.class_ids]
        expected = {int(i): model_classes.index({"person": "human", "chair": "seat"}.get(n, n))
                    for i, n in zip(original.instance_ids, names, strict=True)
                    if n != "dining table"}
        clip = loaded.load_clip(v, range(5))
        assert dict(zip(clip.instance_ids.tolist(), clip.class_ids.tolist(),
                        strict=True)) == expected
        seen.update(names)
        for n, instance_id in enumerate(clip.instance_ids):
            k = original.instance_ids.tolist().index(instance_id)
            assert np.array_equal(clip.masks[:, n], original.masks[:, k])
    assert {"person", "dining table"} <= seen  # the split exercises renaming and dropping


def _write_custom_bag(path: Path, frames: Sequence[dict], storage: str = "sqlite3",
                      gt_type: tuple[str, str | None, str | None] | None = None) -> None:
    """A bag written message by message. Each frame dict: stamp, optional image (rgb,
    encoding 'bgr8' with a padded step), optional gt (list of (track, class, mask)),
    log times image_log / gt_log (default: stamp)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = metaseg_typestore()
    types = store.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as bag:
        images = bag.add_connection(DEFAULT_IMAGE_TOPIC, IMAGE_TYPE, typestore=store)
        gt_name, msgdef, digest = gt_type or (GROUND_TRUTH_TYPE, None, None)
        if msgdef is None:
            truth = bag.add_connection(DEFAULT_GT_TOPIC, gt_name, typestore=store)
        else:
            truth = bag.add_connection(DEFAULT_GT_TOPIC, gt_name, msgdef=msgdef, rihs01=digest)
        for frame in frames:
            stamp = frame["stamp"]
            header = types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9,
                                                           nanosec=stamp % 10**9),
                frame_id="cam")
            if "image" in frame:
                rgb = frame["image"]
                height, width = rgb.shape[:2]
                step = width * 3 + 5
                rows = np.zeros((height, step), np.uint8)
                rows[:, :width * 3] = rgb[..., ::-1].reshape(height, -1)
                msg = types[IMAGE_TYPE](header=header, height=height, width=width,
                                        encoding="bgr8", is_bigendian=0, step=step,
                                        data=rows.ravel())
                bag.write(images, frame.get("image_log", stamp), store.serialize_cdr(msg,
                                                                                   IMAGE_TYPE))
            if "gt" in frame:
                height, width = frame.get("gt_size", frame["image"].shape[:2]
                                          if "image" in frame else (8, 8))
                instances = [types["metaseg_ros/msg/InstanceMask"](
                    track_id=track, class_id=0, class_name=name, score=0.9,
                    bbox=types["sensor_msgs/msg/RegionOfInterest"](
                        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
                    age=1, hits=1, mask_rle=encode_rle(mask),
                    **no_geometry_fields(types["geometry_msgs/msg/Point"]))
                    for track, name, mask in frame["gt"]]
                msg = types[GROUND_TRUTH_TYPE](header=header, height=height, width=width,
                                               instances=instances)
                bag.write(truth, frame.get("gt_log", stamp),
                          store.serialize_cdr(msg, GROUND_TRUTH_TYPE))


def _box(height: int, width: int, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[top:top + size, left:left + size + 3] = True  # wider than tall: catches transposes
    return mask


@pytest.mark.torch_free
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_hand_written_bag_matching_skipping_and_class_votes(tmp_path: Path,
                                                            storage: str) -> None:
    height, width = 20, 30
    rng = np.random.default_rng(0)
    rgbs = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(5)]
    masks = [_box(height, width, 2 + t, 3 + 2 * t, 6) for t in range(5)]
    period = 33_333_333
    frames = []
    for t in range(5):
        stamp = STAMP0 + t * period
        frame = {"stamp": stamp, "image": rgbs[t], "image_log": stamp + 7_000_000,
                 # the node's output is logged later than its image, after the next image
                 "gt_log": stamp + 2 * period + 11}
        if t < 3:
            frame["gt"] = [(7, "dog" if t == 2 else "person", masks[t]),
                           (9, "zebra", masks[t][::-1])]
        elif t == 3:
            frame["gt"] = []  # annotated, no objects
        frames.append(frame)  # t == 4: an image without ground truth
    _write_custom_bag(tmp_path / "scene_a", frames, storage)
    loaded = BagVideoSource(tmp_path / "scene_a", DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC,
                            DEFAULT_CLASSES)
    assert len(loaded) == 1 and loaded.video_name(0) == "scene_a"
    assert loaded.num_frames(0) == 4 and loaded.skipped_images(0) == 1
    assert loaded.frame_stamps_ns(0) == tuple(STAMP0 + t * period for t in range(4))
    clip = loaded.load_clip(0, [0, 1, 2, 3])
    # zebra is no model class; track 7 is 'person' in two of its three frames
    assert clip.instance_ids.tolist() == [7]
    assert clip.class_ids.tolist() == [DEFAULT_CLASSES.index("person")]
    assert np.array_equal(clip.frames, np.stack(rgbs[:4]))  # bgr8 with padded rows
    assert np.array_equal(clip.masks[:3, 0], np.stack(masks[:3]))
    assert not clip.masks[3].any()
    assert np.array_equal(loaded.load_clip(0, [2]).frames[0], rgbs[2])


@pytest.mark.torch_free
def test_a_single_mcap_file_is_one_video(tmp_path: Path, source) -> None:
    root = write_bag(source, tmp_path / "bags", storage="mcap")
    name = source.video_name(1)
    single = root / name / f"{name}.mcap"
    loaded = BagVideoSource(single, DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC, DEFAULT_CLASSES)
    assert len(loaded) == 1 and loaded.video_name(0) == name
    assert_same_video(loaded.load_clip(0, range(5)), source.load_video(1).drop_absent())


@pytest.mark.torch_free
def test_mcap_is_readable_by_mcap_ros2_support(tmp_path: Path, source) -> None:
    from mcap_ros2.reader import read_ros2_messages

    from metaseg_ros.masks import decode_rle

    root = write_bag(source, tmp_path, storage="mcap", compressed="png")
    name = source.video_name(0)
    original = source.load_video(0)
    messages = list(read_ros2_messages(root / name / f"{name}.mcap"))
    assert [m.channel.topic for m in messages] == [DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC] * 5
    assert {m.schema.name for m in messages} == {COMPRESSED_IMAGE_TYPE, GROUND_TRUTH_TYPE}
    for t in range(5):
        image, truth = messages[2 * t].ros_msg, messages[2 * t + 1].ros_msg
        stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in (image, truth)]
        assert stamps == [(1_700_000_000 + t // 10, t % 10 * 100_000_000)] * 2
        assert image.format == "png"
        assert (truth.height, truth.width) == CONFIG.image_size
        for instance in truth.instances:
            k = original.instance_ids.tolist().index(instance.track_id)
            assert instance.class_name == DEFAULT_CLASSES[original.class_ids[k]]
            assert instance.hits <= instance.age and instance.score == 1.0
            mask = decode_rle(instance.mask_rle, truth.height, truth.width)
            assert np.array_equal(mask, original.masks[t, k])
            rows = np.flatnonzero(mask.any(1))
            assert (instance.bbox.y_offset, instance.bbox.height) == \
                (rows[0], rows[-1] - rows[0] + 1)
        visible = {int(i) for i, m in zip(original.instance_ids, original.masks[t],
                                          strict=True) if m.any()}
        assert {i.track_id for i in truth.instances} == visible


@pytest.mark.torch_free
def test_custom_types_hash_like_the_generated_messages() -> None:
    """rosbags' RIHS01 of InstanceMaskArray equals the one rosidl generated (if installed)."""
    prefixes = [*os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep), sys.prefix]
    files = [Path(p) / "share/metaseg_ros/msg/InstanceMaskArray.json" for p in prefixes if p]
    found = next((f for f in files if f.is_file()), None)
    if found is None:
        pytest.skip("generated metaseg_ros messages are not installed")
    hashes = {h["type_name"]: h["hash_string"]
              for h in json.loads(found.read_text())["type_hashes"]}
    store = metaseg_typestore()
    for name in (GROUND_TRUTH_TYPE, "metaseg_ros/msg/InstanceMask"):
        assert store.hash_rihs01(name) == hashes[name]


@pytest.mark.torch_free
def test_ros_serialised_messages_read_and_written_bags_deserialise_in_rclpy(
        tmp_path: Path, source) -> None:
    """Bytes as `ros2 bag record` stores them (rclpy/rmw CDR) read back, both ways."""
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.rosbag2 import Reader, Writer
    from sensor_msgs.msg import Image
    from shapes import random_tracked_frame
    from std_msgs.msg import Header

    from metaseg_ros.msg import InstanceMaskArray
    from metaseg_ros.ros.messages import frame_to_msg

    store = metaseg_typestore()
    rng = np.random.default_rng(1)
    model_classes = tuple(f"class_{k}" for k in range(20))
    expected = []
    with Writer(tmp_path / "recorded", version=9) as bag:
        images = bag.add_connection("/cam/image", IMAGE_TYPE, typestore=store)
        truth = bag.add_connection("/cam/instances", GROUND_TRUTH_TYPE, typestore=store)
        for t in range(3):
            header = Header(frame_id="cam")
            header.stamp.sec, header.stamp.nanosec = 1_800_000_000 + t, 5
            rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            image = Image(header=header, height=48, width=64, encoding="rgb8", step=64 * 3,
                          data=rgb.tobytes())
            frame = random_tracked_frame(t, height=48, width=64, count=4)
            log_time = (1_800_000_000 + t) * 10**9
            bag.write(images, log_time, serialize_message(image))
            bag.write(truth, log_time + 1000, serialize_message(frame_to_msg(frame, header)))
            expected.append((rgb, frame))
    loaded = BagVideoSource(tmp_path / "recorded", "/cam/image", "/cam/instances",
                            model_classes)
    clip = loaded.load_clip(0, [0, 1, 2])
    assert clip.instance_ids.tolist() == [1000, 1007, 1014, 1021]
    assert clip.class_ids.tolist() == [0, 1, 2, 3]
    for t, (rgb, frame) in enumerate(expected):
        assert np.array_equal(clip.frames[t], rgb)
        for n, instance in enumerate(frame.instances):
            assert np.array_equal(clip.masks[t, n], instance.mask)

    root = write_bag(source, tmp_path / "ours")
    original = source.load_video(0)
    with Reader(root / source.video_name(0)) as reader:
        raws = [raw for c, _, raw in reader.messages() if c.topic == DEFAULT_GT_TOPIC]
    first = deserialize_message(raws[0], InstanceMaskArray)
    assert (first.height, first.width) == CONFIG.image_size
    assert sorted(i.track_id for i in first.instances) == sorted(
        int(i) for i, m in zip(original.instance_ids, original.masks[0], strict=True) if m.any())


@pytest.mark.torch_free
def test_clear_errors(tmp_path: Path, source) -> None:
    root = write_bag(source, tmp_path / "bags")
    bag = root / source.video_name(0)
    with pytest.raises(ValueError, match=r"no ground-truth topic '/nope'.*/camera/image_raw"):
        BagVideoSource(bag, DEFAULT_IMAGE_TOPIC, "/nope", DEFAULT_CLASSES)
    with pytest.raises(ValueError, match="expected sensor_msgs/msg/Image or sensor_msgs/msg/"
                                         "CompressedImage"):
        BagVideoSource(bag, DEFAULT_GT_TOPIC, DEFAULT_IMAGE_TOPIC, DEFAULT_CLASSES)
    with pytest.raises(ValueError, match="are the same"):
        BagVideoSource(bag, DEFAULT_GT_TOPIC, DEFAULT_GT_TOPIC, DEFAULT_CLASSES)
    with pytest.raises(FileNotFoundError):
        BagVideoSource(tmp_path / "missing", DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC,
                       DEFAULT_CLASSES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no bags"):
        BagVideoSource(tmp_path / "empty", DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC,
                       DEFAULT_CLASSES)
    with pytest.raises(Exception, match="exists already"):
        write_bag(source, root)

    rgb = np.zeros((8, 8, 3), np.uint8)
    mask = _box(8, 8, 1, 1, 3)
    unknown = ("vendor_msgs/msg/Labels", "int32 count\n", "RIHS01_" + "ab" * 32)
    _write_custom_bag(tmp_path / "unknown_type", [{"stamp": STAMP0, "image": rgb}],
                      gt_type=unknown)
    with pytest.raises(ValueError, match="has type vendor_msgs/msg/Labels; expected "
                                         "metaseg_ros/msg/InstanceMaskArray"):
        BagVideoSource(tmp_path / "unknown_type", DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC,
                       DEFAULT_CLASSES)
    msgdef, _ = metaseg_typestore().generate_msgdef(GROUND_TRUTH_TYPE, ros_version=2)
    other = (GROUND_TRUTH_TYPE, msgdef, "RIHS01_" + "cd" * 32)
    _write_custom_bag(tmp_path / "other_definition",
                      [{"stamp": STAMP0, "image": rgb, "gt": [(1, "person", mask)]}],
                      gt_type=other)
    with pytest.raises(ValueError, match="another definition"):
        BagVideoSource(tmp_path / "other_definition", DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC,
                       DEFAULT_CLASSES)
    _write_custom_bag(tmp_path / "unmatched", [
        {"stamp": STAMP0, "image": rgb, "gt": [(1, "person", mask)]},
        {"stamp": STAMP0 + 1, "gt": [(1, "person", mask)]}])
    with pytest.raises(ValueError, match=r"1 ground-truth messages .* match no image stamp"):
        BagVideoSource(tmp_path / "unmatched", DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC,
                       DEFAULT_CLASSES)
    _write_custom_bag(tmp_path / "twice", [
        {"stamp": STAMP0, "image": rgb, "gt": [(1, "person", mask)]},
        {"stamp": STAMP0, "image": rgb, "image_log": STAMP0 + 5}])
    with pytest.raises(ValueError, match="two messages on '/camera/image_raw' with stamp"):
        BagVideoSource(tmp_path / "twice", DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC,
                       DEFAULT_CLASSES)
    _write_custom_bag(tmp_path / "wrong_size", [
        {"stamp": STAMP0, "image": rgb, "gt": [(1, "person", np.ones((8, 9), bool))],
         "gt_size": (8, 9)}])
    loaded = BagVideoSource(tmp_path / "wrong_size", DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC,
                            DEFAULT_CLASSES)
    with pytest.raises(ValueError, match="ground truth of frame 0 is 8x9"):
        loaded.load_clip(0, [0])


@pytest.mark.torch_free
def test_make_synthetic_writes_bags(tmp_path: Path) -> None:
    assert make_synthetic(["--output", str(tmp_path), "--format", "bag", "--videos", "2",
                           "--frames", "3", "--size", "48", "64", "--bag-storage", "mcap",
                           "--bag-images", "png"]) == 0
    loaded = BagVideoSource(tmp_path, DEFAULT_IMAGE_TOPIC, DEFAULT_GT_TOPIC, DEFAULT_CLASSES)
    generated = SyntheticVideoSource(2, SyntheticConfig(image_size=(48, 64), num_frames=3))
    assert len(loaded) == 2
    for v in range(2):
        assert_same_video(loaded.load_clip(v, range(3)), generated.load_video(v).drop_absent())


def test_training_steps_from_a_bag_directory(tmp_path: Path) -> None:
    import torch

    from metaseg_ros.train.config import load_train_config
    from metaseg_ros.train.trainer import Trainer

    torch.set_num_threads(1)
    bags = write_bag(SyntheticVideoSource(2, SyntheticConfig(image_size=(64, 64),
                                                             num_frames=4), seed=5),
                     tmp_path / "bags", storage="mcap")
    config = load_train_config(None, [
        "model_overrides={num_queries: 8, num_decoder_layers: 1}", "init=none",
        "data.kind=bag", f"data.root={bags}", f"data.image_topic={DEFAULT_IMAGE_TOPIC}",
        f"data.gt_topic={DEFAULT_GT_TOPIC}", "data.augment.output_size=[64,64]",
        "data.num_workers=0", "data.clip_frames=2", "loss.num_points=128",
        "optim.warmup_steps=0", "optim.max_steps=2", "optim.batch_size=1",
        "progress_bar=false", "checkpoint_every=0", f"output_dir={tmp_path / 'run'}"])
    trainer = Trainer(config)
    assert isinstance(trainer.source, BagVideoSource) and len(trainer.source) == 2
    results = [trainer.train_step() for _ in range(2)]
    assert trainer.step == 2
    for result in results:
        assert all(np.isfinite(v) for v in result.losses.values()), result.losses
        assert result.losses["total"] > 0
    with pytest.raises(ValueError, match=r"data\.kind bag needs data\.root"):
        load_train_config(None, ["data.kind=bag"])


@pytest.mark.torch_free
def test_reading_a_bag_imports_no_rclpy(tmp_path: Path, source) -> None:
    import subprocess

    root = write_bag(source, tmp_path, storage="mcap")
    code = ("import sys\n"
            "from metaseg_ros.data.bag_reader import BagVideoSource\n"
            f"s = BagVideoSource({str(root)!r}, {DEFAULT_IMAGE_TOPIC!r}, {DEFAULT_GT_TOPIC!r},"
            " ('person',))\n"
            "s.load_clip(0, [0, 1])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'sensor_msgs', 'std_msgs')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout


def test_evaluate_cli_scores_a_checkpoint_on_bags(tmp_path: Path, source, capsys,
                                                  monkeypatch) -> None:
    """metaseg-eval --bag with the shipped weights: every metric present and in range, the
    ground truth scored is the bag's (the videos written), and the tracking scores equal
    motmetrics' and TrackEval's on what it scored."""
    pytest.importorskip("trackeval")
    import torch
    from metric_reference import (
        check_against_references,
        check_metrics_document,
        decode_masks,
        record_scored_videos,
    )

    from metaseg_ros.eval.evaluate import main as evaluate
    from metaseg_ros.inference.builder import shipped_checkpoint

    checkpoint = shipped_checkpoint("tiny")
    if checkpoint is None:
        pytest.skip("no shipped tiny weights")
    torch.set_num_threads(1)
    write_bag(source, tmp_path / "bags", storage="mcap")
    scored = record_scored_videos(monkeypatch)
    output = tmp_path / "metrics.json"
    assert evaluate(["--checkpoint", str(checkpoint), "--bag", str(tmp_path / "bags"),
                     "--score-threshold", "0.3", "--output", str(output)]) == 0
    capsys.readouterr()
    document = json.loads(output.read_text())
    assert document["split"]["bag"] == str(tmp_path / "bags")
    metrics = document["metrics"]
    check_metrics_document(metrics)
    assert metrics["num_videos"] == len(source)
    assert metrics["num_frames"] == sum(source.num_frames(i) for i in range(len(source)))
    [videos] = scored
    assert len(videos) == len(source)
    # The bags hold one video each; match them to the written videos by their masks.
    written = [source.load_video(i) for i in range(len(source))]
    for video in videos:
        first = video.ground_truth[0]
        clip = next(c for c in written if c.num_frames == len(video.ground_truth)
                    and np.array_equal(decode_masks(first.masks), c.masks[0][c.present[0]]))
        for t, frame in enumerate(video.ground_truth):
            visible = clip.present[t]
            assert sorted(frame.ids.tolist()) == sorted(clip.instance_ids[visible].tolist())
            order = [frame.ids.tolist().index(i) for i in clip.instance_ids[visible]]
            np.testing.assert_array_equal(decode_masks(frame.masks)[order],
                                          clip.masks[t][visible])
    expected = check_against_references(metrics, videos)
    assert expected["false_positives"] + expected["misses"] > 0 and expected["det_a"] > 0
