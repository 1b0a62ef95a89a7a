"""Metrics: MOT (MOTA, IDF1, HOTA), video instance segmentation AP, DAVIS J&F."""
