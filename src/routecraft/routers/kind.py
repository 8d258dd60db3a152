"""``kind`` router: the best candidate for each kind of query, learnt from outcomes.

The kind of a query is what the gateway detects from its routing text (``query_kind``: ``choice`` when it lists
options "(A) …", ``code`` when it asks for a program, ``numeric`` for arithmetic, else ``qa``). Fit on an outcomes
table, the router keeps, for every kind and candidate, the mean training score and cost over the training queries
of that kind, shrunk toward the candidate's mean over all training queries by ``prior`` pseudo-queries::

    score[kind, c] = (Σ_{q of kind} score[q, c] + prior · mean_q score[q, c]) / (n_kind + prior)

(cost and output tokens alike). A kind with no training query predicts the overall means. The kind is always
the one detected from the text, in training and in serving: a task named in the request (or the dataset's task
label in the bench) is not read, so the bench measures what the gateway does when no task is named. The decision is the
usual one (maximise score − λ·cost, or the best score within a cost cap), so one table serves every trade-off.

It is a cluster router whose clusters are the detected kinds rather than k-means cells of an embedding: it reads
no embedding (no encoder to load, microseconds per query), and what it learns transfers to any traffic the kind
detector sees. Its queries' text is :func:`routecraft.data.query_text.query_texts` (options appended), the text
the gateway routes on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from routecraft.data.query_text import query_texts
from routecraft.data.schema import RoutingData
from routecraft.routers.base import Decision, Prediction, TabularRouter
from routecraft.routers.heuristic import QUERY_KINDS, query_kind
from routecraft.routers.validation import check_fitted, query_ids, training_matrices


class KindRouter(TabularRouter):
    """Per-kind mean training score and cost of every candidate, shrunk toward the overall mean by ``prior``
    pseudo-queries (see the module docstring)."""

    name = "kind"
    uses_features = False
    light = True

    def __init__(self, prior: float = 5.0) -> None:
        try:
            prior = float(prior)
        except (TypeError, ValueError):
            raise ValueError(f"kind router: prior must be a number >= 0, got {prior!r}") from None
        if not prior >= 0 or not np.isfinite(prior):
            raise ValueError(f"kind router: prior must be a finite number >= 0, got {prior!r}")
        super().__init__(prior=prior)

    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "KindRouter":
        m = training_matrices(data, self.name)
        self.candidates = list(m.candidates)
        texts = dict(zip(data.queries["query_id"].astype(str), query_texts(data.queries)))
        kinds = np.array([query_kind(texts[str(q)]) for q in m.query_ids], dtype=object)
        self.kinds_ = list(QUERY_KINDS)
        prior = self.params["prior"]
        tok = m.output_tokens
        tables = {"score": m.score.astype(np.float64), "cost": m.cost.astype(np.float64)}
        if tok is not None and not np.isnan(tok).any():
            tables["tokens"] = tok.astype(np.float64)
        self.counts_ = np.array([int((kinds == k).sum()) for k in self.kinds_], dtype=np.int64)
        for key, arr in tables.items():
            overall = arr.mean(axis=0)
            rows = []
            for k, n in zip(self.kinds_, self.counts_):
                total = arr[kinds == k].sum(axis=0)
                rows.append(overall if n + prior == 0 else (total + prior * overall) / (n + prior))
            rows.append(overall)  # the last row: a kind this artifact does not know
            setattr(self, f"{key}_", np.vstack(rows))
        if "tokens" not in tables:
            self.tokens_ = None
        return self

    def set_state(self, state: dict) -> None:
        """A saved state, checked: unique kind names, a count per kind, and (kinds + 1) × candidates finite tables
        (an artifact edited by hand fails here, on load, not on the first request)."""
        kinds = state.get("kinds_")
        if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds) \
                or len(set(kinds)) != len(kinds):
            raise ValueError("kinds_ must be a list of unique kind names")
        counts = np.asarray(state.get("counts_"))
        if counts.shape != (len(kinds),) or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
            raise ValueError(f"counts_ must be {len(kinds)} counts >= 0, one per kind")
        shape = (len(kinds) + 1, len(self.candidates))
        tables = {}
        for key in ("score_", "cost_", "tokens_"):
            arr = state.get(key)
            if arr is None and key == "tokens_":
                tables[key] = None
                continue
            arr = np.asarray(arr)
            if arr.shape != shape or not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
                raise ValueError(f"{key} must be a finite {shape[0]} x {shape[1]} table (kinds + 1 rows, one "
                                 f"column per candidate)")
            tables[key] = arr.astype(np.float64)
        self.kinds_, self.counts_ = list(kinds), counts.astype(np.int64)
        for key, arr in tables.items():
            setattr(self, key, arr)

    def kind_counts(self) -> dict[str, int]:
        """Training queries per detected kind."""
        check_fitted(self, "counts_")
        return {k: int(n) for k, n in zip(self.kinds_, self.counts_)}

    def _rows(self, texts: list[str]) -> np.ndarray:
        at = {k: i for i, k in enumerate(self.kinds_)}
        return np.array([at.get(query_kind(t), len(self.kinds_)) for t in texts], dtype=int)

    def _prediction(self, rows: np.ndarray) -> Prediction:
        return Prediction(list(self.candidates), self.score_[rows], self.cost_[rows],
                          None if self.tokens_ is None else self.tokens_[rows])

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        check_fitted(self, "score_")
        query_ids(queries, self.name)
        return self._prediction(self._rows(query_texts(queries)))

    def decide_one(self, text: str, features: np.ndarray | None = None, *, lam: float = 0.0,
                   max_cost: float | None = None, **context: Any) -> Decision:
        """The decision for one routing text (the conversation's text, options inline), without a queries table:
        a regex and a table row. ``context`` (a task the client named, among others) is not read: the kind is
        always the one detected from the text, as in training."""
        check_fitted(self, "score_")
        return Decision.from_prediction(self._prediction(self._rows([text or ""])), 0, lam=lam, max_cost=max_cost)
