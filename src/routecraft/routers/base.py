"""The router contract: one way to ask for a decision, three kinds of router behind it.

``Router`` decides: ``decide(queries, X, lam, max_cost)`` for a batch of queries (a queries table and one feature row
per query), ``decide_one(text, features, lam=..., max_cost=..., **context)`` for one query as a server sees it (the
routing text, its feature row, and what else is known: ``task``, ``input_chars``, ``max_tokens``), and is saved with
``save(dir)`` and restored with ``routecraft.routers.registry.load_router(dir)``. A decision is under a trade-off λ
(maximise predicted score − λ·cost, cost in USD) or a cost cap. Constructors only store settings.

The kinds (each module of ``routers/`` subclasses one):

* ``TabularRouter`` — fit on an outcomes table (``fit``), predicts a score and a cost for every candidate
  (``predict``); its decision is the best candidate of that prediction. Every table router (baselines, kNN, MLP, MF,
  linear, ensemble, RTR, R2-Router, joint) is one.
* ``ObservingRouter`` — fit on an outcomes table *with the candidates' answers*; its decision is a plan of
  consultations (consult, look at the answers, accept or escalate: ``Decision.plan``), replayed offline on logged
  answers (``replay``) and executed online by the gateway (``cascade``, ``sequential``).
* ``MultiStepRouter`` — trained from its own config on the live pool (``train_from_config``); it decides by running
  on the pool (Router-R1's multi-round trajectory, R2-Reasoner's plan of subtasks), and the decision carries what
  ran (``Decision.plan``).

The heuristic router (``routers/heuristic.py``) is a plain ``Router``: it predicts from the pool's sizes and prices,
with no table to fit on.

A decision's candidate table and its order have one builder, ``Decision.from_prediction``: the chosen candidate first
(``choose``), then under λ by score − λ·cost, then cost, then candidate order; under a cost cap the candidates that fit
by score, then the rest by cost. The CLI, the routers and the gateway (which drops candidates it cannot run with
``Decision.restricted``) all use it.

Artifacts (format 2, ``routers/artifact.py``): ``save(dir)`` writes ``router.json`` (name, format version, params,
candidates, encoder, library versions, and the state as a JSON tree) and ``state.safetensors`` (every array of the
state). ``load_router`` never unpickles: objects in a state are rebuilt only for the classes on
``artifact.ALLOWED``, and an old pickled artifact (``state.joblib``, format 1) is refused with a message saying how
to re-train or convert it (``routecraft artifact convert``).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import numpy as np
import pandas as pd

from routecraft.core.sweep import choose_indices
from routecraft.data.schema import Candidate, RoutingData
from routecraft.routers.artifact import FORMAT_VERSION, write_artifact
from routecraft.routers.observations import Observations, Replay

ARTIFACT_VERSION = FORMAT_VERSION


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

    def row(self, i: int) -> "Prediction":
        """The prediction of query ``i`` alone (a one-row view)."""
        return Prediction(self.candidates, self.score[i:i + 1], self.cost[i:i + 1],
                          None if self.tokens is None else self.tokens[i:i + 1])

    def columns(self, idx: Sequence[int]) -> "Prediction":
        """The predictions of candidates ``idx`` only, in that order."""
        idx = list(idx)
        return Prediction([self.candidates[j] for j in idx], self.score[:, idx], self.cost[:, idx],
                          None if self.tokens is None else self.tokens[:, idx])


def choose(pred: Prediction, lam: float = 0.0, max_cost: float | None = None) -> np.ndarray:
    """Index of the chosen candidate per query.

    With ``max_cost``: the highest predicted score among candidates whose predicted cost is within the
    cap (ties broken by lower cost); the cheapest candidate where none fits. Otherwise the maximum of
    predicted score − λ·predicted cost (ties broken by lower cost, then by candidate order). The rule itself is
    :func:`routecraft.core.sweep.choose_indices`, on the prediction's arrays.
    """
    return choose_indices(pred.score, pred.cost, lam=lam, max_cost=max_cost)


def candidate_order(score: np.ndarray, cost: np.ndarray, lam: float = 0.0, max_cost: float | None = None,
                    chosen: int | None = None) -> list[int]:
    """One query's candidates (column indices), best first: ``chosen`` (default: ``choose``'s pick), then with
    ``max_cost`` the others that fit by predicted score, then the rest by predicted cost; otherwise by score − λ·cost,
    then cost (λ = ∞: by cost, then score); ties by candidate order."""
    score, cost = np.asarray(score, dtype=float), np.asarray(cost, dtype=float)
    index = np.arange(len(score))
    if max_cost is not None:
        fits = cost <= max_cost
        order = np.lexsort((index, np.where(fits, -score, cost), ~fits))
    elif math.isinf(lam):
        order = np.lexsort((index, -score, cost))
    else:
        order = np.lexsort((index, cost, -(score - lam * cost)))
    if chosen is None:
        chosen = (int(order[0]) if math.isinf(lam) and max_cost is None
                  else int(choose_indices(score[None, :], cost[None, :], lam=lam, max_cost=max_cost)[0]))
    return [chosen] + [int(k) for k in order if k != chosen]


def candidate_row(cand: Candidate, score: float, cost: float, tokens: float | None = None, **extra: Any) -> dict:
    """One row of a decision's candidate table."""
    return {"candidate": cand.id, "model": cand.model, "strategy": cand.strategy, "budget": cand.budget,
            "predicted_score": float(score), "predicted_cost": float(cost),
            **({"predicted_tokens": float(tokens)} if tokens is not None else {}), **extra}


@dataclass
class Decision:
    """What a router chose for one query, and why."""

    candidate: Candidate
    predicted_score: float
    predicted_cost: float
    table: list[dict] = field(default_factory=list)  # every candidate's predictions, best first
    plan: Any = None  # observed steps: a plan of consultations, or what a multi-step router ran on the pool
    #: the one-query prediction the table was built from (None: a decision without per-candidate predictions)
    prediction: Optional[Prediction] = field(default=None, repr=False, compare=False)
    #: the table's candidates, in its order (empty: a decision without per-candidate predictions)
    ranked: list[Candidate] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def from_prediction(cls, pred: Prediction, i: int = 0, lam: float = 0.0, max_cost: float | None = None,
                        plan: Any = None, chosen: int | None = None) -> "Decision":
        """The decision for query ``i`` of ``pred``: the chosen candidate (``chosen``, default ``choose``'s pick)
        and every candidate's predictions in ``candidate_order``."""
        one = pred.row(i)
        s, c = one.score[0], one.cost[0]
        t = None if one.tokens is None else one.tokens[0]
        order = candidate_order(s, c, lam, max_cost, chosen)
        table = [candidate_row(one.candidates[k], s[k], c[k], None if t is None else t[k]) for k in order]
        j = order[0]
        return cls(one.candidates[j], float(s[j]), float(c[j]), table, plan, one,
                   [one.candidates[k] for k in order])

    def as_prediction(self) -> Prediction:
        """The prediction behind the table; for a decision without one, the decided candidate alone."""
        if self.prediction is not None:
            return self.prediction
        return Prediction([self.candidate], np.array([[self.predicted_score]]), np.array([[self.predicted_cost]]))

    def order(self) -> list[Candidate]:
        """The candidates to try, best first (the table's order; the decided candidate alone without a table)."""
        return list(self.ranked) if self.ranked else [self.candidate]

    def restricted(self, keep: Sequence[int], lam: float = 0.0, max_cost: float | None = None) -> "Decision":
        """The decision among the candidates ``keep`` (column indices of ``as_prediction()``) only, chosen and
        ordered again by the same rule; the plan is kept."""
        return Decision.from_prediction(self.as_prediction().columns(keep), 0, lam, max_cost, plan=self.plan)

    def to_dict(self) -> dict:
        return {"model": self.candidate.model, "strategy": self.candidate.strategy,
                "budget": self.candidate.budget, "candidate": self.candidate.id,
                "predicted_score": self.predicted_score, "predicted_cost": self.predicted_cost,
                "table": self.table, **({"plan": self.plan} if self.plan is not None else {})}


def decisions(pred: Prediction, lam: float = 0.0, max_cost: float | None = None) -> list[Decision]:
    """One decision per query row of ``pred``."""
    return [Decision.from_prediction(pred, i, lam, max_cost) for i in range(pred.score.shape[0])]


def one_query(text: str, query_id: str = "q0", task: str = "general", **context: Any) -> pd.DataFrame:
    """The queries table of a single query (``decide_one`` of routers that decide on tables)."""
    return pd.DataFrame({"query_id": [query_id], "text": [text], "task": [task], "gold": [None],
                         **{k: [v] for k, v in context.items()}})


class Router(ABC):
    """Base class of every router. Subclasses set ``name`` and subclass one of the kinds below."""

    name: ClassVar[str] = "router"
    #: whether the router reads query features (embeddings)
    uses_features: ClassVar[bool] = True
    #: routers that see the test outcomes (the oracle); the bench fits them on the test split
    is_oracle: ClassVar[bool] = False
    #: whether the constructor takes a ``seed`` (set from its signature unless a class says)
    takes_seed: ClassVar[bool] = False
    #: ``decide_one`` takes microseconds and runs no torch: a server may call it on its event loop
    light: ClassVar[bool] = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "takes_seed" not in cls.__dict__:
            cls.takes_seed = "seed" in inspect.signature(cls.__init__).parameters

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.candidates: list[Candidate] = []
        self.encoder: str | None = None

    # ---- deciding -----------------------------------------------------------------------------------------------
    @abstractmethod
    def decide(self, queries: pd.DataFrame, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> list[Decision]:
        """One decision per row of ``queries`` (``X``: one feature row per query, for routers with features)."""

    def decide_one(self, text: str, features: np.ndarray | None = None, *, lam: float = 0.0,
                   max_cost: float | None = None, **context: Any) -> Decision:
        """The decision for one query: its routing ``text``, its feature row, and what is known of it in
        ``context`` (``task``, ``input_chars``: the whole conversation's length, ``max_tokens``: the output cap,
        ``query_id``). The default decides on a one-row queries table."""
        X = None if features is None else np.asarray(features).reshape(1, -1)
        return self.decide(one_query(text, **context), X, lam=lam, max_cost=max_cost)[0]

    # ---- artifacts ----------------------------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything learned, for ``save``: settings, arrays, routers, and objects of the classes on
        ``routers.artifact.ALLOWED`` (see that module). Override to leave out caches or to make it plainer."""
        return {k: v for k, v in self.__dict__.items() if k not in ("params", "candidates", "encoder")}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, path: str | Path) -> Path:
        """Write the artifact (format 2: ``router.json`` + ``state.safetensors``) to folder ``path``."""
        return write_artifact(self, path, router_type=Router)


class TabularRouter(Router):
    """Fit on an outcomes table; predicts a score and a cost for every candidate; decides on that prediction."""

    @abstractmethod
    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "TabularRouter":
        """Learn from ``data`` (complete outcomes); ``X`` has one feature row per ``data.queries`` row."""

    @abstractmethod
    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        """Predicted score and cost of every candidate for each query row."""

    def decide(self, queries: pd.DataFrame, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> list[Decision]:
        return decisions(self.predict(queries, X), lam, max_cost)

    def use_fitted(self, fitted: dict[str, "TabularRouter"]) -> None:
        """Routers already fitted on the data this one is about to be fit on (same split and seed, default
        parameters), by registry name: a router built from others (the ensemble) takes them instead of fitting its
        own. The default uses none."""


class ObservingRouter(Router):
    """Consults candidates and looks at their answers before it decides (``cascade``, ``sequential``).

    Fit on an outcomes table with the candidates' extracted answers (``prediction``). Its decision is a *plan* of
    consultations (``Decision.plan``: ``kind`` "cascade" or "sequential"), the same for a λ (or cost cap) whatever the
    query, or, where deciding up front is best for the trade-off, an up-front decision. Offline,
    ``replay(data, X, lam, max_cost)`` runs the plans on logged answers (the bench's evaluation); online the gateway
    executes them (``routecraft.serve.consult``)."""

    @abstractmethod
    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "ObservingRouter":
        """Learn from ``data`` (complete outcomes with answers); ``X``: one feature row per query."""

    @abstractmethod
    def replay(self, data: RoutingData, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> Replay:
        """Per query of ``data``: the score of the answer returned and the cost of every call made, on the logs."""

    def observations(self, data: RoutingData) -> Observations:
        return Observations.from_data(data, self.candidates, router=self.name)

    @abstractmethod
    def upfront_decision(self, text: str, features: np.ndarray | None = None, *, lam: float = 0.0,
                         max_cost: float | None = None, **context: Any) -> Decision:
        """The decision without consulting anything (one candidate up front, with a candidate table): what the
        gateway runs for a conversation whose answers could not be compared (open chat)."""


class MultiStepRouter(Router):
    """Trained from its own config on the live pool; decides by running on the pool (Router-R1, R2-Reasoner).

    ``train_from_config`` trains and writes the artifact (``routecraft train --router NAME``); ``from_artifact`` loads
    one (finding what moved with it); ``run(question)`` executes one question and ``summary``/``format`` show what
    ran (``routecraft route``); ``decide`` runs each query and puts what ran in ``Decision.plan``. Policies and servers
    are loaded or started on the first run (never in the constructor) inside an ``ExitStack`` that ``close()``
    unwinds. Subclasses implement ``_start(stack, base_urls)`` (load policies, start or connect servers; return the
    runner), ``run_batch``, ``decision`` and ``pool_names``."""

    uses_features = False

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._runner: Any = None
        self._stack: Optional[contextlib.ExitStack] = None

    # ---- training and loading ----------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def train_from_config(cls, config: str | Path | None, out: str | Path, overrides: dict | None = None,
                          resume: bool = True) -> Path:
        """Train from config YAML ``config`` (None: the built-in one) with nested ``overrides``; write the artifact
        to ``out`` and return it."""

    @classmethod
    @abstractmethod
    def from_artifact(cls, path: str | Path) -> "MultiStepRouter":
        """The router saved in artifact folder ``path``."""

    # ---- running -----------------------------------------------------------------------------------------------
    def _start(self, stack: contextlib.ExitStack, base_urls: Optional[dict[str, str]]) -> Any:
        """Load what routing needs, registering anything to stop on ``stack``; return the runner."""
        raise NotImplementedError

    def ensure_running(self, base_urls: Optional[dict[str, str]] = None) -> Any:
        """The runner, started on first use (``base_urls``: servers to use instead of starting any)."""
        if self._runner is not None:
            return self._runner
        stack = contextlib.ExitStack()
        try:
            runner = self._start(stack, base_urls)
        except BaseException:
            stack.close()
            raise
        self._stack, self._runner = stack, runner
        return runner

    def connect(self, base_urls: dict[str, str]) -> "MultiStepRouter":
        """Use these servers (model name → base_url) instead of starting or looking up any."""
        self.ensure_running(base_urls)
        return self

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = None
        self._runner = None

    @abstractmethod
    def run_batch(self, questions: Sequence[str]) -> list:
        """Run each question on the pool; one result per question."""

    def run(self, question: str) -> Any:
        return self.run_batch([question])[0]

    def summary(self, result: Any) -> dict:
        """What ran for one question, JSON-ready."""
        return result

    def format(self, summary: dict) -> str:
        """``summary`` for a person to read."""
        return json.dumps(summary, indent=2, default=str)

    @abstractmethod
    def decision(self, result: Any, lam: float = 0.0, max_cost: float | None = None) -> Decision:
        """The decision of one run (``result``); ``plan`` holds what ran."""

    def decide(self, queries: pd.DataFrame, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> list[Decision]:
        """Run each query on the pool. ``lam``/``max_cost`` are not used — the cost trade-off was fixed in training —
        and are recorded in each plan."""
        if "text" not in queries:
            raise ValueError(f"{self.name} decide: queries need a 'text' column")
        results = self.run_batch(queries["text"].astype(str).tolist())
        return [self.decision(r, lam=lam, max_cost=max_cost) for r in results]

    def decide_one(self, text: str, features: np.ndarray | None = None, *, lam: float = 0.0,
                   max_cost: float | None = None, **context: Any) -> Decision:
        return self.decision(self.run(text), lam=lam, max_cost=max_cost)

    # ---- artifacts: everything is in the params (policy folders, config) -------------------------------------
    @abstractmethod
    def pool_names(self) -> list[str]:
        """The pool models this router routes to (its candidates), from its config."""

    def state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        return None

    def save(self, path: str | Path) -> Path:
        if not self.candidates:
            try:
                self.candidates = [Candidate(n) for n in self.pool_names()]
            except Exception:  # the pool may not be resolvable here; the artifact stays loadable
                self.candidates = []
        return super().save(path)
