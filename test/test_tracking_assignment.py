"""Gated Hungarian assignment against brute force on small random cost matrices."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from metaseg_ros.tracking import assign

pytestmark = pytest.mark.torch_free


def brute_force_gain(cost: np.ndarray, max_cost: float) -> float:
    """Best sum(max_cost - cost) over all partial one-to-one matchings of admissible pairs."""
    rows, cols = cost.shape
    admissible = np.isfinite(cost) & (cost < max_cost)
    best = 0.0
    for k in range(min(rows, cols) + 1):
        for chosen_rows in itertools.combinations(range(rows), k):
            for chosen_cols in itertools.permutations(range(cols), k):
                pairs = list(zip(chosen_rows, chosen_cols, strict=True))
                if all(admissible[r, c] for r, c in pairs):
                    best = max(best, sum(max_cost - cost[r, c] for r, c in pairs))
    return best


def check_valid(cost: np.ndarray, max_cost: float, result) -> float:
    rows, cols = cost.shape
    matched_rows = result.matches[:, 0].tolist()
    matched_cols = result.matches[:, 1].tolist()
    assert len(set(matched_rows)) == len(matched_rows)
    assert len(set(matched_cols)) == len(matched_cols)
    assert sorted(matched_rows + result.unmatched_rows.tolist()) == list(range(rows))
    assert sorted(matched_cols + result.unmatched_cols.tolist()) == list(range(cols))
    for r, c in result.matches:
        assert np.isfinite(cost[r, c]) and cost[r, c] < max_cost
    return float(sum(max_cost - cost[r, c] for r, c in result.matches))


@pytest.mark.parametrize("seed", range(60))
def test_assign_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(1, 5, size=2)
    cost = rng.uniform(0, 1.2, size=(rows, cols))
    cost[rng.random((rows, cols)) < 0.2] = np.inf
    cost[rng.random((rows, cols)) < 0.1] = np.nan
    max_cost = 0.8
    gain = check_valid(cost, max_cost, assign(cost, max_cost))
    assert gain == pytest.approx(brute_force_gain(cost, max_cost), abs=1e-9)


def test_assign_prefers_two_good_pairs_over_one_excellent() -> None:
    # Matching (0,0) alone gains 0.95; (0,1) + (1,0) gain 0.6 + 0.6 = 1.2.
    cost = np.array([[0.05, 0.4], [0.4, 1.5]])
    result = assign(cost, max_cost=1.0)
    assert sorted(map(tuple, result.matches.tolist())) == [(0, 1), (1, 0)]


def test_assign_gates_everything() -> None:
    cost = np.full((2, 3), 0.9)
    result = assign(cost, max_cost=0.5)
    assert result.matches.shape == (0, 2)
    assert result.unmatched_rows.tolist() == [0, 1]
    assert result.unmatched_cols.tolist() == [0, 1, 2]


def test_assign_empty_and_invalid() -> None:
    result = assign(np.zeros((0, 4)), max_cost=1.0)
    assert result.matches.shape == (0, 2) and result.unmatched_cols.tolist() == [0, 1, 2, 3]
    result = assign(np.zeros((3, 0)), max_cost=1.0)
    assert result.unmatched_rows.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"cost must be a 2-D matrix, got shape \(3,\)"):
        assign(np.zeros(3), max_cost=1.0)
