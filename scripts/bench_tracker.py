#!/usr/bin/env python3
"""Tracker benchmark: tracking quality on synthetic sequences, and the cost of one step.

    python scripts/bench_tracker.py                      # every section (~2-3 min on 2 cores)
    python scripts/bench_tracker.py --section speed      # only the per-step cost
    python scripts/bench_tracker.py --section quality --seeds 3

Sections (markdown tables for docs/benchmarks.md):
- quality: ID switches, IDF1, MOTA (motmetrics, mask IoU >= 0.5) and HOTA / DetA / AssA
  (mask IoU) of the default tracker on a suite of synthetic sequences (crossing,
  occlusion and re-entry with several gaps, crowd) for each detector noise level and
  several `max_lost` settings, all sequences of a cell counted together;
- scenes: the same suite split per scene kind (no noise and moderate noise);
- goals: per hidden / away duration, ID switches without detector noise (goal: 0 whenever
  the gap is shorter than max_lost) and IDF1 at moderate noise (goal: >= 0.95);
- ablation: the same suite at moderate noise with one setting changed at a time;
- speed: median wall time of `Tracker.update` with 20 live tracks and 20 detections of
  512x512 masks, its parts, and mask IoU against pycocotools (encode + iou) for reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metaseg_ros.classes import DEFAULT_CLASSES
from metaseg_ros.data.synthetic_detections import (
    NOISE_LEVELS,
    SyntheticSequence,
    make_scene,
    simulate,
)
from metaseg_ros.eval import (
    FrameObjects,
    combine_hota,
    hota_metrics,
    mot_metrics_combined,
)
from metaseg_ros.results import BoundingBox, Detection, FrameDetections
from metaseg_ros.tracking import (
    Tracker,
    TrackerConfig,
    assign,
    pairwise_iou,
    summarize_mask,
)

MAX_LOST_SETTINGS = (0, 5, 15, 30, 60)
GAPS = (5, 10, 20, 40)


def suite(noise_name: str, seeds: int) -> list[SyntheticSequence]:
    """The benchmark's sequences for one noise level (seeded per scene)."""
    noise = NOISE_LEVELS[noise_name]
    scenes = []
    for seed in range(seeds):
        scenes.append(make_scene("crossing", seed))
        scenes.extend(make_scene("occlusion", seed, gap=gap) for gap in (5, 15, 40))
        scenes.extend(make_scene("reentry", seed, gap=gap) for gap in (10, 25, 60))
        scenes.append(make_scene("crowd", seed))
    return [simulate(scene, noise, seed=1000 + index) for index, scene in enumerate(scenes)]


class PredictionCache:
    """COCO RLE of each published mask, encoded once per mask object (masks are shared by
    every tracker run on the same detections)."""

    def __init__(self) -> None:
        self._rles: dict[int, dict] = {}

    def frame(self, instances: Sequence) -> FrameObjects:
        from metaseg_ros.eval.frames import encode_masks

        rles = []
        for instance in instances:
            key = id(instance.mask)
            if key not in self._rles:
                self._rles[key] = encode_masks([instance.mask])[0]
            rles.append(self._rles[key])
        boxes = np.array([(i.bbox.x, i.bbox.y, i.bbox.width, i.bbox.height) for i in instances],
                         dtype=np.float64).reshape(-1, 4)
        return FrameObjects(ids=np.array([i.track_id for i in instances], dtype=np.int64),
                            boxes=boxes, masks=tuple(rles),
                            scores=np.array([i.score for i in instances]))


def run_tracker(config: TrackerConfig, sequence: SyntheticSequence,
                cache: PredictionCache) -> list[FrameObjects]:
    tracker = Tracker(config, DEFAULT_CLASSES)
    return [cache.frame(tracker.update(frame)) for frame in sequence.detections]


def score(config: TrackerConfig, sequences: list[SyntheticSequence],
          cache: PredictionCache) -> dict[str, float]:
    predictions = [run_tracker(config, s, cache) for s in sequences]
    pairs = [(s.ground_truth, p) for s, p in zip(sequences, predictions, strict=True)]
    mot = mot_metrics_combined(pairs, similarity="mask")
    hota = combine_hota([hota_metrics(g, p, similarity="mask") for g, p in pairs])
    return {"idsw": mot.id_switches, "idf1": mot.idf1, "mota": mot.mota, "hota": hota.hota,
            "deta": hota.deta, "assa": hota.assa, "fp": mot.false_positives,
            "misses": mot.misses, "gt": mot.num_objects}


def oracle_score(sequences: list[SyntheticSequence]) -> dict[str, float]:
    """The same detections with perfect association: each detection takes the id of the
    ground-truth object it overlaps most (mask IoU >= 0.5), else a fresh id. A reference
    for association quality (AssA, ID switches); it keeps every false positive and
    duplicate, so it is no upper bound for MOTA or IDF1."""
    from metaseg_ros.eval.frames import encode_masks
    from metaseg_ros.eval.similarity import mask_iou

    pairs = []
    for sequence in sequences:
        predictions = []
        fresh = 1_000_000
        for gt, frame in zip(sequence.ground_truth, sequence.detections, strict=True):
            rles = encode_masks(d.mask for d in frame.detections)
            iou = mask_iou(gt.masks or (), rles)
            ids = []
            for k in range(len(rles)):
                best = int(np.argmax(iou[:, k])) if len(gt) else -1
                if best >= 0 and iou[best, k] >= 0.5 and gt.ids[best] not in ids:
                    ids.append(int(gt.ids[best]))
                else:
                    fresh += 1
                    ids.append(fresh)
            predictions.append(FrameObjects(ids=np.array(ids), masks=rles))
        pairs.append((sequence.ground_truth, predictions))
    mot = mot_metrics_combined(pairs, similarity="mask")
    hota = combine_hota([hota_metrics(g, p, similarity="mask") for g, p in pairs])
    return {"idsw": mot.id_switches, "idf1": mot.idf1, "mota": mot.mota, "hota": hota.hota,
            "deta": hota.deta, "assa": hota.assa, "fp": mot.false_positives,
            "misses": mot.misses, "gt": mot.num_objects}


def section_quality(seeds: int) -> None:
    print("### Quality on the synthetic suite (mask IoU)\n")
    print(f"Suite per noise level: {seeds} seed(s) x [crossing, occlusion gap 5/15/40, "
          "re-entry gap 10/25/60, crowd], 120 frames of 256x256 each; default TrackerConfig "
          "except max_lost. 'oracle ids': the same detections with perfect association and no "
          "filtering of false positives or duplicates (a reference for association, not an "
          "upper bound for MOTA/IDF1).\n")
    print("| noise | max_lost | ID sw. | IDF1 | MOTA | HOTA | DetA | AssA | FP | FN | GT |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for noise_name in NOISE_LEVELS:
        sequences = suite(noise_name, seeds)
        cache = PredictionCache()
        rows = [(str(m), score(TrackerConfig(max_lost=m), sequences, cache))
                for m in MAX_LOST_SETTINGS]
        rows.append(("oracle ids", oracle_score(sequences)))
        for label, r in rows:
            print(f"| {noise_name} | {label} | {r['idsw']} | {r['idf1']:.3f} | "
                  f"{r['mota']:.3f} | {r['hota']:.3f} | {r['deta']:.3f} | {r['assa']:.3f} | "
                  f"{r['fp']} | {r['misses']} | {r['gt']} |", flush=True)
    print("\nNoise levels:\n")
    for name, noise in NOISE_LEVELS.items():
        fields = ", ".join(f"{f.name}={getattr(noise, f.name)}" for f in dataclasses.fields(noise))
        print(f"- {name}: {fields}")
    print()


def section_goals(seeds: int) -> None:
    print("### Goals: re-identification after a gap\n")
    print("Occlusion and re-entry scenes, default TrackerConfig(max_lost=30); 'gap' is the "
          "longest measured absence from the ground truth.\n")
    print("| scene | requested gap | measured gap | ID sw. (no noise) | IDF1 (no noise) | "
          "ID sw. (moderate) | IDF1 (moderate) |")
    print("|---|---|---|---|---|---|---|")
    config = TrackerConfig(max_lost=30)
    for kind in ("occlusion", "reentry"):
        for gap in GAPS:
            cells = []
            measured = 0
            for noise_name in ("none", "moderate"):
                sequences = [simulate(make_scene(kind, seed, gap=gap), NOISE_LEVELS[noise_name],
                                      seed=2000 + seed) for seed in range(seeds)]
                measured = max(s.longest_gap() for s in sequences)
                r = score(config, sequences, PredictionCache())
                cells.append(f"{r['idsw']} | {r['idf1']:.3f}")
            print(f"| {kind} | {gap} | {measured} | {' | '.join(cells)} |", flush=True)
    print()


SCENE_NAMES = ("crossing", "occlusion gap 5", "occlusion gap 15", "occlusion gap 40",
               "re-entry gap 10", "re-entry gap 25", "re-entry gap 60", "crowd")


def section_scenes(seeds: int, max_lost: int = 30) -> None:
    """The quality suite split by scene: which scenes reach the goals and which do not."""
    print(f"### Per scene of the suite (max_lost={max_lost})\n")
    print("The sequences of the quality table, scored per scene kind; 'longest gap' is the "
          "longest absence of an object from the ground truth in those sequences.\n")
    print("| scene | longest gap | ID sw. (no noise) | IDF1 (no noise) | ID sw. (moderate) | "
          "IDF1 (moderate) |")
    print("|---|---|---|---|---|---|")
    config = TrackerConfig(max_lost=max_lost)
    per_noise = {name: suite(name, seeds) for name in ("none", "moderate")}
    caches = {name: PredictionCache() for name in per_noise}
    for index, scene in enumerate(SCENE_NAMES):
        cells, gap = [], 0
        for name, sequences in per_noise.items():
            group = sequences[index::len(SCENE_NAMES)]
            gap = max(s.longest_gap() for s in group)
            r = score(config, group, caches[name])
            cells.append(f"{r['idsw']} | {r['idf1']:.3f}")
        print(f"| {scene} | {gap} | {' | '.join(cells)} |", flush=True)
    print()


ABLATIONS: dict[str, dict[str, object]] = {
    "default": {},
    "embedding_match=best": {"embedding_match": "best"},
    "embedding_bank_size=1": {"embedding_bank_size": 1},
    "no embedding (weight 0)": {"embedding_weight": 0.0},
    "no mask IoU (weight 0)": {"iou_weight": 0.0},
    "no class term (weight 0)": {"class_weight": 0.0},
    "confirm_hits=1": {"confirm_hits": 1},
    "confirm_hits=3": {"confirm_hits": 3},
    "min_similarity=0.4": {"min_similarity": 0.4},
    "min_similarity=0.6": {"min_similarity": 0.6},
    "duplicate_overlap=1.0 (off)": {"duplicate_overlap": 1.0},
}


def section_ablation(seeds: int, noise_name: str = "moderate") -> None:
    print(f"### Ablation ({noise_name} noise, max_lost=30)\n")
    print("| setting | ID sw. | IDF1 | MOTA | HOTA | AssA | FP |")
    print("|---|---|---|---|---|---|---|")
    sequences = suite(noise_name, seeds)
    cache = PredictionCache()
    for name, changes in ABLATIONS.items():
        config = dataclasses.replace(TrackerConfig(max_lost=30), **changes)
        r = score(config, sequences, cache)
        print(f"| {name} | {r['idsw']} | {r['idf1']:.3f} | {r['mota']:.3f} | {r['hota']:.3f} | "
              f"{r['assa']:.3f} | {r['fp']} |", flush=True)
    print()


def _speed_frames(num_objects: int, size: int, frames: int, rng: np.random.Generator,
                  with_boxes: bool = True) -> list[FrameDetections]:
    """num_objects discs moving slowly, detected every frame (so every track stays live);
    with_boxes: each detection carries its mask's box, as post-processing gives it."""
    centers = rng.uniform(40, size - 40, size=(num_objects, 2))
    radii = rng.uniform(15, 45, size=num_objects)
    velocity = rng.normal(0, 1.5, size=(num_objects, 2))
    identities = rng.normal(size=(num_objects, 256))
    ys, xs = np.ogrid[:size, :size]
    result = []
    for _ in range(frames):
        centers = np.clip(centers + velocity, 20, size - 20)
        detections = []
        for k in range(num_objects):
            mask = (xs - centers[k, 0]) ** 2 + (ys - centers[k, 1]) ** 2 <= radii[k] ** 2
            probs = np.full(len(DEFAULT_CLASSES), 0.05 / (len(DEFAULT_CLASSES) - 1),
                            dtype=np.float32)
            probs[k % len(DEFAULT_CLASSES)] = 0.9
            detections.append(Detection(
                class_id=k % len(DEFAULT_CLASSES), score=0.9, mask=mask,
                embedding=(identities[k] + rng.normal(0, 0.1, 256)).astype(np.float32),
                class_probs=probs, query_index=k,
                bbox=BoundingBox.from_mask(mask) if with_boxes else None))
        result.append(FrameDetections(size, size, tuple(detections)))
    return result


def _median_ms(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _step_times(frames: list[FrameDetections], num_objects: int) -> tuple[float, float, Tracker]:
    """Median wall and thread-CPU ms of Tracker.update after 5 warm-up frames."""
    tracker = Tracker(TrackerConfig(confirm_hits=1), DEFAULT_CLASSES)
    for frame in frames[:5]:  # warm up: all tracks born and confirmed
        tracker.update(frame)
    times, cpu_times = [], []
    for frame in frames[5:]:
        # The masks written just before the step, as post-processing writes them (untimed):
        # the pre-generated ones would be read from main memory, which the pipeline never
        # does, and that varied the step's time by +-30% from run to run.
        frame = dataclasses.replace(frame, detections=tuple(
            dataclasses.replace(d, mask=d.mask.copy()) for d in frame.detections))
        start, cpu_start = time.perf_counter(), time.thread_time()
        published = tracker.update(frame)
        times.append((time.perf_counter() - start) * 1e3)
        cpu_times.append((time.thread_time() - cpu_start) * 1e3)
    assert len(published) == num_objects, "every object must stay tracked"
    return statistics.median(times), statistics.median(cpu_times), tracker


def section_speed(repeats: int) -> None:
    import torch
    from pycocotools import mask as mask_utils

    from metaseg_ros.inference.postprocess import _row_counts, _tight_boxes

    torch.set_num_threads(1)
    print("### Cost of one tracker step\n")
    print(f"Machine: {platform.processor() or platform.machine()}, numpy {np.__version__}; "
          f"median of {repeats} steps, single thread.\n")
    print("Wall time is what a caller waits; CPU time (this thread) is less sensitive to "
          "other processes on a shared machine. 'with boxes': detections carry the box of "
          "their mask, as post-processing gives them (the node's path); 'masks only': a "
          "Segmenter plugin that gives none, so the tracker reads whole masks. 'boxes in "
          "post-processing': what finding those boxes adds there (torch, one thread; the "
          "rows come from the per-row pixel counts it makes for the mask areas anyway).\n")
    print("| tracks x detections | mask size | update() with boxes: wall | CPU | "
          "update() masks only: wall | boxes in post-processing | mask packing with boxes / "
          "without | mask IoU | similarity (all terms) | Hungarian |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for num_objects, size in ((20, 512), (20, 256), (5, 512), (50, 512)):
        frames = _speed_frames(num_objects, size, repeats + 5, rng)
        wall, cpu, tracker = _step_times(frames, num_objects)
        bare = [FrameDetections(f.height, f.width, tuple(
            dataclasses.replace(d, bbox=None) for d in f.detections)) for f in frames]
        bare_wall, _, _ = _step_times(bare, num_objects)
        detections = frames[-1].detections
        stacked = torch.from_numpy(np.stack([d.mask for d in detections]))
        rows = _row_counts(stacked)  # post-processing has them already (mask areas)
        boxes = _median_ms(lambda m=stacked, r=rows: _tight_boxes(m, r), repeats)
        previous = [summarize_mask(d.mask, d.bbox) for d in frames[-2].detections]
        packing = _median_ms(
            lambda ds=detections: [summarize_mask(d.mask, d.bbox) for d in ds], repeats)
        packing_bare = _median_ms(
            lambda ds=detections: [summarize_mask(d.mask) for d in ds], repeats)
        current = [summarize_mask(d.mask, d.bbox) for d in detections]
        iou = _median_ms(lambda c=current, p=previous: pairwise_iou(c, p), repeats)
        candidates = tracker._prepare(frames[-1])
        live = tracker._tracks
        similarity = _median_ms(
            lambda c=candidates, t=live, k=tracker: k._similarity(c, t), repeats)
        cost = 1.0 - tracker._similarity(candidates, live)
        hungarian = _median_ms(lambda c=cost: assign(c, 0.5), repeats)
        print(f"| {num_objects} x {num_objects} | {size}x{size} | **{wall:.3f} ms** | "
              f"{cpu:.3f} ms | {bare_wall:.3f} ms | {boxes:.3f} ms | "
              f"{packing:.3f} / {packing_bare:.3f} ms | {iou:.3f} ms | "
              f"{similarity:.3f} ms | {hungarian:.3f} ms |", flush=True)

    frames = _speed_frames(20, 512, 2, np.random.default_rng(1))
    first = [d.mask for d in frames[0].detections]
    second = [d.mask for d in frames[1].detections]

    def coco() -> np.ndarray:
        a = [mask_utils.encode(np.asfortranarray(m, dtype=np.uint8)) for m in first]
        b = [mask_utils.encode(np.asfortranarray(m, dtype=np.uint8)) for m in second]
        return mask_utils.iou(a, b, [0] * len(b))

    def ours() -> np.ndarray:
        return pairwise_iou([summarize_mask(m) for m in first], [summarize_mask(m) for m in second])

    difference = float(np.abs(coco() - ours()).max())
    print(f"\nMask IoU 20 x 20 at 512x512 from raw masks: pycocotools (encode + iou) "
          f"{_median_ms(coco, repeats):.2f} ms, packed bits (metaseg_ros.tracking) "
          f"{_median_ms(ours, repeats):.2f} ms; max |difference| = {difference:.1e}\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section",
                        choices=("all", "quality", "scenes", "goals", "ablation", "speed"),
                        default="all")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per scene kind")
    parser.add_argument("--repeats", type=int, default=200, help="timed steps for 'speed'")
    args = parser.parse_args(argv)
    if args.section in ("all", "speed"):
        section_speed(args.repeats)
    if args.section in ("all", "quality"):
        section_quality(args.seeds)
    if args.section in ("all", "scenes"):
        section_scenes(args.seeds)
    if args.section in ("all", "goals"):
        section_goals(args.seeds)
    if args.section in ("all", "ablation"):
        section_ablation(args.seeds)


if __name__ == "__main__":
    main()
