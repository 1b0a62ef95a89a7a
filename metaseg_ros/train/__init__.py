"""Training of MetaSegmenter.

- points.py: point sampling and Mask2Former's uncertainty-based importance sampling;
- matcher.py: Hungarian matching (class + sigmoid CE + dice costs on sampled points);
- losses.py: VideoSetCriterion (CE + focal class loss, focal + dice mask losses, deep
  supervision, temporal contrastive association loss), batch-split invariant;
- config.py: TrainConfig (YAML + dotted overrides); trainer.py: Trainer (clips through the
  memory, AdamW, warm-up + poly, clipping, AMP, accumulation, DDP, exact resume, logs);
- distributed.py: torchrun set-up and the step-indexed, resumable data order;
- evaluate.py: held-out metrics of a checkpoint; export.py / release.py: ship a model;
- benchmark.py: training throughput; configs/: the default model's recipe.

Entry point: `metaseg-train` (metaseg_ros.cli.train).
"""
