"""Evaluate a checkpoint on a held-out split: video mask AP, IDF1/MOTA/HOTA, DAVIS J&F.

Each video runs through the full online pipeline (StreamingSegmenter with its memory, then
the Tracker), exactly as the node runs it; the tracked instances of every frame are
scored against the exact ground truth with the metrics of metaseg_ros.eval:

- YouTube-VIS video AP / AR: tracks grouped by track id (score = mean per-frame score,
  class = most frequent class), video IoU over the whole video;
- MOTA / IDF1 / ID switches with mask IoU (motmetrics), HOTA with mask IoU;
- DAVIS J&F with Hungarian assignment of predicted tracks to ground-truth objects.

Command line (prints one JSON document)::

    metaseg-eval --checkpoint runs/tiny/.../model \
        --synthetic-videos 40 --synthetic-first-video 100000 --synthetic-seed 0
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from metaseg_ros.data.sources import VideoSourceConfig, build_video_source
from metaseg_ros.data.types import ClipSample, VideoSource
from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.eval.scoring import ScoredVideo, Scores, score_videos
from metaseg_ros.inference.pipeline import PerceptionPipeline
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.checkpoint import CheckpointError, load_checkpoint
from metaseg_ros.model.metasegmenter import MetaSegmenter
from metaseg_ros.results import Segmenter
from metaseg_ros.tracking import Tracker, TrackerConfig
from metaseg_ros.user_errors import ArgumentParser, run_command


@dataclass(frozen=True)
class EvaluationResult(Scores):
    """Scores of one checkpoint on one split, and what it took to get them."""

    num_videos: int
    num_frames: int
    seconds_per_frame: float


def ground_truth_frames(clip: ClipSample) -> list[FrameObjects]:
    """Per-frame ground-truth objects (instance ids, masks, class ids) of a clip."""
    frames = []
    for t in range(clip.num_frames):
        visible = clip.present[t]
        frames.append(FrameObjects.from_masks(
            clip.instance_ids[visible].tolist(), list(clip.masks[t][visible]),
            class_ids=clip.class_ids[visible].tolist()))
    return frames


def evaluate_model(model: MetaSegmenter, source: VideoSource,
                   tracker_config: TrackerConfig | None = None,
                   postprocess: PostprocessSettings | None = None,
                   device: str = "cpu", max_videos: int | None = None) -> EvaluationResult:
    """Run StreamingSegmenter (eager) + Tracker over every video of a source and score it."""
    segmenter = StreamingSegmenter(EagerRunner(model.eval(), device),
                                 postprocess or PostprocessSettings())
    return evaluate_segmenter(segmenter, source, tracker_config, max_videos)


def evaluate_segmenter(segmenter: Segmenter, source: VideoSource,
                       tracker_config: TrackerConfig | None = None,
                       max_videos: int | None = None) -> EvaluationResult:
    """Run any Segmenter + Tracker online over every video of a source and score it."""
    tracker = Tracker(tracker_config or TrackerConfig(), class_names=segmenter.class_names)
    pipeline = PerceptionPipeline(segmenter, tracker)
    count = len(source) if max_videos is None else min(max_videos, len(source))
    videos = []
    num_frames, elapsed = 0, 0.0
    for video_index in range(count):
        clip = source.load_clip(video_index, range(source.num_frames(video_index)))
        pipeline.reset()
        video = ScoredVideo()
        for frame, truth in zip(clip.frames, ground_truth_frames(clip), strict=True):
            started = time.perf_counter()
            tracked = pipeline.step(frame)
            elapsed += time.perf_counter() - started
            video.add(truth, FrameObjects.from_tracked(tracked.instances), frame.shape[:2])
        num_frames += clip.num_frames
        videos.append(video)
    scores = score_videos(videos, len(segmenter.class_names))
    return EvaluationResult(**asdict(scores), num_videos=count, num_frames=num_frames,
                            seconds_per_frame=elapsed / max(num_frames, 1))


def main(argv: Sequence[str] | None = None) -> int:
    """`metaseg-eval`; a user error (missing checkpoint or bag, unknown topic, ground truth
    of another size than its images, ...) is one line on stderr and exit code 2."""
    return run_command("metaseg-eval", _main, argv, extra=(CheckpointError,))


def _main(argv: Sequence[str] | None = None) -> int:
    """Evaluate a checkpoint on a synthetic split, a YouTube-VIS JSON or bags; print JSON."""
    parser = ArgumentParser(prog="metaseg-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint path (stem or file)")
    held_out = VideoSourceConfig()
    parser.add_argument("--synthetic-videos", type=int, default=40)
    parser.add_argument("--synthetic-first-video", type=int, default=100_000,
                        help="first video number (training uses 0..num_videos-1)")
    parser.add_argument("--synthetic-seed", type=int, default=held_out.seed)
    parser.add_argument("--synthetic-frames", type=int, default=held_out.frames_per_video)
    parser.add_argument("--synthetic-size", type=int, nargs=2, default=held_out.synthetic_size,
                        metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--ytvis-json", help="evaluate on a YouTube-VIS JSON instead")
    parser.add_argument("--ytvis-images", help="image root of --ytvis-json")
    parser.add_argument("--bag", help="evaluate on a rosbag2 (or a directory of bags) with "
                        "InstanceMaskArray ground truth instead (metaseg_ros/data/bag_format.py)")
    parser.add_argument("--image-topic", default=VideoSourceConfig.image_topic,
                        help="image topic of --bag")
    parser.add_argument("--gt-topic", default=VideoSourceConfig.gt_topic,
                        help="ground-truth topic of --bag")
    parser.add_argument("--class-mapping", help="class mapping file for --ytvis-json or --bag")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--min-kept-fraction", type=float,
                        default=PostprocessSettings.min_kept_fraction,
                        help="post-processing: drop instances keeping less of their mask after "
                             "overlaps are resolved (the node's default)")
    parser.add_argument("--max-videos", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint)
    if args.ytvis_json:
        config = VideoSourceConfig(kind="youtube_vis", annotation_file=args.ytvis_json,
                                   image_root=args.ytvis_images or "",
                                   class_mapping=args.class_mapping)
        split = {"ytvis_json": args.ytvis_json}
    elif args.bag:
        config = VideoSourceConfig(kind="bag", root=args.bag, image_topic=args.image_topic,
                                   gt_topic=args.gt_topic, class_mapping=args.class_mapping)
        split = {"bag": args.bag, "image_topic": args.image_topic, "gt_topic": args.gt_topic}
    else:
        config = VideoSourceConfig(num_videos=args.synthetic_videos,
                                   first_video=args.synthetic_first_video,
                                   seed=args.synthetic_seed,
                                   frames_per_video=args.synthetic_frames,
                                   synthetic_size=tuple(args.synthetic_size))
        split = {"synthetic_videos": args.synthetic_videos,
                 "synthetic_first_video": args.synthetic_first_video,
                 "synthetic_seed": args.synthetic_seed, "synthetic_frames":
                 args.synthetic_frames, "synthetic_size": list(args.synthetic_size)}
    source = build_video_source(config, model.class_names)
    result = evaluate_model(model, source, postprocess=PostprocessSettings(
        score_threshold=args.score_threshold, min_kept_fraction=args.min_kept_fraction),
        device=args.device, max_videos=args.max_videos)
    split.update(max_videos=args.max_videos, score_threshold=args.score_threshold,
                 min_kept_fraction=args.min_kept_fraction)
    document = {"checkpoint": str(args.checkpoint), "split": split, "metrics": asdict(result)}
    text = json.dumps(document, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
