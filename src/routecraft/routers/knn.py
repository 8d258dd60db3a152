"""k-nearest-neighbour router: a candidate's predicted score for a query is its mean score on the k training
queries nearest in embedding space (RouterBench's KNN router, generalised to any candidate pool)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from routecraft.data.schema import RoutingData
from routecraft.routers.base import Prediction, TabularRouter
from routecraft.routers.cost_model import CostModel, check_cost_model
from routecraft.routers.torch_utils import one_thread
from routecraft.routers.validation import check_features, check_fitted, query_ids, training_matrices

METRICS = ("cosine", "euclidean")


class KNNRouter(TabularRouter):
    """Predicted score = mean training score of the candidate over the ``k`` nearest training queries
    (``weights="distance"`` weights them by 1/distance instead). Predicted cost: ``cost_model="knn"`` (default)
    averages the same neighbours' costs; ``"mean"`` uses the candidate's mean training cost; ``"ridge"`` a ridge
    regression from the features.

    Default k = 25: on ZeroEval GSM8K (1,319 × 41) and LLMRouter dcrouter (6,108 × 9), 3 seeds, k = 25 beat
    k = 10 on every curve metric (peak 0.934 vs 0.902 and 0.639 vs 0.614)."""

    name = "knn"

    def __init__(self, k: int = 25, metric: str = "cosine", weights: str = "uniform", cost_model: str = "knn") -> None:
        if int(k) < 1:
            raise ValueError(f"knn router: k must be >= 1, got {k}")
        if metric not in METRICS:
            raise ValueError(f"knn router: metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if weights not in ("uniform", "distance"):
            raise ValueError(f"knn router: weights must be 'uniform' or 'distance', got {weights!r}")
        super().__init__(k=int(k), metric=metric, weights=weights, cost_model=check_cost_model(cost_model))

    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "KNNRouter":
        with one_thread():
            return self._fit(data, X)

    def _fit(self, data: RoutingData, X: np.ndarray | None) -> "KNNRouter":
        from sklearn.neighbors import NearestNeighbors

        m = training_matrices(data, self.name)
        X = check_features(X, len(m.query_ids), self.name)
        self.candidates = list(m.candidates)
        self.dim_ = X.shape[1]
        self.k_ = min(self.params["k"], len(X))
        self.nn_ = NearestNeighbors(n_neighbors=self.k_, metric=self.params["metric"], algorithm="brute").fit(X)
        self.train_score_ = m.score.astype(np.float64)
        kind = self.params["cost_model"]
        self.cost_model_ = CostModel("mean" if kind == "knn" else kind).fit(X, m.cost)
        self.train_cost_ = m.cost.astype(np.float64) if kind == "knn" else None
        return self

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        check_fitted(self, "nn_")
        n = len(query_ids(queries, self.name))
        X = check_features(X, n, self.name, self.dim_)
        if n == 0:
            z = np.zeros((0, len(self.candidates)))
            return Prediction(list(self.candidates), z, z.copy())
        with one_thread():
            dist, nb = self.nn_.kneighbors(X)
        if self.params["weights"] == "distance":
            w = 1.0 / np.maximum(dist.astype(np.float64), 1e-9)
        else:
            w = np.ones(dist.shape)
        w = w / w.sum(axis=1, keepdims=True)
        score = np.clip(np.einsum("nk,nkc->nc", w, self.train_score_[nb]), 0.0, 1.0)
        if self.train_cost_ is not None:
            cost = np.einsum("nk,nkc->nc", w, self.train_cost_[nb])
        else:
            with one_thread():
                cost = self.cost_model_.predict(X, n)
        return Prediction(list(self.candidates), score, cost)
