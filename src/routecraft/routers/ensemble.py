"""A committee of routers: the mean of its members' predicted scores and costs.

Learned routers' per-query score predictions are noisy; where many candidates are close (41 GSM8K models between
90% and 96%), averaging the predictions of differently built members (a neural per-candidate head, RouteLLM-style
matrix factorisation, logistic regressions, nearest neighbours) lowers that noise and so picks better at equal cost.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from routecraft.data.schema import RoutingData
from routecraft.routers.base import Prediction, TabularRouter
from routecraft.routers.registry import get_router_class


class EnsembleRouter(TabularRouter):
    name = "ensemble"

    def __init__(self, members: str | list[str] = "mlp,mf,linear", weights: str | list[float] | None = None,
                 seed: int = 0) -> None:
        super().__init__(members=members, weights=weights, seed=seed)
        # members separated by ',' '/' or '+' ("ensemble:members=mlp+mf" in a bench spec, where ',' splits params)
        self.members_spec = ([m.strip() for m in re.split(r"[,/+]", members) if m.strip()]
                             if isinstance(members, str) else list(members))
        if not self.members_spec:
            raise ValueError("ensemble needs at least one member router")
        if weights is None:
            self.weights = np.full(len(self.members_spec), 1.0 / len(self.members_spec))
        else:
            w = [float(x) for x in (weights.split("/") if isinstance(weights, str) else weights)]
            if len(w) != len(self.members_spec) or min(w) < 0 or sum(w) <= 0:
                raise ValueError(f"ensemble weights {w} must be {len(self.members_spec)} non-negative numbers")
            self.weights = np.asarray(w) / sum(w)
        self.seed = seed
        self.members: list[TabularRouter] = []
        #: member name -> a router of that name already fitted (default parameters, same seed) on the very data
        #: this ensemble is fit on (``use_fitted``; the bench passes them so members are not fitted twice). Cleared
        #: after fit.
        self.reuse: dict[str, TabularRouter] = {}

    def use_fitted(self, fitted: dict[str, TabularRouter]) -> None:
        self.reuse = dict(fitted)

    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "EnsembleRouter":
        self.members = []
        for name in self.members_spec:
            cls = get_router_class(name)
            if cls.is_oracle:
                raise ValueError("the oracle cannot be an ensemble member")
            kw = {"seed": self.seed} if cls.takes_seed else {}
            done = self.reuse.get(name)
            if done is not None and done.params.get("seed", kw.get("seed")) == kw.get("seed") and done.candidates:
                self.members.append(done)
            else:
                self.members.append(cls(**kw).fit(data, X))
        self.reuse = {}
        self.candidates = list(self.members[0].candidates)
        return self

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        if not self.members:
            raise RuntimeError("ensemble router is not fitted")
        preds = [m.predict(queries, X) for m in self.members]
        order = [c.id for c in self.candidates]
        score = np.zeros((len(queries), len(order)))
        cost = np.zeros_like(score)
        for w, p in zip(self.weights, preds):
            pos = {c.id: j for j, c in enumerate(p.candidates)}
            idx = [pos[c] for c in order]
            score += w * p.score[:, idx]
            cost += w * p.cost[:, idx]
        return Prediction(list(self.candidates), score, cost)
