"""Reference routers: random, oracle, best single, cheapest, one fixed candidate.

None of them reads query features. They bracket every learned router: the oracle is the ceiling (it sees the
outcomes of the very queries it routes), best-single/cheapest/fixed are what a deployment without a router gets,
and random is routing without information.

``pareto_front`` (the candidates no other dominates on mean score and cost) is here too.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from routecraft.data.schema import Candidate, RoutingData
from routecraft.routers.base import Prediction, TabularRouter
from routecraft.routers.validation import check_fitted, query_ids, training_matrices


def pareto_front(mean_score: np.ndarray, mean_cost: np.ndarray) -> np.ndarray:
    """Boolean mask of candidates no other candidate dominates (cost ≤ and score ≥, one strictly)."""
    c = len(mean_score)
    keep = np.ones(c, dtype=bool)
    for j in range(c):
        dom = ((mean_cost <= mean_cost[j]) & (mean_score >= mean_score[j])
               & ((mean_cost < mean_cost[j]) | (mean_score > mean_score[j])))
        keep[j] = not dom.any()
    # of exact duplicates (same cost and score) keep the first only
    for j in range(c):
        if keep[j]:
            same = (mean_cost == mean_cost[j]) & (mean_score == mean_score[j])
            same[: j + 1] = False
            keep[same] = False
    return keep


# ---- the baselines -------------------------------------------------------------------------------------------
class _ConstantRouter(TabularRouter):
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
        check_fitted(self, "choice_")
        return self.candidates[self.choice_]

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        """Mean training score and cost per candidate, with the other candidates clamped so that the chosen one
        dominates: their score is at most the chosen score − 1e-6 and their cost strictly above the chosen cost.
        ``choose`` then returns the chosen candidate at every λ and under every cost cap (a fixed router does not
        route; where the cap is below its cost, ``choose`` falls back to the cheapest predicted cost, which is it)."""
        check_fitted(self, "choice_")
        n = len(query_ids(queries, self.name))
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


class RandomRouter(TabularRouter):
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
        check_fitted(self, "eligible_")
        qids = query_ids(queries, self.name)
        c = len(self.candidates)
        seed = self.params["seed"]
        u = np.empty((len(qids), c))
        for i, q in enumerate(qids):
            rng = np.random.default_rng([seed, zlib.crc32(q.encode("utf-8"))])
            u[i] = 1.0 - rng.random(c)  # (0, 1]
        u[:, ~self.eligible_] = 0.0
        return Prediction(list(self.candidates), u, np.tile(self.mean_cost_, (len(qids), 1)))


class OracleRouter(TabularRouter):
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
        check_fitted(self, "row_")
        qids = query_ids(queries, self.name)
        missing = [q for q in qids if q not in self.row_]
        if missing:
            raise ValueError(f"oracle router: {len(missing)} queries have no known outcome (e.g. {missing[0]!r}); "
                             "the oracle must be fit on the queries it routes")
        rows = np.array([self.row_[q] for q in qids], dtype=int)
        return Prediction(list(self.candidates), self.score_[rows], self.cost_[rows],
                          None if self.tokens_ is None else self.tokens_[rows])
