"""Datasets: the synthetic video generator (synthetic.py), YouTube-VIS/OVIS JSON (ytvis.py),
DAVIS/MOSE folders (davis.py), ROS 2 bags with InstanceMaskArray ground truth (bag.py), and
clip sampling with augmentation (clips.py). Every source yields `ClipSample`s (types.py)."""
