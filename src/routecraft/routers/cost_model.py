"""The per-candidate cost model of the learned routers (knn, mlp, mf, linear): predicted USD cost per query."""

from __future__ import annotations

import numpy as np

COST_MODELS = ("mean", "knn", "ridge")


def check_cost_model(kind: str) -> str:
    if kind not in COST_MODELS:
        raise ValueError(f"cost_model must be one of {', '.join(COST_MODELS)}, got {kind!r}")
    return kind


class CostModel:
    """Predicted cost (USD) of every candidate for a query.

    ``mean``: the candidate's mean training cost (the same for every query). ``knn``: the mean cost of the
    candidate on the ``k`` nearest training queries (cosine). ``ridge``: one ridge regression per candidate from the
    query features (solved jointly; sklearn's multi-output Ridge fits each column independently), clipped to the
    candidate's training range. Costs vary across queries mostly through output length, which the query text
    predicts only in part; ``mean`` is the robust default.
    """

    def __init__(self, kind: str = "mean", k: int = 10, alpha: float = 1.0):
        self.kind = check_cost_model(kind)
        self.k, self.alpha = int(k), float(alpha)

    def fit(self, X: np.ndarray | None, cost: np.ndarray) -> "CostModel":
        self.mean_ = cost.mean(axis=0)
        self.lo_, self.hi_ = cost.min(axis=0), cost.max(axis=0)
        if self.kind == "knn":
            from sklearn.neighbors import NearestNeighbors

            self.k_ = min(self.k, len(cost))
            self.nn_ = NearestNeighbors(n_neighbors=self.k_, metric="cosine", algorithm="brute").fit(X)
            self.train_cost_ = cost.astype(np.float64)
        elif self.kind == "ridge":
            from sklearn.linear_model import Ridge

            self.ridge_ = Ridge(alpha=self.alpha).fit(X, cost)
        return self

    def predict(self, X: np.ndarray | None, n: int, neighbours: np.ndarray | None = None) -> np.ndarray:
        if self.kind == "mean" or n == 0:
            return np.tile(self.mean_, (n, 1))
        if self.kind == "knn":
            if neighbours is None:
                neighbours = self.nn_.kneighbors(X, return_distance=False)
            return self.train_cost_[neighbours].mean(axis=1)
        return np.clip(self.ridge_.predict(X).reshape(n, -1), self.lo_, self.hi_)
