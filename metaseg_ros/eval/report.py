"""The replay report: report.json (every number) and report.html (one self-contained page).

The page embeds its images as base64 PNG: plots drawn by matplotlib (time per frame by
stage, time per stage, instances per frame, a track timeline with one row per track id
coloured by class, per-class AP) and sample overlays; with ground truth, a table of the
metrics of eval/scoring.py. The overlay video lies beside it (overlay.mp4, or .gif).
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from metaseg_ros.eval.replay import ReplayResult, VideoRecord
from metaseg_ros.visualization import track_color

# Stages outside the model (PerceptionPipeline's "segment" is the model with its pre- and
# post-processing; "track" is the tracker).
MODEL_STAGES = ("segment",)
METRIC_LABELS = {
    "video_ap": "video mask AP", "video_ap50": "AP50", "video_ap75": "AP75",
    "video_ar1": "AR@1", "video_ar10": "AR@10", "idf1": "IDF1", "mota": "MOTA",
    "hota": "HOTA", "det_a": "DetA", "ass_a": "AssA", "id_switches": "ID switches",
    "j_and_f": "J&F", "j_mean": "J", "f_mean": "F", "false_positives": "false positives",
    "misses": "misses"}


def stage_summary(videos: Sequence[VideoRecord]) -> dict[str, dict[str, float]]:
    """Per stage: total ms, median and 95th percentile per frame."""
    times: dict[str, list[float]] = {}
    for video in videos:
        for frame in video.frames:
            for stage, ms in frame.timings_ms.items():
                times.setdefault(stage, []).append(ms)
    return {stage: {"total_ms": round(sum(v), 3), "median_ms": round(statistics.median(v), 3),
                    "p95_ms": round(float(np.percentile(v, 95)), 3)}
            for stage, v in times.items()}


def _tracks(video: VideoRecord) -> list[dict[str, Any]]:
    tracks: dict[int, dict[str, Any]] = {}
    for position, frame in enumerate(video.frames):
        for instance in frame.instances:
            track = tracks.setdefault(instance["track_id"], {
                "track_id": instance["track_id"], "class_name": instance["class_name"],
                "first_frame": position, "frames": []})
            track["frames"].append(position)
            track["class_name"] = instance["class_name"]
    return [tracks[k] for k in sorted(tracks)]


def report_document(result: ReplayResult, extra: dict[str, Any] | None = None,
                    report_ms: float = 0.0) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data."""
    stages = stage_summary(result.videos)
    if result.scoring_ms:
        stages["metrics"] = {"total_ms": round(result.scoring_ms, 3)}
    if report_ms:
        stages["report"] = {"total_ms": round(report_ms, 3)}
    wall_ms = max(result.wall_s * 1e3 + report_ms, 1e-9)
    model_ms = sum(stages[s]["total_ms"] for s in MODEL_STAGES if s in stages)
    frames = result.num_frames
    document: dict[str, Any] = {
        **(extra or {}), "pipeline": result.pipeline, "interrupted": result.interrupted,
        "frames": frames, "wall_s": round(wall_ms / 1e3, 3),
        "frames_per_second": round(frames / (wall_ms / 1e3), 3),
        "stages": stages,
        "share_of_wall_time": {s: round(v["total_ms"] / wall_ms, 4) for s, v in stages.items()},
        "share_outside_model": round(1.0 - model_ms / wall_ms, 4),
        "metrics": asdict(result.scores) if result.scores else None,
        "per_class_ap": result.per_class_ap,
        "videos": []}
    for video in result.videos:
        document["videos"].append({
            "name": video.name, "bag": str(video.bag), "image_topic": video.image_topic,
            "image_type": video.image_type, "results": str(video.results),
            "overlay_video": str(video.video) if video.video else None,
            "frames": len(video.frames), "dropped_frames": video.dropped,
            "recovered_messages": video.recovered, "ground_truth": video.truth or None,
            "stream_resets": video.stream_resets,
            "annotated_frames": sum(f.annotated for f in video.frames),
            "ground_truth_objects_without_model_class": video.unmapped_objects,
            "tracks": [{k: v for k, v in t.items() if k != "frames"} | {"length": len(t["frames"])}
                       for t in _tracks(video)],
            "per_frame": [asdict(f) for f in video.frames]})
    return document


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_png(rgb: np.ndarray, max_width: int = 480) -> str:
    from PIL import Image

    image = Image.fromarray(rgb)
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def video_plots(video: VideoRecord, class_names: Sequence[str]) -> dict[str, str]:
    """The plots of one video as base64 PNGs, by title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = video.frames
    x = np.arange(len(frames))
    stages = list(dict.fromkeys(s for f in frames for s in f.timings_ms))
    plots = {}
    figure, axis = plt.subplots(figsize=(9, 3.2))
    values = [[f.timings_ms.get(s, 0.0) for f in frames] for s in stages]
    axis.stackplot(x, values, labels=stages, step="mid")
    axis.set(xlabel="frame", ylabel="ms", title="Time per frame, by stage (stacked)")
    axis.legend(loc="upper right", fontsize=7, ncol=min(len(stages), 5))
    plots["latency per frame"] = _png(figure)

    figure, axis = plt.subplots(figsize=(9, 3.0))
    axis.boxplot(values, tick_labels=stages, showfliers=False)
    axis.set(ylabel="ms per frame", title="Time per stage (median, quartiles, 5-95%)")
    plots["latency per stage"] = _png(figure)

    figure, axis = plt.subplots(figsize=(9, 2.6))
    axis.step(x, [len(f.instances) for f in frames], where="mid")
    axis.set(xlabel="frame", ylabel="instances", title="Instances published per frame")
    plots["instances per frame"] = _png(figure)

    tracks = _tracks(video)
    figure, axis = plt.subplots(figsize=(9, max(2.2, 0.22 * len(tracks) + 1.2)))
    cmap = plt.get_cmap("tab20")
    classes = sorted({t["class_name"] for t in tracks})
    for row, track in enumerate(sorted(tracks, key=lambda t: t["first_frame"])):
        color = cmap(classes.index(track["class_name"]) % 20)
        runs = _runs(track["frames"])
        axis.broken_barh(runs, (row - 0.4, 0.8), facecolors=color)
    axis.set_yticks(range(len(tracks)))
    axis.set_yticklabels([f"#{t['track_id']}" for t in sorted(tracks,
                                                               key=lambda t: t["first_frame"])],
                         fontsize=6)
    axis.set(xlabel="frame", title="Track timeline (one row per track id, colour = class)",
             xlim=(-0.5, max(len(frames), 1) - 0.5))
    if classes:
        axis.legend(handles=[matplotlib.patches.Patch(color=cmap(i % 20), label=name)
                             for i, name in enumerate(classes)], fontsize=7, loc="upper right")
    plots["track timeline"] = _png(figure)
    return plots


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    """Consecutive positions as (start, length) bars."""
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return [(start - 0.5, length) for start, length in runs]


def _ap_plot(per_class: dict[str, float]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 2.8))
    names = list(per_class)
    axis.bar(names, [max(v, 0.0) for v in per_class.values()],
             color=[np.array(track_color(i + 1)) / 255 for i in range(len(names))])
    axis.set(ylim=(0, 1), ylabel="video mask AP", title="AP per class (classes with ground truth)")
    axis.tick_params(axis="x", labelrotation=30, labelsize=8)
    return _png(figure)


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>"
                   for a, b in rows)
    return (f"<table><tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th>"
            f"</tr>{body}</table>")


def _figure(title: str, data: str) -> str:
    return (f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def render_html(document: dict[str, Any], result: ReplayResult, output: Path) -> str:
    """The page (plots drawn here)."""
    parts = [f"<h1>metaseg replay report</h1><p>{html.escape(document['pipeline'])}</p>"]
    summary = [("frames processed", str(document["frames"])),
               ("wall time", f"{document['wall_s']:.2f} s"),
               ("throughput", f"{document['frames_per_second']:.2f} frames/s"),
               ("time outside the model", f"{document['share_outside_model'] * 100:.1f} %")]
    if document["interrupted"]:
        summary.append(("interrupted", "yes: the report covers the frames processed"))
    parts.append(_table(summary, ("", "")))
    stages = [(s, f"{v['total_ms']:.1f} ms total, "
                  f"{document['share_of_wall_time'][s] * 100:.1f} % of the wall time"
                  + (f", median {v['median_ms']:.2f} ms" if "median_ms" in v else ""))
              for s, v in document["stages"].items()]
    parts.append("<h2>Where the time goes</h2>" + _table(stages, ("stage", "time")))
    if document["metrics"]:
        metrics = document["metrics"]
        rows = [(METRIC_LABELS[k], f"{metrics[k]:.3f}" if isinstance(metrics[k], float)
                 else str(metrics[k])) for k in METRIC_LABELS]
        parts.append("<h2>Accuracy (annotated frames)</h2>" + _table(rows, ("metric", "value")))
        if document["per_class_ap"]:
            parts.append(_table([(k, f"{v:.3f}") for k, v in document["per_class_ap"].items()],
                                ("class", "video mask AP")))
            parts.append(_figure("AP per class", _ap_plot(document["per_class_ap"])))
    else:
        parts.append("<p>No ground truth: latency and track statistics only.</p>")
    for video, info in zip(result.videos, document["videos"], strict=True):
        parts.append(f"<h2>{html.escape(video.name)}</h2>")
        rows = [("bag", info["bag"]), ("image topic", f"{info['image_topic']} "
                                                     f"({info['image_type']})"),
                ("frames", str(info["frames"])), ("tracks", str(len(info["tracks"]))),
                ("results bag", info["results"])]
        if video.video is not None:
            relative = video.video.relative_to(output) if video.video.is_relative_to(output) \
                else video.video
            rows.append(("overlay video", str(relative)))
            if video.video.suffix == ".mp4":
                parts.append(f'<video controls width="640" src="{html.escape(str(relative))}">'
                             f"</video>")
        if info["recovered_messages"] is not None:
            rows.append(("cut short", f"{info['recovered_messages']} messages recovered"))
        parts.append(_table(rows, ("", "")))
        if video.frames:
            for title, data in video_plots(video, result.class_names).items():
                parts.append(_figure(title, data))
        for title, rgb in video.samples.items():
            parts.append(_figure(f"overlay: {title}", _image_png(rgb)))
    style = ("body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:"
             "collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:"
             "left}img{max-width:100%}figure{margin:8px 0}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>metaseg replay '
            f"report</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(output: str | Path, result: ReplayResult,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write report.json and report.html into `output`; returns the document."""
    import time

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    document = report_document(result, extra)
    page = render_html(document, result, output)
    report_ms = (time.perf_counter() - started) * 1e3
    document = report_document(result, extra, report_ms=report_ms)
    (output / "report.html").write_text(page)
    (output / "report.json").write_text(json.dumps(document, indent=1) + "\n")
    return document
