"""metaseg-convert: public Mask2Former checkpoints -> MetaSegmenter checkpoints.

    metaseg-convert SOURCE OUTPUT [options]

SOURCE is a Hugging Face model id (e.g. facebook/mask2former-swin-tiny-coco-instance,
downloaded with huggingface_hub, or taken from its cache), a transformers Mask2Former
directory (config.json + model.safetensors or pytorch_model.bin) or a Detectron2
Mask2Former .pkl (image or video model). OUTPUT is the
path stem of our checkpoint: OUTPUT.safetensors + OUTPUT.json (architecture, class names,
provenance). Examples:

    metaseg-convert facebook/mask2former-swin-tiny-coco-instance weights/swin-t-coco
    metaseg-convert mask2former-swin-small-coco-instance/ weights/swin-s-coco
    metaseg-convert model_final_3c8ec9.pkl weights/r50-coco --classes coco --keep-classes default

Nothing is unpickled unsafely: safetensors, torch.load(weights_only=True), and a restricted
unpickler (numpy arrays and plain containers only) for Detectron2 pickles. Errors (a missing
file, an unknown model id, offline without the files) are one line on stderr, exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from metaseg_ros.classes import COCO_CLASSES, DEFAULT_CLASSES
from metaseg_ros.model.checkpoint import CheckpointError, save_checkpoint
from metaseg_ros.model.convert import (
    ConversionError,
    convert_hf_checkpoint,
    rename_classes,
    select_classes,
)
from metaseg_ros.model.convert.detectron2 import convert_detectron2_checkpoint
from metaseg_ros.model.convert.hub import download_model, looks_like_model_id
from metaseg_ros.user_errors import ArgumentParser, UserError, run_command

NAMED_CLASS_LISTS = {"coco": COCO_CLASSES, "default": DEFAULT_CLASSES}


def parse_class_list(value: str) -> tuple[str, ...]:
    """'coco', 'default', a file with one name per line, or a comma-separated list."""
    if value in NAMED_CLASS_LISTS:
        return NAMED_CLASS_LISTS[value]
    path = Path(value)
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines()]
        return tuple(name for name in names if name)
    return tuple(name.strip() for name in value.split(",") if name.strip())


def build_parser() -> ArgumentParser:
    """The command-line interface."""
    import argparse

    parser = ArgumentParser(prog="metaseg-convert", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="HF model id, HF model directory or Detectron2 .pkl")
    parser.add_argument("output", type=Path, help="output path stem (.safetensors + .json)")
    parser.add_argument("--format", choices=("auto", "hf", "detectron2"), default="auto")
    parser.add_argument("--name", help="model name stored in the config (default: source name)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(512, 512),
                        metavar=("HEIGHT", "WIDTH"), help="network input size (default 512 512)")
    parser.add_argument("--memory-frames", type=int, default=4,
                        help="frames in the memory ring (default 4)")
    parser.add_argument("--classes", type=parse_class_list,
                        help="class names of the checkpoint: coco, a file (one per line) or a "
                             "comma list (Detectron2 files store none; HF ones store id2label)")
    parser.add_argument("--keep-classes", type=parse_class_list,
                        help="keep only these classes (by name, in this order), e.g. default")
    parser.add_argument("--num-heads", type=int, default=8,
                        help="attention heads of a Detectron2 model (not stored; default 8)")
    parser.add_argument("--video", action="store_true",
                        help="the Detectron2 checkpoint is a Video Mask2Former model")
    parser.add_argument("--revision", help="revision (branch, tag, commit) of a model id")
    parser.add_argument("--allow-unused", action="store_true",
                        help="convert even if some source keys are not used (listed)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (2 for a user error, one line)."""
    return run_command("metaseg-convert", _main, argv, extra=(ConversionError, CheckpointError))


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    source = Path(args.source)
    kind = args.format
    if not source.exists():
        if not looks_like_model_id(args.source):
            raise UserError(f"no file or directory at {source} (and it is not a Hugging Face "
                            f"model id like facebook/mask2former-swin-tiny-coco-instance)")
        source, kind = download_model(args.source, args.revision), "hf"
        print(f"model {args.source}: {source}")
    if kind == "auto":
        kind = "hf" if source.is_dir() else "detectron2"
    image_size = tuple(args.image_size)
    if kind == "hf":
        model, report = convert_hf_checkpoint(source, name=args.name,
                                              image_size=image_size,
                                              memory_frames=args.memory_frames,
                                              strict=not args.allow_unused)
        if args.classes is not None:
            model = rename_classes(model, args.classes)
    else:
        model, report = convert_detectron2_checkpoint(
            source, name=args.name, class_names=args.classes, num_heads=args.num_heads,
            video=args.video, image_size=image_size, memory_frames=args.memory_frames,
            strict=not args.allow_unused)
    if args.keep_classes is not None:
        model = select_classes(model, args.keep_classes)
        report.notes.append(f"kept {len(args.keep_classes)} of the checkpoint's classes")
    provenance = {"source": args.source, "format": kind, "report": report.summary()}
    weights, config_path = save_checkpoint(model, args.output, extra=provenance)
    print(report.summary())
    print(f"classes ({model.config.num_classes}): {', '.join(model.class_names)}")
    print(f"wrote {weights} and {config_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
