"""Reference routers: random, oracle, best single, cheapest, one fixed candidate.

None of them reads query features. They bracket every learned router: the oracle is the ceiling (it sees the
outcomes of the very queries it routes), best-single/cheapest/fixed are what a deployment without a router gets,
and random is routing without information.

The module also holds small helpers shared by the learned routers (``knn``, ``mlp``, ``mf``, ``linear``): feature
checks and the per-candidate cost model.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any, Iterator

import numpy as np
import pandas as pd

from routecraft.data.schema import Candidate, OutcomeMatrices, RoutingData
from routecraft.routers.base import Prediction, Router

COST_MODELS = ("mean", "knn", "ridge")


# ---- helpers shared by the routers of this package ------------------------------------------------------------
def training_matrices(data: RoutingData, who: str) -> OutcomeMatrices:
    """The (n × C) score/cost arrays of ``data``; a clear error when it is empty or incomplete."""
    if not isinstance(data, RoutingData):
        raise TypeError(f"{who}.fit needs a RoutingData, got {type(data).__name__}")
    if len(data.queries) == 0 or len(data.outcomes) == 0:
        raise ValueError(f"{who}.fit: the training data has no queries or no outcomes")
    m = data.matrices()  # raises DataValidationError naming the first missing (query, candidate) cell
    if len(m.candidates) == 0:
        raise ValueError(f"{who}.fit: the training data has no candidates")
    return m


def check_features(X: Any, n: int, who: str, dim: int | None = None) -> np.ndarray:
    """``X`` as a float32 (n, d) array; errors that say what is wrong with it."""
    if X is None:
        raise ValueError(f"{who} uses query features: pass X, one embedding row per query (got None)")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{who}: features must be a 2-D (n_queries, dim) array, got shape {X.shape}")
    if X.shape[0] != n:
        raise ValueError(f"{who}: {X.shape[0]} feature rows for {n} queries; X must have one row per query")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"{who}: features have dimension {X.shape[1]} but the router was fit on dimension {dim} "
                         "(same encoder for fit and predict?)")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"{who}: features must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float32, copy=False)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise ValueError(f"{who}: feature row {int(np.flatnonzero(bad)[0])} has NaN or infinite values")
    return X


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run BLAS/OpenMP (numpy, scikit-learn) on one thread. The problems here are small (thousands of rows,
    hundreds of features): on a shared 2-core machine one thread was 12× faster than two fighting each other."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def check_cost_model(kind: str) -> str:
    if kind not in COST_MODELS:
        raise ValueError(f"cost_model must be one of {', '.join(COST_MODELS)}, got {kind!r}")
    return kind


def is_binary(score: np.ndarray) -> bool:
    return bool(np.isin(score, (0.0, 1.0)).all())


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


def _query_ids(queries: pd.DataFrame, who: str) -> list[str]:
    if not isinstance(queries, pd.DataFrame) or "query_id" not in queries.columns:
        raise ValueError(f"{who}.predict needs a queries DataFrame with a 'query_id' column")
    return queries["query_id"].astype(str).tolist()


def _fitted(router: Router, attr: str) -> None:
    if not hasattr(router, attr):
        raise RuntimeError(f"{router.name} router is not fitted: call fit(data, X) first (or load_router)")


def pareto_front(mean_score: np.ndarray, mean_cost: np.ndarray) -> np.ndarray:
    """Boolean mask of candidates no other candidate dominates (cost ≤ and score ≥, one strictly)."""
    c = len(mean_score)
    keep = np.ones(c, dtype=bool)
    for j in range(c):
        dom = (mean_cost <= mean_cost[j]) & (mean_score >= mean_score[j]) & \
              ((mean_cost < mean_cost[j]) | (mean_score > mean_score[j]))
        keep[j] = not dom.any()
    # of exact duplicates (same cost and score) keep the first only
    for j in range(c):
        if keep[j]:
            same = (mean_cost == mean_cost[j]) & (mean_score == mean_score[j])
            same[: j + 1] = False
            keep[same] = False
    return keep


# ---- the baselines -------------------------------------------------------------------------------------------
class _ConstantRouter(Router):
    """Fits per-candidate mean training score and cost; subclasses pick one candidate to return always."""

    uses_features = False

    def _pick(self, mean_score: np.ndarray, mean_cost: np.ndarray) -> int:
        raise NotImplementedError

    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "_ConstantRouter":
        m = training_matrices(data, self.name)
        self.candidates = list(m.candidates)
        self.mean_score_ = m.score.mean(axis=0)
        self.mean_cost_ = m.cost.mean(axis=0)
        self.choice_ = int(self._pick(self.mean_score_, self.mean_cost_))
        return self

    @property
    def choice(self) -> Candidate:
        _fitted(self, "choice_")
        return self.candidates[self.choice_]

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        """Mean training score and cost per candidate, with the other candidates clamped so that the chosen one
        dominates: their score is at most the chosen score − 1e-6 and their cost strictly above the chosen cost.
        ``choose`` then returns the chosen candidate at every λ and under every cost cap (a fixed router does not
        route; where the cap is below its cost, ``choose`` falls back to the cheapest predicted cost, which is it)."""
        _fitted(self, "choice_")
        n = len(_query_ids(queries, self.name))
        j = self.choice_
        s, c = self.mean_score_.copy(), self.mean_cost_.copy()
        others = np.arange(len(s)) != j
        s[others] = np.minimum(s[others], s[j] - 1e-6)
        c[others] = np.maximum(c[others], np.nextafter(c[j], np.inf))
        return Prediction(list(self.candidates), np.tile(s, (n, 1)), np.tile(c, (n, 1)))


class BestSingleRouter(_ConstantRouter):
    """Always the candidate with the best mean training score (ties → the cheaper, then candidate order)."""

    name = "best-single"

    def __init__(self) -> None:
        super().__init__()

    def _pick(self, mean_score, mean_cost):
        return np.lexsort((np.arange(len(mean_score)), mean_cost, -mean_score))[0]


class CheapestRouter(_ConstantRouter):
    """Always the candidate with the lowest mean training cost (ties → the better scoring)."""

    name = "cheapest"

    def __init__(self) -> None:
        super().__init__()

    def _pick(self, mean_score, mean_cost):
        return np.lexsort((np.arange(len(mean_score)), -mean_score, mean_cost))[0]


class FixedRouter(_ConstantRouter):
    """Always one named candidate, given as ``"model"`` or ``"model|strategy|budget"``."""

    name = "fixed"

    def __init__(self, candidate: str) -> None:
        if not isinstance(candidate, str) or not candidate:
            raise ValueError(f"fixed router needs candidate='model' or 'model|strategy|budget', got {candidate!r}")
        Candidate.parse(candidate)  # raises on a malformed id
        super().__init__(candidate=candidate)

    def _pick(self, mean_score, mean_cost):
        want = Candidate.parse(self.params["candidate"]).id
        ids = [c.id for c in self.candidates]
        if want not in ids:
            raise ValueError(f"fixed router: candidate {want!r} is not in the training data; candidates are: "
                             f"{', '.join(ids)}")
        return ids.index(want)


class RandomRouter(Router):
    """Routing without information: a uniformly random candidate per query, traced over λ.

    For every (query, candidate) the predicted score is an independent uniform draw in (0, 1], seeded by
    (``seed``, query_id) so that a query gets the same draw whatever batch it comes in; the predicted cost is the
    candidate's mean training cost. Hence:

    * λ = 0: a uniformly random candidate from the pool (RouterBench's random router);
    * λ > 0: maximising u − λ·cost keeps only candidates whose mean cost is within 1/λ of the cheapest and prefers
      cheaper ones among them, so sweeping λ traces a curve from the pool's average down to the cheapest candidate;
    * cost cap: a uniformly random candidate among those whose mean training cost is within the cap.

    ``pool="frontier"`` (default) draws only among candidates on the training cost/score Pareto front (no other
    candidate is both cheaper and better on average); the others get predicted score 0 and are never chosen (each
    is dominated by a front candidate with a positive draw). ``pool="all"`` draws among every candidate, which on a
    pool with many weak candidates is a much lower floor.
    """

    name = "random"
    uses_features = False

    def __init__(self, seed: int = 0, pool: str = "frontier") -> None:
        if pool not in ("frontier", "all"):
            raise ValueError(f"random router: pool must be 'frontier' or 'all', got {pool!r}")
        super().__init__(seed=int(seed), pool=pool)

    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "RandomRouter":
        m = training_matrices(data, self.name)
        self.candidates = list(m.candidates)
        self.mean_score_ = m.score.mean(axis=0)
        self.mean_cost_ = m.cost.mean(axis=0)
        if self.params["pool"] == "frontier":
            self.eligible_ = pareto_front(self.mean_score_, self.mean_cost_)
        else:
            self.eligible_ = np.ones(len(self.candidates), dtype=bool)
        return self

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        _fitted(self, "eligible_")
        qids = _query_ids(queries, self.name)
        c = len(self.candidates)
        seed = self.params["seed"]
        u = np.empty((len(qids), c))
        for i, q in enumerate(qids):
            rng = np.random.default_rng([seed, zlib.crc32(q.encode("utf-8"))])
            u[i] = 1.0 - rng.random(c)  # (0, 1]
        u[:, ~self.eligible_] = 0.0
        return Prediction(list(self.candidates), u, np.tile(self.mean_cost_, (len(qids), 1)))


class OracleRouter(Router):
    """The ceiling: fit on the outcomes of the very queries it will route (the bench fits it on the test split)
    and predict their true score and cost. At λ = 0 it picks the best-scoring candidate per query, the cheapest of
    those where several tie (``choose`` breaks ties by cost); over λ it traces the best reachable curve."""

    name = "oracle"
    uses_features = False
    is_oracle = True

    def __init__(self) -> None:
        super().__init__()

    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "OracleRouter":
        m = training_matrices(data, self.name)
        self.candidates = list(m.candidates)
        self.row_ = {q: i for i, q in enumerate(m.query_ids)}
        self.score_, self.cost_ = m.score, m.cost
        tok = m.output_tokens
        self.tokens_ = None if np.isnan(tok).any() else tok
        return self

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        _fitted(self, "row_")
        qids = _query_ids(queries, self.name)
        missing = [q for q in qids if q not in self.row_]
        if missing:
            raise ValueError(f"oracle router: {len(missing)} queries have no known outcome (e.g. {missing[0]!r}); "
                             "the oracle must be fit on the queries it routes")
        rows = np.array([self.row_[q] for q in qids], dtype=int)
        return Prediction(list(self.candidates), self.score_[rows], self.cost_[rows],
                          None if self.tokens_ is None else self.tokens_[rows])
