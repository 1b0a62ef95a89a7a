"""Datasets and the synthetic video generator."""
