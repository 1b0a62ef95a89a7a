"""Gated optimal assignment of detections to tracks (Hungarian algorithm, scipy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True, slots=True, eq=False)
class Assignment:
    """Result of `assign`: matched (row, col) pairs and what stayed unmatched.

    matches: (K, 2) int64 pairs, sorted by row; unmatched_rows / unmatched_cols: sorted int64.
    """

    matches: np.ndarray
    unmatched_rows: np.ndarray
    unmatched_cols: np.ndarray


def assign(cost: np.ndarray, max_cost: float) -> Assignment:
    """Match rows to columns minimising total cost, each pair only if its cost < max_cost.

    Leaving a row or column unmatched is allowed and costs `max_cost` per matched pair it
    would have formed, so the result maximises sum(max_cost - cost) over the chosen pairs:
    the optimal partial matching among the admissible pairs (cost < max_cost). Entries that
    are NaN or +inf are never matched (gated out).
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, got shape {cost.shape}")
    rows, cols = cost.shape
    admissible = np.isfinite(cost) & (cost < max_cost)
    if not admissible.any():
        return Assignment(np.zeros((0, 2), dtype=np.int64), np.arange(rows, dtype=np.int64),
                          np.arange(cols, dtype=np.int64))
    gain = np.where(admissible, max_cost - np.where(admissible, cost, max_cost), 0.0)
    row_index, col_index = linear_sum_assignment(gain, maximize=True)
    keep = admissible[row_index, col_index]
    matches = np.stack([row_index[keep], col_index[keep]], axis=1).astype(np.int64)
    matched_rows = np.zeros(rows, dtype=bool)
    matched_cols = np.zeros(cols, dtype=bool)
    matched_rows[matches[:, 0]] = True
    matched_cols[matches[:, 1]] = True
    return Assignment(matches, np.flatnonzero(~matched_rows).astype(np.int64),
                      np.flatnonzero(~matched_cols).astype(np.int64))
