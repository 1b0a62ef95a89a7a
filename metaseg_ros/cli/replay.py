"""metaseg-replay: run the node's pipeline over recorded bags; results bag, metrics, report.

    metaseg-replay INPUT --output OUT_DIR [--image-topic T]
        [--gt-topic T | --gt-ytvis JSON | --gt-davis DIR] [--checkpoint C] [--backend B]
        [--device D] [--params-file YAML] [--max-frames N] [--start S] [--end S]
        [--realtime] [--no-images] [--labels] [--overlay] [--storage mcap|sqlite3]

INPUT is a rosbag2 directory, a single .mcap or .db3, or a directory of bags (one video
each); Image or CompressedImage, the topic found when the bag has one image topic. OUT_DIR
receives results/ (a rosbag2 with the node's topics at the input's times), overlay.mp4,
report.json and report.html. Without ground truth: latency and track statistics only.
Ctrl-C stops after the current frame; the bag is closed and the report written (exit 130).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from metaseg_ros.data.bag_format import STORAGES
from metaseg_ros.inference.settings import PipelineSettings
from metaseg_ros.inference.stream import STREAM_PREFIX, StreamSettings
from metaseg_ros.settings import BACKEND_CHOICES, DEVICES
from metaseg_ros.user_errors import ArgumentParser, UserError, run_command

INTERRUPTED_STATUS = 130


def build_parser() -> ArgumentParser:
    """The command-line interface."""
    parser = ArgumentParser(prog="metaseg-replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="a bag (directory, .mcap, .db3) or a "
                        "directory of bags")
    parser.add_argument("--output", type=Path, required=True, help="output directory")
    parser.add_argument("--image-topic", help="image topic (default: the bag's only one)")
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument("--gt-topic", help="InstanceMaskArray ground truth topic of the bag")
    truth.add_argument("--gt-ytvis", help="YouTube-VIS JSON of the same frames (by number)")
    truth.add_argument("--gt-davis", help="DAVIS annotation PNGs of the same frames")
    parser.add_argument("--gt-class", default="object",
                        help="class of DAVIS objects without davis_semantics.json")
    parser.add_argument("--class-mapping", help="JSON/YAML: ground-truth class -> model class")
    parser.add_argument("--params-file", type=Path,
                        help="the node's parameters file (config/metaseg.yaml format)")
    parser.add_argument("--checkpoint", help="checkpoint or export ('' = shipped weights)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES)
    parser.add_argument("--device", choices=DEVICES)
    parser.add_argument("--max-frames", type=int, help="at most this many frames per bag")
    parser.add_argument("--start", type=float, help="seconds after the first image")
    parser.add_argument("--end", type=float, help="seconds after the first image")
    parser.add_argument("--realtime", action="store_true", help="pace at the recorded rate")
    parser.add_argument("--no-images", action="store_true",
                        help="leave the input images out of the results bag")
    parser.add_argument("--labels", action="store_true", help="write instance_labels")
    parser.add_argument("--overlay", action="store_true", help="write the overlay topic")
    parser.add_argument("--no-video", action="store_true", help="no overlay.mp4")
    parser.add_argument("--storage", choices=STORAGES, default="mcap")
    parser.add_argument("--namespace", default="", help="namespace of the node's topics")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def node_parameters(path: Path) -> dict[str, Any]:
    """The flat ros__parameters of a node parameters file (nested keys joined by dots)."""
    if not path.is_file():
        raise UserError(f"no parameters file at {path}")
    document = yaml.safe_load(path.read_text()) or {}
    sections = [v["ros__parameters"] for v in document.values()
                if isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict)]
    if not sections:
        raise UserError(f"{path}: no ros__parameters section")

    def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, dict):
                flat.update(flatten(value, f"{prefix}{key}."))
            else:
                flat[f"{prefix}{key}"] = value
        return flat

    return flatten(sections[0])


def pipeline_settings(args: Any) -> PipelineSettings:
    """The node's settings: its defaults, the parameters file, then the options given."""
    params = node_parameters(args.params_file) if args.params_file else {}
    for name in ("checkpoint", "backend", "device"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    if params.get("checkpoint") and not Path(params["checkpoint"]).exists() and \
            not Path(f"{params['checkpoint']}.safetensors").exists():
        raise UserError(f"no checkpoint at {params['checkpoint']}")
    return PipelineSettings.from_parameters(params)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors are one line on stderr and exit code 2."""
    from metaseg_ros.inference.runner import BackendUnavailableError
    from metaseg_ros.model.checkpoint import CheckpointError

    return run_command("metaseg-replay", _main, argv,
                       extra=(CheckpointError, BackendUnavailableError))


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from metaseg_ros.eval.replay import ReplayOptions, replay
    from metaseg_ros.eval.report import write_report
    from metaseg_ros.inference.builder import create_pipeline

    options = ReplayOptions(
        image_topic=args.image_topic, gt_topic=args.gt_topic, gt_ytvis=args.gt_ytvis,
        gt_davis=args.gt_davis, gt_class=args.gt_class, class_mapping=args.class_mapping,
        max_frames=args.max_frames, start_s=args.start, end_s=args.end,
        realtime=args.realtime, write_images=not args.no_images, labels=args.labels,
        overlay_topic=args.overlay, video=not args.no_video, storage=args.storage,
        namespace=args.namespace, progress=not args.no_progress)
    settings = pipeline_settings(args)
    params = node_parameters(args.params_file) if args.params_file else {}
    options = dataclasses.replace(options, stream=StreamSettings(
        **{k.removeprefix(STREAM_PREFIX): v for k, v in params.items()
           if k.startswith(STREAM_PREFIX)}),
        label_encoding=params.get("label_encoding", "16UC1"))
    if (args.output / "results").exists():
        raise UserError(f"{args.output / 'results'} already exists; choose another --output "
                        f"or remove it")
    if not args.input.exists():
        raise UserError(f"no bag or directory at {args.input}")
    pipeline = create_pipeline(settings, log=lambda text: print(f"replay: {text}",
                                                                 file=sys.stderr))
    stop = threading.Event()
    with _StopOnInterrupt(stop):
        result = replay(args.input, args.output, pipeline, options, stop=stop,
                        log=lambda text: print(text, file=sys.stderr))
    document = write_report(args.output, result, extra={"input": str(args.input)})
    print(f"replay: {document['frames']} frames in {document['wall_s']:.1f} s "
          f"({document['frames_per_second']:.2f} frames/s)"
          + (", interrupted" if result.interrupted else ""))
    if result.scores is not None:
        scores = result.scores
        print(f"replay: video AP {scores.video_ap:.3f}, IDF1 {scores.idf1:.3f}, MOTA "
              f"{scores.mota:.3f}, HOTA {scores.hota:.3f}, J&F {scores.j_and_f:.3f}")
    print(f"replay: results and report in {args.output}/ (open {args.output / 'report.html'})")
    return INTERRUPTED_STATUS if result.interrupted else 0


class _StopOnInterrupt:
    """The first Ctrl-C sets `stop` (the replay finishes its frame and closes the bag); a
    second one interrupts at once."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        print("\nreplay: stopping after this frame (Ctrl-C again to abort)", file=sys.stderr)

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


if __name__ == "__main__":
    sys.exit(main())
