"""The one router interface.

A router is fit on an outcomes table (plus one feature row per query), predicts for new queries a
score and a cost for every candidate, and decides under a trade-off λ (maximise predicted score − λ·cost,
cost in USD) or under a cost cap. Constructors only store settings; all work happens in ``fit``.

Artifacts: ``save(dir)`` writes ``router.json`` (name, format version, params, candidates, encoder) and
``state.joblib``; ``routecraft.routers.registry.load_router(dir)`` restores any registered router.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
import pandas as pd

from routecraft.core.sweep import choose_indices
from routecraft.data.schema import Candidate, RoutingData

ARTIFACT_VERSION = 1


@dataclass
class Prediction:
    """Per-query, per-candidate predictions. Arrays are (n_queries, n_candidates)."""

    candidates: list[Candidate]
    score: np.ndarray
    cost: np.ndarray
    tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.score.shape != self.cost.shape or self.score.shape[1] != len(self.candidates):
            raise ValueError(f"prediction shapes disagree: score {self.score.shape}, cost {self.cost.shape}, "
                             f"{len(self.candidates)} candidates")


@dataclass
class Decision:
    """What a router chose for one query, and why."""

    candidate: Candidate
    predicted_score: float
    predicted_cost: float
    table: list[dict] = field(default_factory=list)  # every candidate's predictions, best first
    plan: Any = None  # multi-step routers (Router-R1, R2-Reasoner) put their plan here

    def to_dict(self) -> dict:
        return {"model": self.candidate.model, "strategy": self.candidate.strategy,
                "budget": self.candidate.budget, "candidate": self.candidate.id,
                "predicted_score": self.predicted_score, "predicted_cost": self.predicted_cost,
                "table": self.table, **({"plan": self.plan} if self.plan is not None else {})}


def choose(pred: Prediction, lam: float = 0.0, max_cost: float | None = None) -> np.ndarray:
    """Index of the chosen candidate per query.

    With ``max_cost``: the highest predicted score among candidates whose predicted cost is within the
    cap (ties broken by lower cost); the cheapest candidate where none fits. Otherwise the maximum of
    predicted score − λ·predicted cost (ties broken by lower cost, then by candidate order). The rule itself is
    :func:`routecraft.core.sweep.choose_indices`, on the prediction's arrays.
    """
    return choose_indices(pred.score, pred.cost, lam=lam, max_cost=max_cost)


class Router(ABC):
    """Base class. Subclasses set ``name`` and implement ``fit`` and ``predict``."""

    name: ClassVar[str] = "router"
    #: whether ``fit``/``predict`` use query features (embeddings)
    uses_features: ClassVar[bool] = True
    #: routers that see the test outcomes (the oracle); the bench fits them on the test split
    is_oracle: ClassVar[bool] = False
    #: multi-step routers (Router-R1, R2-Reasoner) are not fit on an outcomes table: they train from their own
    #: config on the pool (``train_cli``) and show a whole trajectory when routing (``route_cli``)
    trains_itself: ClassVar[bool] = False

    @classmethod
    def train_cli(cls, config: str | Path | None, out: str | Path, overrides: dict | None = None,
                  resume: bool = True) -> Path:
        raise NotImplementedError(f"{cls.name} is fit on an outcomes table (routecraft train --data ...)")

    @classmethod
    def route_cli(cls, artifact: str | Path, question: str) -> tuple[dict, str]:
        """(JSON-ready summary, human-readable text) of routing one question with a saved artifact."""
        raise NotImplementedError(f"{cls.name} routes by predicted scores (no trajectory)")

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.candidates: list[Candidate] = []
        self.encoder: str | None = None

    # ---- learning -----------------------------------------------------------------------------
    @abstractmethod
    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "Router":
        """Learn from ``data`` (complete outcomes); ``X`` has one feature row per ``data.queries`` row."""

    @abstractmethod
    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        """Predicted score and cost of every candidate for each query row."""

    # ---- deciding -----------------------------------------------------------------------------
    def decide(self, queries: pd.DataFrame, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> list[Decision]:
        pred = self.predict(queries, X)
        idx = choose(pred, lam=lam, max_cost=max_cost)
        out = []
        for i, j in enumerate(idx):
            order = np.argsort(-(pred.score[i] - lam * pred.cost[i]), kind="stable")
            table = [{"candidate": pred.candidates[k].id, "model": pred.candidates[k].model,
                      "strategy": pred.candidates[k].strategy, "budget": pred.candidates[k].budget,
                      "predicted_score": float(pred.score[i, k]), "predicted_cost": float(pred.cost[i, k]),
                      **({"predicted_tokens": float(pred.tokens[i, k])} if pred.tokens is not None else {})}
                     for k in order]
            out.append(Decision(pred.candidates[j], float(pred.score[i, j]), float(pred.cost[i, j]), table))
        return out

    # ---- artifacts ----------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything learned, for ``save``. Override when attributes are not picklable."""
        return {k: v for k, v in self.__dict__.items() if k not in ("params", "candidates", "encoder")}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"router": self.name, "format_version": ARTIFACT_VERSION, "params": self.params,
                "candidates": [c.id for c in self.candidates], "encoder": self.encoder}
        (path / "router.json").write_text(json.dumps(meta, indent=2, default=str))
        joblib.dump(self.state(), path / "state.joblib")
        return path
