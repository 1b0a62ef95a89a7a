"""Datasets and the synthetic video generator.

- types.py: ClipSample (frames, per-frame instance masks, classes, persistent ids),
  the VideoSource protocol, ClassMapper (dataset categories -> model classes);
- synthetic.py: deterministic synthetic videos from real packaged cut-outs/backgrounds;
- ytvis.py: YouTube-VIS / OVIS JSON (per-frame RLE) reader and writer;
- davis.py: DAVIS / MOSE indexed-PNG folders reader and writer;
- clips.py: clip sampling, clip-consistent augmentation, batching for training.
"""
