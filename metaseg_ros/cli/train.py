"""`metaseg-train`: train or fine-tune MetaSegmenter (one process, or under torchrun).

    metaseg-train --config metaseg_ros/train/configs/tiny_synthetic.yaml
    metaseg-train --config my.yaml --set optim.max_steps=20000 --set data.num_workers=8
    torchrun --nproc_per_node=8 -m metaseg_ros.cli.train --config my.yaml
    metaseg-train --config my.yaml --resume auto      # continue from the newest checkpoint

The run directory (output_dir) receives checkpoints/step_XXXXXXXX/{model.safetensors,
model.json, training_state.pt, train_config.json}, TensorBoard logs in tb/, and at the
end final/model.{safetensors,json}, a checkpoint the node loads directly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from metaseg_ros.model.checkpoint import save_checkpoint
from metaseg_ros.train.config import load_train_config, train_config_to_dict
from metaseg_ros.train.distributed import cleanup_distributed
from metaseg_ros.train.trainer import Trainer
from metaseg_ros.user_errors import ArgumentParser, UserError, run_command


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, train, write the final checkpoint; returns the exit code (2 with one
    line on stderr for a user error: a missing config or resume checkpoint, a bad --set)."""
    return run_command("metaseg-train", _main, argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = ArgumentParser(prog="metaseg-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="training YAML (see metaseg_ros/train/config.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config entry, e.g. optim.lr=1e-4")
    parser.add_argument("--resume", default="",
                        help="'auto' (newest checkpoint of output_dir) or a checkpoint dir")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as JSON and exit")
    args = parser.parse_args(argv)
    if args.config and not Path(args.config).is_file():
        raise UserError(f"no training config at {args.config}")
    if args.resume and args.resume != "auto" and not Path(args.resume).is_dir():
        raise UserError(f"no checkpoint directory at {args.resume} (or use --resume auto)")
    config = load_train_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(train_config_to_dict(config), indent=2))
        return 0
    trainer = Trainer(config)
    try:
        if args.resume:
            checkpoint = trainer.latest_checkpoint() if args.resume == "auto" else \
                Path(args.resume)
            if checkpoint is not None:
                trainer.resume(checkpoint)
                if trainer.context.is_main:
                    print(f"resumed from {checkpoint} at step {trainer.step}")
        if trainer.context.is_main:
            print(f"init: {trainer.init_summary}; {len(trainer.dataset)} samples per epoch; "
                  f"{trainer.context.world_size} process(es) on {trainer.device}")
        trainer.fit()
        if trainer.context.is_main:
            final = Path(config.output_dir) / "final" / "model"
            save_checkpoint(trainer.model, final,
                            extra={"steps": trainer.step, "init": trainer.init_summary,
                                   "train_config": train_config_to_dict(config)})
            print(f"final checkpoint: {final}.safetensors")
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
