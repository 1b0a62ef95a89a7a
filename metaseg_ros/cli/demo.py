"""`make demo`: run metaseg_node on a generated clip and leave what there is to look at.

The node is started exactly as launch/metaseg.launch.py starts it (its own process, the
shipped parameters and Fast DDS profile). A synthetic video with exact ground truth (real
cut-outs over real backgrounds, metaseg_ros.data.synthetic) is written as a bag, played on
the image topic one frame after the other's answer, and everything the node publishes is
recorded. The output folder (printed at the end) holds:

    input/        the clip as a rosbag2 (images and ground truth)
    results/      the node's instances and overlay, recorded over DDS (rosbag2, MCAP)
    report.html   latency, instances, track timeline, metrics against the ground truth
    report.json   the same numbers
    overlay.mp4   the node's overlay images as a video
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from metaseg_ros.ros.launch_command import (
    LaunchArguments,
    node_command,
    node_environment,
    profile_variables,
)
from metaseg_ros.user_errors import ArgumentParser, UserError, run_command

PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_shm.xml"
IMAGE_TOPIC = "/demo/camera/image_raw"
OUTPUTS = ("input", "results", "report.html", "report.json", "overlay.mp4", "overlay.gif")


def parse_args(argv: Sequence[str] | None):
    import argparse

    parser = ArgumentParser(prog="metaseg-demo", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=16, help="frames of the clip")
    parser.add_argument("--size", type=int, default=512, help="frame height and width")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated clip")
    parser.add_argument("--checkpoint", default="", help="checkpoint ('' = shipped weights)")
    parser.add_argument("--output", type=Path, default=Path("artifacts/demo"),
                        help="the folder that receives everything")
    parser.add_argument("--timeout", type=float, default=240.0,
                        help="seconds to wait for the node to start / answer a frame")
    args = parser.parse_args(argv)
    if not 1 <= args.frames <= 10_000 or not 32 <= args.size <= 4096:
        raise UserError("--frames must be in 1..10000 and --size in 32..4096")
    if args.checkpoint and not Path(args.checkpoint).exists() \
            and not Path(f"{args.checkpoint}.safetensors").exists():
        raise UserError(f"no checkpoint at {args.checkpoint}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `metaseg-demo` (and `make demo`)."""
    return run_command("metaseg-demo", _main, argv)


def _write_input(args, output: Path):
    """The generated clip as output/input (rosbag2 MCAP with ground truth); the clip."""
    from metaseg_ros.data.bag_writer import write_bag
    from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource

    source = SyntheticVideoSource(1, SyntheticConfig(image_size=(args.size, args.size),
                                                     num_frames=args.frames), seed=args.seed)
    clip = source.load_video(0)
    staging = Path(tempfile.mkdtemp(prefix="metaseg_demo_bag_", dir=output))
    write_bag(source, staging, storage="mcap", image_topic=IMAGE_TOPIC)
    (staging / source.video_name(0)).rename(output / "input")
    shutil.rmtree(staging)
    names = ", ".join(source.class_names[c] for c in clip.class_ids)
    print(f"demo: generated {clip.num_frames} frames of {args.size}x{args.size} with "
          f"{len(clip.instance_ids)} objects ({names}) -> {output / 'input'}")
    return source, clip


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    for variable in profile_variables(os.environ.get("ROS_DISTRO", "")):
        os.environ.setdefault(variable, str(PROFILE))
    executable = shutil.which("metaseg_node", path=str(Path(sys.executable).parent)) or \
        shutil.which("metaseg_node")
    if executable is None:
        raise UserError("metaseg_node is not installed (run `make setup`)")
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # the previous demo's results
        path = output / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    source, clip = _write_input(args, output)

    from metaseg_ros.ros.demo_player import play_and_record, write_recording

    work = Path(tempfile.mkdtemp(prefix="metaseg_demo_"))
    launch = LaunchArguments(image=IMAGE_TOPIC, namespace="demo")
    if args.checkpoint:
        params = work / "params.yaml"
        params.write_text(Path(launch.params_file).read_text().replace(
            'checkpoint: ""', f'checkpoint: "{args.checkpoint}"'))
        launch = LaunchArguments(image=launch.image, namespace="demo", params_file=str(params))
    command = node_command(launch, executable, work)
    print("demo: starting the node as the launch file does:\n  " + " ".join(command))
    node = subprocess.Popen(command, env=node_environment(launch))
    try:
        recording = play_and_record(output / "input", IMAGE_TOPIC, "demo", node, args.timeout,
                                    on_answer=_print_frame)
    except RuntimeError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
    write_recording(recording, output / "results")
    document = _report(recording, source, clip, output)
    metrics = document["metrics"]
    print(f"demo: mask MOTA {metrics['mota']:.3f}, IDF1 {metrics['idf1']:.3f}, HOTA "
          f"{metrics['hota']:.3f}, video AP {metrics['video_ap']:.3f}, ID switches "
          f"{metrics['id_switches']}")
    print(f"demo: input bag, results bag (recorded from the node over DDS), report.html and "
          f"{document['videos'][0]['overlay_video']} are in\n  {output}/")
    return 0


def _print_frame(exchange) -> None:
    msg = exchange.instances
    parts = [f"#{i.track_id} {i.class_name} {i.score:.2f} "
             f"[{i.bbox.x_offset},{i.bbox.y_offset} {i.bbox.width}x{i.bbox.height}]"
             for i in msg.instances]
    print(f"frame {msg.header.stamp.sec}.{msg.header.stamp.nanosec // 10**6:03d} "
          f"({exchange.round_trip_ms:6.0f} ms): {len(msg.instances)} instances  "
          + "; ".join(parts))


def _report(recording, source, clip, output: Path) -> dict:
    """Metrics of the recorded tracks against the clip's ground truth; report and video."""
    import numpy as np

    from metaseg_ros.data.video_io import VideoWriter
    from metaseg_ros.eval.evaluate import ground_truth_frames
    from metaseg_ros.eval.frames import FrameObjects
    from metaseg_ros.eval.replay import FrameRecord, ReplayResult, VideoRecord
    from metaseg_ros.eval.report import write_report
    from metaseg_ros.eval.scoring import ScoredVideo, per_class_ap, score_videos
    from metaseg_ros.ros.messages import decode_instance_mask

    video = VideoRecord(source.video_name(0), output / "input", recording.image_topic,
                        "sensor_msgs/msg/Image", output / "results",
                        truth="generator's exact masks", scored=ScoredVideo())
    writer = VideoWriter(output / "overlay.mp4", frame_rate=10.0)
    for index, (exchange, truth) in enumerate(zip(recording.exchanges,
                                                  ground_truth_frames(clip), strict=True)):
        msg, overlay = exchange.instances, exchange.overlay
        rgb = np.frombuffer(bytes(overlay.data), np.uint8).reshape(overlay.height,
                                                                  overlay.width, 3)
        writer.write(rgb)
        video.keep_sample(rgb, len(msg.instances))
        masks = [decode_instance_mask(i, msg.height, msg.width) for i in msg.instances]
        video.scored.add(truth, FrameObjects.from_masks(
            [i.track_id for i in msg.instances], masks, scores=[i.score for i in msg.instances],
            class_ids=[i.class_id for i in msg.instances]), (msg.height, msg.width))
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        video.frames.append(FrameRecord(
            index, stamp, exchange.log_time, {"round trip": exchange.round_trip_ms},
            [{"track_id": int(i.track_id), "class_id": int(i.class_id),
              "class_name": i.class_name, "score": round(float(i.score), 4)}
             for i in msg.instances], annotated=True))
    video.video = writer.close()
    result = ReplayResult([video], "metaseg_node as launched (shipped parameters), over DDS",
                          tuple(source.class_names))
    result.scores = score_videos([video.scored], len(source.class_names))
    result.per_class_ap = per_class_ap([video.scored], source.class_names)
    result.wall_s = sum(e.round_trip_ms for e in recording.exchanges) / 1e3
    return write_report(output, result, extra={"input": str(output / "input"),
                                               "recorded_from": "metaseg_node over DDS"})


if __name__ == "__main__":
    sys.exit(main())
