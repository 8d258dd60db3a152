"""Token budgets, token counts and prices of (model, strategy, budget) candidates: what the reasoning-aware routers
(``rtr``, ``r2``, ``joint``) share.

* **Long outcomes**: one row per logged (query, candidate) cell, so that a router can learn from incomplete tables
  (a cold-started candidate labelled on only k queries).
* **Descriptions**: model descriptions come from a pool YAML (``load_pool(pool).get(model).description``; the
  model's name where the model is not in the pool); strategy descriptions from ``get_strategy(name).description``
  (the ``"default"`` strategy gets :data:`DEFAULT_STRATEGY_TEXT`). A limited output budget adds its length
  instruction (the strategy's ``budget_text``) to the strategy's text. Descriptions are embedded with a frozen
  sentence encoder through :class:`~routecraft.data.features.EmbeddingCache`.
* **Prices** (:class:`PriceModel`): USD per input and per output token for each model, either fitted to the training
  outcomes (non-negative least squares of ``cost_usd`` on ``input_tokens`` and ``output_tokens``, per model) or read
  from a pool YAML. Predicted cost = predicted input tokens × input price + predicted output tokens × output price.
* **Input tokens** (:class:`InputTokenModel`): per candidate, a least-squares line from the query's character count
  to its logged input tokens (prompts differ by strategy and budget instruction, and grow with the question).
* **Deciding**: :class:`ReasoningDecisions` adds a hard output-token cap (``decide(..., max_tokens=)``) and
  R2-Router's λ' form ``(1−λ')·Q − λ'·C`` (``decide_r2``; the same family as ``Q − λ·C`` with λ = λ'/(1−λ')).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from routecraft.core import metrics as M
from routecraft.core.sweep import lambda_grid
from routecraft.data.features import EmbeddingCache
from routecraft.data.query_text import query_texts
from routecraft.data.schema import DEFAULT, Candidate, RoutingData, candidate_id
from routecraft.pool.config import load_pool
from routecraft.routers.base import Decision, Prediction, choose
from routecraft.strategies import get_strategy

DEFAULT_STRATEGY_TEXT = ("Default prompting: the question exactly as given, with no added reasoning instruction and "
                         "no length limit.")
#: The strategy whose length instruction a strategy unknown to this process gets (a published log's own label).
FALLBACK_STRATEGY = "direct"


# ---- long outcomes --------------------------------------------------------------------------------------------
@dataclass
class LongOutcomes:
    """The logged cells of ``data`` as parallel arrays (rows = cells), indexed into ``query_ids``/``candidates``."""

    query_ids: list[str]
    candidates: list[Candidate]
    q: np.ndarray        # (rows,) query index
    c: np.ndarray        # (rows,) candidate index
    score: np.ndarray    # (rows,)
    out_tokens: np.ndarray  # (rows,) NaN where unknown
    in_tokens: np.ndarray   # (rows,) NaN where unknown
    cost: np.ndarray     # (rows,)
    model: np.ndarray    # (rows,) model name per row (object)

    def wide(self, values: np.ndarray) -> np.ndarray:
        """(n_queries, n_candidates) array of ``values`` with NaN where a cell is not logged."""
        out = np.full((len(self.query_ids), len(self.candidates)), np.nan)
        out[self.q, self.c] = values
        return out


def long_outcomes(data: RoutingData, who: str, candidates: Sequence[Candidate] | None = None) -> LongOutcomes:
    """Cells of ``data`` (optionally only ``candidates``); errors name what is missing."""
    if not isinstance(data, RoutingData):
        raise TypeError(f"{who}.fit needs a RoutingData, got {type(data).__name__}")
    if len(data.queries) == 0 or len(data.outcomes) == 0:
        raise ValueError(f"{who}.fit: the training data has no queries or no outcomes")
    cands = list(candidates) if candidates is not None else data.candidates
    if not cands:
        raise ValueError(f"{who}.fit: the training data has no candidates")
    qids = data.queries["query_id"].astype(str).tolist()
    qpos = {q: i for i, q in enumerate(qids)}
    cpos = {c.id: j for j, c in enumerate(cands)}
    o = data.outcomes
    cid = [candidate_id(m, s, None if pd.isna(b) else b) for m, s, b in zip(o["model"], o["strategy"], o["budget"])]
    cj = np.array([cpos.get(x, -1) for x in cid], dtype=np.int64)
    keep = cj >= 0
    o = o[keep]
    qi = np.array([qpos[q] for q in o["query_id"].astype(str)], dtype=np.int64)
    return LongOutcomes(qids, cands, qi, cj[keep], o["score"].to_numpy(np.float64),
                        o["output_tokens"].to_numpy(np.float64, na_value=np.nan),
                        o["input_tokens"].to_numpy(np.float64, na_value=np.nan),
                        o["cost_usd"].to_numpy(np.float64), o["model"].astype(str).to_numpy(object))


def query_chars(queries: pd.DataFrame) -> np.ndarray:
    """The length of each query's prompt, what its input tokens grow with: ``input_chars`` where the table has it
    (the gateway passes the whole conversation's), else the routing text with its options (``query_texts``: what
    the gateway sees of a multiple-choice question). NaN without a text."""
    if "text" not in queries.columns:
        return np.full(len(queries), np.nan)
    chars = np.array([len(t) for t in query_texts(queries)], dtype=np.float64)
    if "input_chars" in queries.columns:
        given = pd.to_numeric(queries["input_chars"], errors="coerce").to_numpy(np.float64)
        chars = np.where(np.isfinite(given), given, chars)
    return chars


# ---- descriptions ---------------------------------------------------------------------------------------------
def model_descriptions(models: Iterable[str], pool: str | None) -> dict[str, str]:
    """Description of each model from the pool YAML; the model's name where the pool does not list it (or
    ``pool`` is None)."""
    models = list(models)
    out = {m: m for m in models}
    if pool:
        p = load_pool(pool)
        for m in models:
            if m in p:
                out[m] = p.get(m).description
    return out


def strategy_description(strategy: str, budget: int | None = None, template: str = "paper") -> str:
    """The strategy's description (``DEFAULT_STRATEGY_TEXT`` for "default"; the name for an unknown strategy),
    followed by the length instruction for a limited ``budget``."""
    text = strategy_text(strategy)
    if budget is not None:
        text += " Length limit: " + budget_instruction(strategy, budget, template)
    return text


def strategy_text(strategy: str) -> str:
    if strategy == DEFAULT:
        return DEFAULT_STRATEGY_TEXT
    try:
        return get_strategy(strategy).description
    except ValueError:
        return strategy


def budget_instruction(strategy: str, budget: int, template: str = "paper") -> str:
    """The length-constrained instruction a strategy adds for ``budget`` (``template``: a BUDGET_TEMPLATES preset
    or a text with ``{k}``)."""
    try:
        s = get_strategy(strategy, budget_instruction=template)
    except ValueError:
        s = get_strategy(FALLBACK_STRATEGY, budget_instruction=template)
    return s.budget_text(int(budget)) or ""


def embed_descriptions(texts: Sequence[str], encoder: str) -> np.ndarray:
    """Frozen sentence embeddings of ``texts`` (cached on disk)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return EmbeddingCache(encoder).embed(list(texts)).astype(np.float32)


# ---- prices and input tokens ----------------------------------------------------------------------------------
class PriceModel:
    """USD per input token and per output token for each model.

    ``source="data"``: per model, non-negative least squares of the logged ``cost_usd`` on (``input_tokens``,
    ``output_tokens``) over all its cells (output tokens alone where input tokens are not logged); the relative
    residual is kept in ``fit_error_``. ``source="pool"``: the pool YAML's prices, falling back to the data fit for
    models the pool does not list (recorded in ``sources_``).
    """

    def __init__(self, source: str = "data", pool: str | None = "local") -> None:
        if source not in ("data", "pool"):
            raise ValueError(f"prices must be 'data' or 'pool', got {source!r}")
        self.source, self.pool = source, pool
        self.price_in_: dict[str, float] = {}
        self.price_out_: dict[str, float] = {}
        self.sources_: dict[str, str] = {}
        self.fit_error_: dict[str, float] = {}

    def fit(self, long: LongOutcomes, who: str) -> "PriceModel":
        pool = None
        if self.source == "pool":
            pool = load_pool(self.pool)
        for m in sorted(set(long.model)):
            if pool is not None and m in pool:
                pm = pool.get(m)
                self.price_in_[m], self.price_out_[m] = pm.price_in_per_m / 1e6, pm.price_out_per_m / 1e6
                self.sources_[m] = f"pool {pool.name}"
                continue
            rows = long.model == m
            self._fit_one(m, long.in_tokens[rows], long.out_tokens[rows], long.cost[rows], who)
            self.sources_[m] = "data"
        return self

    def _fit_one(self, model: str, tin: np.ndarray, tout: np.ndarray, cost: np.ndarray, who: str) -> None:
        from scipy.optimize import nnls

        ok = np.isfinite(tout) & np.isfinite(cost)
        if not ok.any():
            raise ValueError(f"{who}: model {model!r} has no logged output_tokens; the reasoning routers predict "
                             "output tokens and need them in the outcomes table (field 'output_tokens')")
        has_in = ok & np.isfinite(tin)
        if has_in.sum() >= max(2, 0.9 * ok.sum()):
            A = np.stack([tin[has_in], tout[has_in]], axis=1)
            y = cost[has_in]
        else:
            A = np.stack([np.zeros(ok.sum()), tout[ok]], axis=1)
            y = cost[ok]
        scale = np.maximum(A.max(axis=0), 1.0)
        coef, _ = nnls(A / scale, y)
        coef = coef / scale
        self.price_in_[model], self.price_out_[model] = float(coef[0]), float(coef[1])
        resid = y - A @ coef
        self.fit_error_[model] = float(np.abs(resid).sum() / max(np.abs(y).sum(), 1e-300))

    def add(self, other: "PriceModel") -> None:
        for m in other.price_out_:
            if m not in self.price_out_:
                self.price_in_[m], self.price_out_[m] = other.price_in_[m], other.price_out_[m]
                self.sources_[m] = other.sources_.get(m, "data")
                if m in other.fit_error_:
                    self.fit_error_[m] = other.fit_error_[m]

    def arrays(self, candidates: Sequence[Candidate]) -> tuple[np.ndarray, np.ndarray]:
        pin = np.array([self.price_in_[c.model] for c in candidates], dtype=np.float64)
        pout = np.array([self.price_out_[c.model] for c in candidates], dtype=np.float64)
        return pin, pout


class InputTokenModel:
    """Per candidate: input tokens ≈ a + b · (characters of the query text), least squares on the logged cells
    (the mean where the lengths do not vary; 0 where input tokens are not logged)."""

    def fit(self, long: LongOutcomes, chars: np.ndarray) -> "InputTokenModel":
        C = len(long.candidates)
        self.coef_ = np.zeros((C, 2))
        for j in range(C):
            rows = (long.c == j) & np.isfinite(long.in_tokens)
            if not rows.any():
                continue
            x, y = chars[long.q[rows]], long.in_tokens[rows]
            fin = np.isfinite(x)
            if fin.sum() >= 2 and np.ptp(x[fin]) > 0:
                b, a = np.polyfit(x[fin], y[fin], 1)
                self.coef_[j] = (a, max(b, 0.0)) if b >= 0 else (float(y.mean()), 0.0)
            else:
                self.coef_[j] = (float(y.mean()), 0.0)
        self.mean_chars_ = float(np.nanmean(chars)) if np.isfinite(chars).any() else 0.0
        return self

    def predict(self, chars: np.ndarray) -> np.ndarray:
        x = np.where(np.isfinite(chars), chars, self.mean_chars_)
        return np.maximum(self.coef_[:, 0][None, :] + x[:, None] * self.coef_[:, 1][None, :], 0.0)

    def extend(self, other: "InputTokenModel", rows: Sequence[int]) -> None:
        self.coef_ = np.concatenate([self.coef_, other.coef_[list(rows)]], axis=0)


# ---- deciding -------------------------------------------------------------------------------------------------
def choose_max_tokens(pred: Prediction, max_tokens: float) -> np.ndarray:
    """Index per query of the highest predicted score among candidates whose predicted output tokens are within
    ``max_tokens`` (ties broken by lower cost); the candidate with the fewest predicted tokens where none fits."""
    if pred.tokens is None:
        raise ValueError("this prediction has no predicted tokens; a token cap needs a router that predicts them")
    tok = pred.tokens
    fits = tok <= max_tokens
    util = np.where(fits, pred.score, -np.inf) - pred.cost * 1e-9
    idx = np.argmax(util, axis=1)
    none = ~fits.any(axis=1)
    idx[none] = np.argmin(tok[none], axis=1)
    return idx


def r2_lambda(lam_prime: float) -> float:
    """R2-Router's λ' in (1−λ')·Q − λ'·C as the λ of Q − λ·C: λ = λ'/(1−λ') (∞ at λ' = 1)."""
    lam_prime = float(lam_prime)
    if not 0.0 <= lam_prime <= 1.0:
        raise ValueError(f"R2-Router's lambda' must be in [0, 1], got {lam_prime}")
    return math.inf if lam_prime >= 1.0 else lam_prime / (1.0 - lam_prime)


def choose_any(pred: Prediction, lam: float = 0.0, max_cost: float | None = None,
               max_tokens: float | None = None) -> np.ndarray:
    if max_tokens is not None and max_cost is not None:
        raise ValueError("give at most one of max_cost and max_tokens")
    if max_tokens is not None:
        return choose_max_tokens(pred, max_tokens)
    if math.isinf(lam):  # pure cost: the cheapest candidate, ties broken by the higher predicted score
        near = pred.cost <= pred.cost.min(axis=1, keepdims=True)
        return np.argmax(np.where(near, pred.score, -np.inf), axis=1)
    return choose(pred, lam=lam, max_cost=max_cost)


class ReasoningDecisions:
    """Mixin for the reasoning routers: ``decide`` with a token cap and an execution plan, and ``decide_r2``."""

    def plan_for(self, candidate: Candidate) -> dict:
        """How to execute ``candidate``: strategy to run, budget, the length instruction and the hard output cap."""
        template = self.params.get("budget_template", "paper")
        name = candidate.strategy  # "default": the plain call (strategies.builtin.PlainCall), as the gateway sends it
        try:
            strat = get_strategy(name, budget_instruction=template)
        except ValueError:
            return {"model": candidate.model, "strategy": candidate.strategy, "budget": candidate.budget}
        cap = strat.max_tokens(candidate.budget)
        if name == DEFAULT and candidate.budget is None:
            cap = None  # an unbudgeted plain call is capped by the client's max_tokens (the gateway's default)
        return {"model": candidate.model, "strategy": name, "budget": candidate.budget,
                "instruction": strat.budget_text(candidate.budget), "max_tokens": cap}

    def decide(self, queries: pd.DataFrame, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None, max_tokens: float | None = None, **predict_kw: Any) -> list[Decision]:
        """Per query: the argmax of predicted score − λ·cost, or the best predicted score under a cost cap
        (``max_cost``, USD) or an output-token cap (``max_tokens``: predicted output tokens ≤ cap). Each decision
        carries every candidate's predictions (``table``, incl. predicted tokens) and an execution ``plan``."""
        pred = self.predict(queries, X, **predict_kw)
        idx = choose_any(pred, lam=lam, max_cost=max_cost, max_tokens=max_tokens)
        return [Decision.from_prediction(pred, i, lam, max_cost, plan=self.plan_for(pred.candidates[j]), chosen=int(j))
                for i, j in enumerate(idx)]

    def decide_r2(self, queries: pd.DataFrame, X: np.ndarray | None = None, lam_prime: float = 0.0,
                  **kw: Any) -> list[Decision]:
        """R2-Router's rule: maximise (1−λ')·Q − λ'·C, λ' ∈ [0, 1] (= ``decide`` with λ = λ'/(1−λ'))."""
        return self.decide(queries, X, lam=r2_lambda(lam_prime), **kw)

    async def execute(self, decision: Decision, client: Any, question: str, task: str = "gsm8k", **kw: Any):
        """Run a decision through ``client`` (a ``ChatClient`` for ``decision.candidate.model``): the decision's
        strategy with its budget, so the length-constrained instruction and the hard cap (budget + slack) are
        applied. Returns the strategy's ``StrategyRun``."""
        cand = decision.candidate
        strat = get_strategy(cand.strategy, budget_instruction=self.params.get("budget_template", "paper"))
        return await strat.run(client, question, task, cand.budget, **kw)


# ---- validation of routing quality ----------------------------------------------------------------------------
def routing_area(score_pred: np.ndarray, cost_pred: np.ndarray, score_true: np.ndarray, cost_true: np.ndarray,
                 n_lambdas: int = 40) -> float:
    """Area under the upper hull of the realised (mean cost, mean score) curve of a λ sweep (RouterBench's AIQ
    between the cheapest and dearest candidate's mean cost): how good a set of predictions is *for routing* on
    queries with known outcomes (NaN true cells are not allowed)."""
    mean_cost = cost_true.mean(axis=0)
    lams = lambda_grid(mean_cost, n_lambdas)
    rows = np.arange(len(score_true))
    pred = Prediction([Candidate(str(j)) for j in range(score_pred.shape[1])], score_pred, cost_pred)
    cs, ss = [], []
    for lam in lams:
        idx = choose(pred, lam=lam)
        cs.append(cost_true[rows, idx].mean())
        ss.append(score_true[rows, idx].mean())
    lo, hi = float(mean_cost.min()), float(mean_cost.max())
    if hi <= lo:
        return float(np.max(ss))
    return float(M.aiq(np.array(cs), np.array(ss), lo, hi))
