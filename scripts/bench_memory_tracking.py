"""How the model's memory and the tracker work together, measured on the held-out split.

    .venv/bin/python scripts/bench_memory_tracking.py --checkpoint metaseg_ros/weights/metaseg_tiny
    (--degradations reentry --first-video 200000: the re-entry scenes of issue 14)

Runs the online pipeline (StreamingSegmenter + Tracker) over held-out synthetic videos in
several variants and prints video mask AP, IDF1, HOTA and ID switches for each:

- memory on, tracker defaults (the shipped configuration);
- memory on, plus the tracker's query-slot continuity term (`query_slot_weight`): the
  decoder query that produced a track's last detection is preferred for it;
- memory off: the model's memory is emptied before every frame (the image Mask2Former);
- memory on, the tracker without query embeddings (mask IoU and class only).

With --sweep FIELD VALUE..., instead: the shipped configuration with one tracker setting
varied (the segmenter runs once per video; its detections are replayed to each tracker):

    .venv/bin/python scripts/bench_memory_tracking.py \
        --checkpoint metaseg_ros/weights/metaseg_tiny --first-video 200000 \
        --sweep embedding_weight 0 0.3 0.6

With --false-positives: the published instances of the shipped configuration and of the
tracker without embeddings, split by their best mask IoU with a ground-truth object: true
(>= 0.5, as MOTA counts), a part of an object (0.1-0.5), no object (< 0.1).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from metaseg_ros.data.degradations import DEGRADED_PRESET, DegradationConfig
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.eval.evaluate import evaluate_segmenter
from metaseg_ros.eval.memory_ab import MemorylessSegmenter
from metaseg_ros.inference.pipeline import PerceptionPipeline
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.checkpoint import load_checkpoint
from metaseg_ros.results import FrameDetections
from metaseg_ros.tracking import Tracker, TrackerConfig, pairwise_iou, summarize_mask


class RecordedSegmenter:
    """Records a segmenter's detections video by video (a video starts at reset()) and
    replays them: tracker settings compared on identical detections, the model run once."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.videos: list[list[FrameDetections]] = []
        self.replaying = False
        self._video = self._frame = -1

    @property
    def class_names(self):
        return self.inner.class_names

    def step(self, image: np.ndarray) -> FrameDetections:
        if self.replaying:
            self._frame += 1
            return self.videos[self._video][self._frame]
        detections = self.inner.step(image)
        self.videos[-1].append(detections)
        return detections

    def reset(self) -> None:
        if self.replaying:
            self._video, self._frame = self._video + 1, -1
        else:
            self.inner.reset()
            self.videos.append([])

    def replay(self) -> None:
        """Replay from the first recorded video on."""
        self.replaying, self._video, self._frame = True, -1, -1


def published_overlaps(segmenter, source, tracker_config: TrackerConfig
                       ) -> tuple[dict[str, int], dict[str, list[float]]]:
    """Published instances counted by their best mask IoU with a ground-truth object of the
    frame ('true' >= 0.5, 'part' 0.1-0.5, 'none' < 0.1), and their scores."""
    pipeline = PerceptionPipeline(segmenter, Tracker(tracker_config, segmenter.class_names))
    counts = {"true": 0, "part": 0, "none": 0}
    scores: dict[str, list[float]] = {kind: [] for kind in counts}
    for video in range(len(source)):
        clip = source.load_clip(video, range(source.num_frames(video)))
        pipeline.reset()
        for index, frame in enumerate(clip.frames):
            objects = [summarize_mask(o) for o in clip.masks[index][clip.present[index]]]
            instances = pipeline.step(frame).instances
            iou = pairwise_iou([summarize_mask(i.mask, i.bbox) for i in instances], objects)
            for instance, row in zip(instances, iou, strict=True):
                best = float(row.max()) if row.size else 0.0
                kind = "true" if best >= 0.5 else "part" if best >= 0.1 else "none"
                counts[kind] += 1
                scores[kind].append(instance.score)
    return counts, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--first-video", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--degradations", default="none",
                        help="'none', 'degraded' (DEGRADED_PRESET) or one kind of it alone, "
                             "e.g. 'reentry' (an object leaves and comes back in every video)")
    parser.add_argument("--sweep", nargs="+", metavar=("FIELD", "VALUE"),
                        help="a TrackerConfig field and the values to compare")
    parser.add_argument("--false-positives", action="store_true",
                        help="split the published instances by their overlap with objects")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_checkpoint(args.checkpoint).eval()
    size = tuple(model.config.image_size)
    if args.degradations == "none":
        degradations = DegradationConfig()
    elif args.degradations == "degraded":
        degradations = DEGRADED_PRESET
    else:
        degradations = DEGRADED_PRESET.only(args.degradations, 1.0)
    source = SyntheticVideoSource(args.videos, SyntheticConfig(
        image_size=size, num_frames=args.frames, class_names=tuple(model.class_names),
        degradations=degradations), seed=0, first_video=args.first_video)
    segmenter = StreamingSegmenter(EagerRunner(model), PostprocessSettings())
    defaults = TrackerConfig()
    columns = ("| video AP | IDF1 | HOTA | ID switches | MOTA | false positives | misses |",
               "|---|---|---|---|---|---|---|")
    if args.false_positives:
        print(f"{args.videos} synthetic videos (first {args.first_video}), {args.frames} "
              f"frames of {size[1]}x{size[0]}, checkpoint {args.checkpoint}")
        print("| tracker | published | true (IoU >= 0.5) | part of an object (0.1-0.5) | "
              "no object (< 0.1) | median score true / false |")
        print("|---|---|---|---|---|---|")
        for name, tracker in (("defaults", defaults),
                              ("without embeddings", dataclasses.replace(
                                  defaults, embedding_weight=0.0))):
            counts, scores = published_overlaps(segmenter, source, tracker)
            print(f"| {name} | {sum(counts.values())} | {counts['true']} | {counts['part']} | "
                  f"{counts['none']} | {np.median(scores['true']):.2f} / "
                  f"{np.median(scores['part'] + scores['none']):.2f} |", flush=True)
        return
    if args.sweep:
        field, *values = args.sweep
        recorded = RecordedSegmenter(segmenter)
        print(f"{args.videos} synthetic videos (first {args.first_video}), {args.frames} "
              f"frames of {size[1]}x{size[0]}, checkpoint {args.checkpoint}; tracker "
              f"defaults but {field}")
        print(f"| {field} " + columns[0])
        print("|---" + columns[1])
        for index, value in enumerate(values):
            kind = type(getattr(defaults, field))
            tracker = dataclasses.replace(defaults, **{field: kind(value)})
            if index:
                recorded.replay()
            result = evaluate_segmenter(recorded, source, tracker)
            print(f"| {value} | {result.video_ap:.3f} | {result.idf1:.3f} | {result.hota:.3f} | "
                  f"{result.id_switches} | {result.mota:.3f} | {result.false_positives} | "
                  f"{result.misses} |", flush=True)
        return
    variants = [
        ("memory on, tracker defaults", segmenter, defaults),
        ("memory on, + query-slot term 0.3", segmenter,
         dataclasses.replace(defaults, query_slot_weight=0.3)),
        ("memory off (reset every frame)", MemorylessSegmenter(segmenter), defaults),
        ("memory on, tracker without embeddings", segmenter,
         dataclasses.replace(defaults, embedding_weight=0.0)),
    ]
    print(f"{args.videos} held-out synthetic videos (first {args.first_video}), "
          f"{args.frames} frames of {size[1]}x{size[0]}, degradations {args.degradations}, "
          f"checkpoint {args.checkpoint}")
    print("| variant " + columns[0])
    print("|---" + columns[1])
    for name, variant, tracker in variants:
        result = evaluate_segmenter(variant, source, tracker)
        print(f"| {name} | {result.video_ap:.3f} | {result.idf1:.3f} | {result.hota:.3f} | "
              f"{result.id_switches} | {result.mota:.3f} | {result.false_positives} | "
              f"{result.misses} |", flush=True)


if __name__ == "__main__":
    main()
