"""Every command of the package answers a user error with one line on stderr and exit code 2,
no traceback: the installed console scripts (real processes) and each entry point's errors
(missing files, unknown topics, ground truth of another size than its image, an empty bag,
bad arguments). metaseg-replay, metaseg-make-bag and metaseg-convert have their own tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaseg_ros.cli.demo import main as demo_main
from metaseg_ros.cli.export import main as export_main
from metaseg_ros.cli.make_synthetic import main as synthetic_main
from metaseg_ros.cli.train import main as train_main
from metaseg_ros.data.bag_format import metaseg_typestore
from metaseg_ros.eval.evaluate import main as eval_main
from metaseg_ros.masks import encode_rle
from metaseg_ros.message_content import no_geometry_fields
from metaseg_ros.model.checkpoint import save_checkpoint
from metaseg_ros.model.config import get_config
from metaseg_ros.model.metasegmenter import MetaSegmenter


def one_line(capsys, status: int, prog: str, *expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: error: "), err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize("argv,expected", [
    (["metaseg-replay", "/no/such.mcap", "--output", "/tmp/x"], "no bag or directory at"),
    (["metaseg-eval", "--checkpoint", "/no/model"], "/no/model"),
    (["metaseg-make-bag"], "the following arguments are required"),
])
def test_console_scripts(argv, expected):
    executable = shutil.which(argv[0], path=str(Path(sys.executable).parent))
    assert executable, f"{argv[0]} is not installed (make setup)"
    done = subprocess.run([executable, *argv[1:]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{argv[0]}: error: "), done.stderr
    assert expected in lines[0] and "Traceback" not in done.stderr


def _bag(path: Path, gt_size: tuple[int, int] | None, with_images: bool = True) -> Path:
    """A rosbag2 with a 40x60 image and (optionally) ground truth of gt_size."""
    from rosbags.rosbag2 import Writer

    store = metaseg_typestore()
    types = store.types
    with Writer(path, version=Writer.VERSION_LATEST) as writer:
        images = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image",
                                       typestore=store)
        truth = writer.add_connection("/ground_truth/instances",
                                      "metaseg_ros/msg/InstanceMaskArray", typestore=store)
        if not with_images:
            return path
        header = types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="camera")
        image = types["sensor_msgs/msg/Image"](header=header, height=40, width=60,
                                               encoding="rgb8", is_bigendian=0, step=180,
                                               data=np.zeros(40 * 180, np.uint8))
        writer.write(images, 1, store.serialize_cdr(image, "sensor_msgs/msg/Image"))
        if gt_size is not None:
            mask = np.zeros(gt_size, bool)
            mask[2:5, 3:9] = True
            box = types["sensor_msgs/msg/RegionOfInterest"](x_offset=3, y_offset=2, height=3,
                                                            width=6, do_rectify=False)
            instance = types["metaseg_ros/msg/InstanceMask"](
                track_id=1, class_id=0, class_name="person", score=1.0, bbox=box, age=1,
                hits=1, mask_rle=encode_rle(mask),
                **no_geometry_fields(types["geometry_msgs/msg/Point"]))
            array = types["metaseg_ros/msg/InstanceMaskArray"](
                header=header, height=gt_size[0], width=gt_size[1], instances=[instance])
            writer.write(truth, 1, store.serialize_cdr(array,
                                                       "metaseg_ros/msg/InstanceMaskArray"))
    return path


def test_eval_user_errors(tmp_path, capsys):
    torch.manual_seed(0)
    save_checkpoint(MetaSegmenter(get_config("tiny", image_size=(64, 64), num_queries=10,
                                             num_decoder_layers=2)), tmp_path / "model")
    model = ["--checkpoint", str(tmp_path / "model")]
    good = _bag(tmp_path / "good", (40, 60))
    one_line(capsys, eval_main([*model, "--bag", str(good), "--image-topic", "/cam"]),
             "metaseg-eval", "no image topic '/cam'", "/camera/image_raw (sensor_msgs/msg/Image")
    one_line(capsys, eval_main([*model, "--bag", str(tmp_path / "absent")]), "metaseg-eval",
             "absent")
    one_line(capsys, eval_main([*model, "--bag", str(_bag(tmp_path / "size", (30, 60)))]),
             "metaseg-eval", "ground truth of frame 0 is 30x60 (HxW), its image 40x60")
    one_line(capsys, eval_main([*model, "--bag", str(_bag(tmp_path / "empty", None,
                                                          with_images=False))]),
             "metaseg-eval", "no ground truth on '/ground_truth/instances'")
    one_line(capsys, eval_main([*model, "--threads", "two"]), "metaseg-eval",
             "invalid int value: 'two'")


def test_other_commands_user_errors(tmp_path, capsys):
    one_line(capsys, export_main([str(tmp_path / "none.safetensors")]), "metaseg-export",
             "none")
    one_line(capsys, export_main(["--onnx"]), "metaseg-export", "give a checkpoint or --config")
    one_line(capsys, train_main(["--config", str(tmp_path / "missing.yaml")]), "metaseg-train",
             "no training config at")
    one_line(capsys, synthetic_main(["--output", str(tmp_path), "--format", "coco"]),
             "metaseg-make-synthetic", "invalid choice: 'coco'")
    one_line(capsys, demo_main(["--frames", "0"]), "metaseg-demo", "--frames must be in")
    one_line(capsys, demo_main(["--checkpoint", str(tmp_path / "nothing")]), "metaseg-demo",
             "no checkpoint at")
