"""The λ trade-off on arrays (numpy only: the ground floor, imports nothing of routecraft).

A decision under trade-off λ picks, per query, the candidate that maximises predicted score − λ·predicted cost (USD);
under a cost cap, the best predicted score among the candidates that fit. Sweeping λ over a grid and replaying each
λ's decisions on logged outcomes gives a router's realised accuracy-vs-cost curve.

``pred`` and ``truth`` are anything with ``score`` and ``cost`` arrays of shape (n_queries, n_candidates) in the
same column order: a router's ``Prediction`` and the test split's ``OutcomeMatrices``.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import numpy as np


class ScoreCost(Protocol):
    score: np.ndarray
    cost: np.ndarray


def choose_indices(score: np.ndarray, cost: np.ndarray, lam: float = 0.0,
                   max_cost: float | None = None) -> np.ndarray:
    """Index of the chosen candidate per query.

    With ``max_cost``: the highest predicted score among candidates whose predicted cost is within the
    cap (ties broken by lower cost); the cheapest candidate where none fits. Otherwise the maximum of
    predicted score − λ·predicted cost (ties broken by lower cost, then by candidate order).
    """
    if max_cost is not None:
        fits = cost <= max_cost
        util = np.where(fits, score, -np.inf)
        tie = -cost * 1e-9
        idx = np.argmax(util + tie, axis=1)
        none = ~fits.any(axis=1)
        idx[none] = np.argmin(cost[none], axis=1)
        return idx
    util = score - lam * cost
    # lexicographic tie-break on cost: among (near-)equal utilities prefer the cheaper one
    best = util.max(axis=1, keepdims=True)
    near = util >= best - 1e-12
    masked_cost = np.where(near, cost, np.inf)
    return np.argmin(masked_cost, axis=1)


def lambda_grid(costs: np.ndarray, n: int = 60) -> np.ndarray:
    """λ values (score per USD) from 0 to large enough that the cheapest candidate always wins.

    ``costs`` are per-candidate mean costs. The grid is geometric between 1e-3/max_cost and 1e3/min_cost so it
    spans every trade-off between the cheapest and the dearest candidate.
    """
    pos = costs[costs > 0]
    if pos.size == 0:
        return np.array([0.0])
    lo, hi = 1e-3 / pos.max(), 1e3 / pos.min()
    return np.concatenate([[0.0], np.geomspace(lo, hi, n)])


def realised(pred: ScoreCost, truth: ScoreCost, lam: float | None = None,
             max_cost: float | None = None) -> tuple[float, float, np.ndarray]:
    """(mean logged score, mean logged cost, chosen index per query) of the decisions on ``pred`` under λ (or a
    cost cap), replayed on ``truth``."""
    idx = choose_indices(pred.score, pred.cost, lam=lam or 0.0, max_cost=max_cost)
    rows = np.arange(len(idx))
    return float(truth.score[rows, idx].mean()), float(truth.cost[rows, idx].mean()), idx


def sweep(pred: ScoreCost, truth: ScoreCost, lambdas: Iterable[float]) -> dict:
    """Realised (mean cost, mean score) of each λ's decisions, plus how often each candidate was chosen."""
    n_candidates = pred.score.shape[1]
    pts, counts = [], np.zeros(n_candidates)
    for lam in lambdas:
        s, c, idx = realised(pred, truth, lam)
        pts.append((float(lam), c, s))
        counts += np.bincount(idx, minlength=n_candidates)
    arr = np.array(pts)
    return {"lambda": arr[:, 0], "cost": arr[:, 1], "score": arr[:, 2], "choice_counts": counts}


__all__ = ["ScoreCost", "choose_indices", "lambda_grid", "realised", "sweep"]
