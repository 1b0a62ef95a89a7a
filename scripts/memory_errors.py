"""Where memory on and memory off differ, frame by frame (issue 14): the detections of each
frame matched to the ground truth, for one checkpoint on a synthetic split.

    .venv/bin/python scripts/memory_errors.py --checkpoint runs/tiny_memory_pixels/final/model \
        --split clean --first-video 300000 --videos 10

Per memory mode (on; off = emptied before every frame, as scripts/bench_memory_ab.py), over
the chosen frames (all on the clean split, the degraded frames on the degraded one): ground
truth and predicted instances after the tracker, matches (greedy by score, mask IoU >= 0.5,
each ground truth once), misses and false detections, the mean IoU and mean score of the
matches, matches of the wrong class, the median area difference of a match (predicted minus
true, pixels) and the mean score of the false detections. Use a validation range (300000..)
to choose settings, not the held-out splits.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from pycocotools import mask as coco_mask

from metaseg_ros.data.degradations import DEGRADED_PRESET, DegradationConfig
from metaseg_ros.data.synthetic import SyntheticConfig, SyntheticVideoSource
from metaseg_ros.eval.frames import FrameObjects
from metaseg_ros.eval.memory_ab import MemorylessSegmenter, run_videos
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.segmenter import StreamingSegmenter
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.checkpoint import load_checkpoint


def match_frame(gt: FrameObjects, pred: FrameObjects, counts: dict[str, list]) -> None:
    """Add one frame's matches (greedy by score, IoU >= 0.5) to `counts`."""
    counts["gt"].append(len(gt.ids))
    counts["pred"].append(len(pred.ids))
    if not len(pred.ids):
        counts["missed"].append(len(gt.ids))
        return
    iou = (coco_mask.iou(list(pred.masks), list(gt.masks), [0] * len(gt.ids))
           if len(gt.ids) else np.zeros((len(pred.ids), 0)))
    used: set[int] = set()
    for i in np.argsort(-pred.scores, kind="stable"):
        j = int(np.argmax(iou[i])) if iou.shape[1] else -1
        if j >= 0 and iou[i, j] >= 0.5 and j not in used:
            used.add(j)
            counts["iou"].append(float(iou[i, j]))
            counts["score"].append(float(pred.scores[i]))
            counts["wrong_class"].append(int(pred.class_ids[i] != gt.class_ids[j]))
            counts["area_gap"].append(int(coco_mask.area(pred.masks[i]))
                                      - int(coco_mask.area(gt.masks[j])))
        else:
            counts["false_score"].append(float(pred.scores[i]))
    counts["missed"].append(len(gt.ids) - len(used))


def main() -> None:
    """Print the table for memory on and off."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--split", choices=["clean", "degraded"], default="clean")
    parser.add_argument("--first-video", type=int, default=300_000)
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint).eval()
    segmenter = StreamingSegmenter(EagerRunner(model), PostprocessSettings())
    modes = {"on": segmenter, "off": MemorylessSegmenter(segmenter, cache=True)}
    degradations = DEGRADED_PRESET if args.split == "degraded" else DegradationConfig()
    source = SyntheticVideoSource(args.videos, SyntheticConfig(
        image_size=tuple(model.config.image_size), num_frames=args.frames,
        class_names=tuple(model.class_names), degradations=degradations),
        seed=0, first_video=args.first_video)
    runs = run_videos(modes, source, args.videos)
    print(f"{args.checkpoint}, {args.split} videos {args.first_video}.. ({args.videos}), "
          f"{'degraded frames' if args.split == 'degraded' else 'all frames'}\n")
    print("| memory | true | predicted | matched | missed | false | mean IoU | mean score "
          "| wrong class | median area gap | false score |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, run in runs.items():
        counts: dict[str, list] = {k: [] for k in ("gt", "pred", "missed", "iou", "score",
                                                   "wrong_class", "area_gap", "false_score")}
        for gt_video, pred_video, tags in zip(run.gt, run.pred, run.tags, strict=True):
            for gt, pred, tag in zip(gt_video, pred_video, tags, strict=True):
                if args.split == "clean" or tag:
                    match_frame(gt, pred, counts)
        mean = {name: f"{statistics.fmean(values):.3f}" if values else "-"
                for name, values in counts.items()}
        print(f"| {mode} | {sum(counts['gt'])} | {sum(counts['pred'])} | {len(counts['iou'])} "
              f"| {sum(counts['missed'])} | {len(counts['false_score'])} | {mean['iou']} | "
              f"{mean['score']} | {sum(counts['wrong_class'])} | "
              f"{statistics.median(counts['area_gap']) if counts['area_gap'] else '-'} | "
              f"{mean['false_score']} |")


if __name__ == "__main__":
    main()
