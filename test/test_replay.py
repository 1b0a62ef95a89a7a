"""metaseg-replay end to end on real bags (rosbags, mcap-ros2-support, sqlite3 files), with the
deterministic ColorSegmenter plugin (test/helpers) as the segmenter: both storages in and out,
a bag written by another library in, the results bag read by other libraries out, ground
truth from a topic and from DAVIS PNGs, bags cut short, Ctrl-C, the report and the user
errors. (test_replay_node.py shows that replay publishes what the node publishes.)"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from color_segmenter import draw_squares
from PIL import Image as PILImage

from metaseg_ros.cli.make_bag import main as make_bag_main
from metaseg_ros.cli.replay import main as replay_main
from metaseg_ros.data.bag_access import BagReader
from metaseg_ros.data.bag_format import metaseg_typestore
from metaseg_ros.data.davis import _palette
from metaseg_ros.masks import decode_rle

HELPERS = Path(__file__).resolve().parent / "helpers"
FRAMES = 12
SIZE = (60, 80)


def squares(t: int) -> dict[int, tuple[int, int, int]]:
    """Square 0 moves right, square 1 moves down, square 2 appears at frame 4."""
    found = {0: (4 + 3 * t, 6, 12), 1: (50, 2 + 2 * t, 10)}
    if t >= 4:
        found[2] = (20, 40, 9)
    return found


def write_footage(root: Path, frames: int = FRAMES) -> tuple[Path, Path]:
    """A folder of frames and a DAVIS root with their exact masks and classes."""
    images = root / "squares"
    annotations = root / "davis" / "Annotations" / "480p" / "squares"
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for t in range(frames):
        PILImage.fromarray(draw_squares(*SIZE, squares(t))).save(images / f"{t:05d}.png")
        labels = np.zeros(SIZE, np.uint8)
        for index, (x, y, side) in squares(t).items():
            labels[y:y + side, x:x + side] = index + 1
        png = PILImage.fromarray(labels, mode="P")
        png.putpalette(_palette())
        png.save(annotations / f"{t:05d}.png")
    # ColorSegmenter's classes: palette index 0 person, 1 bicycle, 2 car.
    (root / "davis" / "davis_semantics.json").write_text(json.dumps(
        {"squares": {"1": "person", "2": "bicycle", "3": "car"}}))
    return images, root / "davis"


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n    segmenter: color_segmenter:create\n"
                    "    tracker:\n      confirm_hits: 1\n")
    return path


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> tuple[Path, Path]:
    return write_footage(tmp_path_factory.mktemp("footage"))


def make_squares_bag(footage, path: Path, storage: str, encoding: str = "rgb8",
                     truth: bool = True) -> Path:
    images, davis = footage
    argv = [str(images), "--output", str(path), "--storage", storage, "--encoding", encoding]
    assert make_bag_main(argv + (["--gt-davis", str(davis)] if truth else [])) == 0
    return path


def replay(*argv: str) -> int:
    return replay_main([*map(str, argv), "--no-progress"])


def read_bag(path: Path) -> dict[str, list]:
    """Topic -> [(log time, message)] read with rosbags."""
    store = metaseg_typestore()
    found: dict[str, list] = {}
    with BagReader(path) as reader:
        assert reader.recovered is None
        for raw in reader.messages(reader.topics):
            found.setdefault(raw.topic, []).append(
                (raw.log_time, store.deserialize_cdr(raw.data, raw.msgtype)))
    return found


@pytest.mark.parametrize("storage_in,storage_out", [("sqlite3", "mcap"), ("mcap", "sqlite3")])
def test_replay_with_ground_truth_both_storages(tmp_path, footage, params_file, storage_in,
                                                storage_out, capsys):
    bag = make_squares_bag(footage, tmp_path / "in", storage_in)
    out = tmp_path / "out"
    assert replay(bag, "--output", out, "--params-file", params_file, "--gt-topic",
                  "/ground_truth/instances", "--labels", "--overlay", "--storage",
                  storage_out) == 0
    assert "frames/s" in capsys.readouterr().out
    results = read_bag(out / "results")
    inputs = read_bag(bag)
    assert set(results) == {"/camera/image_raw", "/instances", "/instance_labels", "/overlay"}
    assert [t for t, _ in results["/instances"]] == [t for t, _ in inputs["/camera/image_raw"]]
    for (_, image), (_, instances), (_, labels) in zip(
            inputs["/camera/image_raw"], results["/instances"], results["/instance_labels"],
            strict=True):
        assert instances.header == image.header and labels.header == image.header
        t = (image.header.stamp.sec * 10**9 + image.header.stamp.nanosec - 1_700_000_000 * 10**9
             ) // 100_000_000
        expected = squares(t)
        assert len(instances.instances) == len(expected)
        assert labels.encoding == "16UC1"  # the node's default label_encoding
        label_pixels = np.frombuffer(labels.data.tobytes(), "<u2").reshape(SIZE)
        for instance in instances.instances:
            mask = decode_rle(instance.mask_rle, instances.height, instances.width)
            x, y, side = expected[instance.class_id]
            assert mask.sum() == side * side and mask[y, x]
            assert np.array_equal(label_pixels == instance.track_id, mask)
    assert np.array_equal(results["/camera/image_raw"][3][1].data,
                          inputs["/camera/image_raw"][3][1].data)
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == FRAMES and not report["interrupted"]
    metrics = report["metrics"]
    assert metrics["idf1"] == pytest.approx(1.0) and metrics["mota"] == pytest.approx(1.0)
    assert metrics["video_ap"] == pytest.approx(1.0) and metrics["id_switches"] == 0
    assert set(report["per_class_ap"]) == {"person", "bicycle", "car"}
    assert report["videos"][0]["annotated_frames"] == FRAMES


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.captions: list[str] = []
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_caption = tag == "figcaption"

    def handle_data(self, data):
        if self._in_caption:
            self.captions.append(data)
            self._in_caption = False


def test_report_plots_and_overlay_video(tmp_path, footage, params_file):
    import av

    bag = make_squares_bag(footage, tmp_path / "in", "mcap", encoding="bgr8")
    out = tmp_path / "out"
    assert replay(bag, "--output", out, "--params-file", params_file, "--gt-davis",
                  footage[1], "--max-frames", "9") == 0
    page = _Page()
    page.feed((out / "report.html").read_text())
    assert {"latency per frame", "latency per stage", "instances per frame", "track timeline",
            "AP per class", "overlay: first frame"} <= set(page.captions)
    assert len(page.images) == len(page.captions) >= 6
    for source, caption in zip(page.images, page.captions, strict=True):
        assert source.startswith("data:image/png;base64,")
        with PILImage.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            image.load()
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 5, caption  # drawn, not blank
        assert image.width == SIZE[1] if caption.startswith("overlay") else image.width > 400
    with av.open(str(out / "overlay.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape[:2] == SIZE
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 9 and report["metrics"]["idf1"] == pytest.approx(1.0)


def _ros2_image_mcap(path: Path, frames: int, loop_at: int | None = None) -> None:
    """An MCAP written by mcap-ros2-support (not rosbags) with rgb8 images (header stamps
    starting again at `loop_at`, as a looped bag's do)."""
    from mcap_ros2.writer import Writer

    store = metaseg_typestore()
    text, _ = store.generate_msgdef("sensor_msgs/msg/Image", ros_version=2)
    with path.open("wb") as stream:
        writer = Writer(stream)
        schema = writer.register_msgdef("sensor_msgs/msg/Image", text)
        for t in range(frames):
            rgb = draw_squares(*SIZE, squares(t))
            stamp = 5_000_000_000 + t * 50_000_000
            header = stamp - (loop_at or 0) * 50_000_000 if loop_at and t >= loop_at else stamp
            writer.write_message("/front/image", schema, {
                "header": {"stamp": {"sec": header // 10**9, "nanosec": header % 10**9},
                           "frame_id": "front"},
                "height": SIZE[0], "width": SIZE[1], "encoding": "rgb8", "is_bigendian": 0,
                "step": SIZE[1] * 3, "data": rgb.tobytes()}, log_time=stamp, publish_time=stamp)
        writer.finish()


def test_foreign_bag_in_results_read_by_other_libraries(tmp_path, params_file):
    from mcap_ros2.reader import read_ros2_messages
    from rclpy.serialization import deserialize_message

    from metaseg_ros.msg import InstanceMaskArray

    source = tmp_path / "foreign.mcap"
    _ros2_image_mcap(source, 6)
    assert replay(source, "--output", tmp_path / "a", "--params-file", params_file,
                  "--start", "0.075", "--no-video") == 0  # frames 2..5 (20 Hz)
    decoded = [m for m in read_ros2_messages(tmp_path / "a" / "results" / "results.mcap")
               if m.channel.topic == "/instances"]
    assert len(decoded) == 4
    assert decoded[0].ros_msg.header.frame_id == "front"
    assert decoded[0].ros_msg.header.stamp.nanosec == 100_000_000
    assert [len(m.ros_msg.instances) for m in decoded] == [2, 2, 3, 3]
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["metrics"] is None and report["videos"][0]["tracks"]

    assert replay(source, "--output", tmp_path / "b", "--params-file", params_file,
                  "--storage", "sqlite3", "--no-images", "--max-frames", "4",
                  "--no-video") == 0
    database = next((tmp_path / "b" / "results").glob("*.db3"))
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT t.name, m.data FROM messages m JOIN topics t ON m.topic_id = t.id "
            "ORDER BY m.timestamp").fetchall()
    assert [name for name, _ in rows] == ["/instances"] * 4
    messages = [deserialize_message(data, InstanceMaskArray) for _, data in rows]
    assert [len(m.instances) for m in messages] == [2, 2, 2, 2]
    assert all(i.track_id > 0 and i.class_name in ("person", "bicycle") for i in
               messages[0].instances)


def test_a_looped_bag_resets_memory_and_tracks_as_the_node_does(tmp_path, params_file):
    source = tmp_path / "looped.mcap"
    _ros2_image_mcap(source, 6, loop_at=3)
    assert replay(source, "--output", tmp_path / "out", "--params-file", params_file,
                  "--no-video") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["videos"][0]["stream_resets"] == {"stamp_backwards": 1}
    ids = [{i["track_id"] for i in f["instances"]} for f in report["videos"][0]["per_frame"]]
    assert ids[0] == ids[2] and not ids[3] & ids[2]  # new ids after the loop, never reused


def _cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bags_cut_short_are_replayed_up_to_the_cut(tmp_path, footage, params_file, storage,
                                                   capsys, caplog):
    bag = make_squares_bag(footage, tmp_path / "in", storage)
    storage_file = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    (bag / "metadata.yaml").unlink()  # the recorder never closed the bag
    _cut(storage_file, 0.6)
    caplog.set_level("WARNING", logger="metaseg_ros.bags")
    with BagReader(bag) as reader:
        images = reader.topics["/camera/image_raw"].count
    assert 2 <= images < FRAMES
    assert replay(bag, "--output", tmp_path / "out", "--params-file", params_file,
                  "--gt-topic", "/ground_truth/instances") == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "metaseg_ros.bags"]
    assert warnings and "cut short" in warnings[0] and "messages up to the cut" in warnings[0]
    assert "no metadata.yaml" in warnings[0]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["frames"] == images
    assert report["videos"][0]["recovered_messages"] >= images
    assert report["metrics"]["idf1"] == pytest.approx(1.0)
    assert len(read_bag(tmp_path / "out" / "results")["/instances"]) == images
    # metaseg-eval's reader takes the same bag: the annotated frames before the cut.
    from metaseg_ros.classes import DEFAULT_CLASSES
    from metaseg_ros.data.bag_reader import BagVideoSource

    source = BagVideoSource(bag, "/camera/image_raw", "/ground_truth/instances",
                            DEFAULT_CLASSES)
    clip = source.load_clip(0, range(source.num_frames(0)))
    assert images - 1 <= clip.num_frames <= images and clip.masks.any()


def test_ctrl_c_closes_the_results_bag_and_reports_what_was_done(tmp_path, footage,
                                                                 params_file):
    images = tmp_path / "many"
    images.mkdir()
    for t in range(40):
        PILImage.fromarray(draw_squares(*SIZE, squares(t % 10))).save(images / f"{t:05d}.png")
    bag = tmp_path / "bag"
    assert make_bag_main([str(images), "--output", str(bag), "--rate", "10"]) == 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HELPERS),
                                                      os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "metaseg_ros.cli.replay", str(bag), "--output",
         str(tmp_path / "out"), "--params-file", str(params_file), "--realtime"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    # The progress bar reaches the terminal's stderr; the file appears when the bag opens.
    while not (tmp_path / "out" / "results").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # about 15 of the 40 frames (4 s at 10 Hz)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["interrupted"] and 0 < report["frames"] < 40
    assert len(read_bag(tmp_path / "out" / "results")["/instances"]) == report["frames"]


def _one_line_error(capsys, code: int, *expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("metaseg-replay: error: "), err
    for text in expected:
        assert text in err, err
    return err


def test_user_errors_are_one_line_and_exit_2(tmp_path, footage, params_file, capsys):
    bag = make_squares_bag(footage, tmp_path / "in", "mcap", truth=True)
    common = ["--params-file", params_file]
    out = tmp_path / "o"
    _one_line_error(capsys, replay(bag, "--output", out, *common, "--image-topic", "/nope"),
                    "no topic '/nope'", "/camera/image_raw (sensor_msgs/msg/Image")
    _one_line_error(capsys, replay(tmp_path / "absent.mcap", "--output", out, *common),
                    "absent.mcap")
    _one_line_error(capsys, replay(bag, "--output", out, *common, "--gt-topic",
                                   "/camera/image_raw"),
                    "ground-truth topic '/camera/image_raw' has type sensor_msgs/msg/Image")
    _one_line_error(capsys, replay(bag, "--output", out, *common, "--start", "3", "--end", "1"),
                    "--end (1.0) must be after --start (3.0)")
    _one_line_error(capsys, replay(bag, "--output", out, "--checkpoint", tmp_path / "none"),
                    "no checkpoint at")
    _one_line_error(capsys, replay(bag, *common), "--output")
    # Ground truth of another size than the images.
    small = tmp_path / "small"
    (small / "Annotations" / "480p" / "squares").mkdir(parents=True)
    PILImage.fromarray(np.ones((30, 40), np.uint8)).save(
        small / "Annotations" / "480p" / "squares" / "00000.png")
    _one_line_error(capsys, replay(bag, "--output", tmp_path / "o2", *common, "--gt-davis",
                                   small),
                    "ground truth is 30x40 (HxW), its image 60x80")
    # A bag without images, and one whose images are in an encoding nobody reads.
    store = metaseg_typestore()
    from rosbags.rosbag2 import Writer

    empty = tmp_path / "empty"
    with Writer(empty, version=Writer.VERSION_LATEST) as writer:
        writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
    _one_line_error(capsys, replay(empty, "--output", tmp_path / "o3", *common),
                    "no image topic", "/chatter (std_msgs/msg/String, 0 messages)")
    bayer = tmp_path / "bayer"
    with Writer(bayer, version=Writer.VERSION_LATEST) as writer:
        connection = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=store)
        types = store.types
        header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](
            sec=1, nanosec=0), frame_id="cam")
        msg = types["sensor_msgs/msg/Image"](header=header, height=4, width=4,
                                             encoding="bayer_grbg8", is_bigendian=0, step=4,
                                             data=np.zeros(16, np.uint8))
        writer.write(connection, 1, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    _one_line_error(capsys, replay(bayer, "--output", tmp_path / "o4", *common),
                    "unsupported encoding 'bayer_grbg8'")
    assert not (tmp_path / "o4" / "results").exists()  # nothing half-written left
    # Two image topics (a results bag with its overlay): the user has to choose.
    assert replay(bag, "--output", tmp_path / "o5", *common, "--overlay", "--max-frames", "2",
                  "--no-video") == 0
    capsys.readouterr()
    _one_line_error(capsys, replay(tmp_path / "o5" / "results", "--output", tmp_path / "o7",
                                   *common), "choose one with --image-topic")
    (tmp_path / "o6" / "results").mkdir(parents=True)
    _one_line_error(capsys, replay(bag, "--output", tmp_path / "o6", *common), "already exists")


def test_a_directory_of_bags_is_one_video_each(tmp_path, params_file):
    from metaseg_ros.data.bag_writer import write_bag
    from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource

    source = SyntheticVideoSource(2, SyntheticConfig(image_size=(40, 56), num_frames=3), seed=5)
    write_bag(source, tmp_path / "bags", storage="sqlite3", compressed="png")
    assert replay(tmp_path / "bags", "--output", tmp_path / "out", "--params-file", params_file,
                  "--gt-topic", "/ground_truth/instances") == 0
    names = [source.video_name(v) for v in range(2)]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [v["name"] for v in report["videos"]] == names and report["frames"] == 6
    for name in names:
        assert len(read_bag(tmp_path / "out" / "results" / name)["/instances"]) == 3
        assert (tmp_path / "out" / "overlay" / f"{name}.mp4").is_file()
    assert report["metrics"]["misses"] > 0  # the palette segmenter finds none of these objects
