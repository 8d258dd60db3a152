"""``heuristic``: the built-in rule router — works with no training data, from the pool's sizes and prices and the
query's length.

It is a rule of thumb, not a learnt model; the gateway uses it when no trained router artifact is configured
(``routers: {auto: heuristic}``). It is built from the served pool models (``fit_pool``), not fit on an outcomes
table, and answers ``decide_one`` without a queries table (the gateway's fast path).
For a query (the routing text of a conversation) and each candidate (every pool model × the configured strategies,
no length budget):

* **kind** of the query: ``choice`` when it lists two or more options "(A) …", ``code`` when it asks for a program
  (write/implement/complete … a function/program/script/class, or it holds code: a fence, a ``def``), ``numeric``
  when it has two or more numbers and an arithmetic cue (how many/much, total, percent, +, ×, …), else ``qa``
  (general chat).
* **difficulty** ``d = clip(0.1 + chars/3000 + 0.05·min(numbers, 8), 0, 0.9)``.
* **model capability** ``q = clip(0.30 + 0.25·log10(size_b / 0.1), 0.05, 0.95)`` from ``size_b`` (parameters in
  billions); without a size, from the output price's rank in the pool (cheapest 0.3 … dearest 0.7).
* **predicted score** ``q · (1 − 0.5·d) · m(kind, strategy)``, clipped to [0, 1], where ``m`` favours reasoning on
  arithmetic (cot 1.25, pal 1.3, cod 1.15, sc 1.35, direct 0.8) and plain chat otherwise (on ``qa``: default 1.0,
  direct 0.7, cot/cod/sc 0.6, pal 0.3; on ``choice``: cot 1.1, cod 1.05, pal 0.6). A reasoning strategy whose
  expected output does not fit the request's ``max_tokens`` is scaled down by the fraction that fits.
* **predicted cost** from the pool's prices: input = conversation chars / 4 + the strategy's prompt overhead
  (10 tokens plain, 40 with a strategy; ×k for self-consistency), output = the strategy's typical length (default
  200, direct 16, cod 80, cot 220, pal 140, sc k×220) capped by the strategy's budget cap and the request's
  ``max_tokens``.

Then the usual decision (``Decision.from_prediction``): maximise score − λ·cost, or the best score within a cost cap.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from routecraft.data.schema import DEFAULT, Candidate
from routecraft.routers.base import Decision, Prediction, Router, decisions
from routecraft.strategies import get_strategy

TYPICAL_OUT = {"default": 200, "direct": 16, "cod": 80, "cot": 220, "pal": 140}
MULT = {
    "numeric": {"default": 1.0, "direct": 0.8, "cod": 1.15, "cot": 1.25, "pal": 1.3, "sc": 1.35},
    "math": {"default": 1.0, "direct": 0.8, "cod": 1.15, "cot": 1.25, "pal": 1.2, "sc": 1.35},
    "choice": {"default": 1.0, "direct": 1.0, "cod": 1.05, "cot": 1.1, "pal": 0.6, "sc": 1.15},
    "qa": {"default": 1.0, "direct": 0.7, "cod": 0.6, "cot": 0.6, "pal": 0.3, "sc": 0.6},
    # a program is the answer: plain chat or a direct answer in a fenced block; PAL does not apply (the gateway
    # drops it), step-by-step reasoning before the code helps little at these sizes
    "code": {"default": 1.0, "direct": 1.0, "cod": 0.85, "cot": 0.9, "pal": 0.0, "sc": 0.9},
}
REASONING = {"cot", "cod", "pal", "sc"}
#: what ``query_kind`` returns
QUERY_KINDS = ("choice", "code", "numeric", "qa")

_NUM = re.compile(r"(?<![A-Za-z])\d+(?:[.,]\d+)?")
_ARITH = re.compile(r"\b(how (many|much|long|far|old)|total|sum|percent|average|each|per|times|twice|half|"
                    r"remain\w*|left|cost|price|profit|calculate|compute|solve|equation|product|difference)\b|"
                    r"[%$+×÷=*/^]|\d\s*[-x]\s*\d", re.I)
_OPTION = re.compile(r"(?:^|\n|\s)\(?([A-J])[).:]\s+\S", re.M)
_CODE_ASK = re.compile(r"\b(write|implement|complete|create|fix|refactor|code)\b[^.?!\n]{0,60}\b(function|program|"
                       r"script|class|method|code|regex|query|snippet)\b|\b(python|javascript|sql|rust|java|c\+\+)"
                       r"\s+(function|program|script|code)\b", re.I)
_CODE_BODY = re.compile(r"```|^\s*(def|class|import|from \S+ import|#include|function)\b", re.M)


def query_kind(text: str) -> str:
    """"choice", "code", "numeric" or "qa" for a routing text (see the module docstring)."""
    letters = set(_OPTION.findall(text or ""))
    if {"A", "B"} <= letters:
        return "choice"
    if _CODE_ASK.search(text or "") or _CODE_BODY.search(text or ""):
        return "code"
    if len(_NUM.findall(text or "")) >= 2 and _ARITH.search(text or ""):
        return "numeric"
    return "qa"


def difficulty(text: str) -> float:
    n = len(_NUM.findall(text or ""))
    return float(min(0.9, max(0.0, 0.1 + len(text or "") / 3000 + 0.05 * min(n, 8))))


def capability(size_b: float | None, price_rank: float) -> float:
    if size_b:
        return float(min(0.95, max(0.05, 0.30 + 0.25 * math.log10(size_b / 0.1))))
    return 0.3 + 0.4 * price_rank


class HeuristicRouter(Router):
    """Rule router over a pool (see the module docstring). ``fit_pool(pool_models)`` sets the candidates."""

    name = "heuristic"
    uses_features = False
    light = True

    def __init__(self, strategies: Sequence[str] = ("default", "cot", "pal"), sc_k: int = 5, **params: Any) -> None:
        super().__init__(strategies=list(strategies), sc_k=sc_k, **params)
        self.models: list[dict] = []

    # ---- "training": read the pool ----
    def fit_pool(self, pool_models: Sequence[Any]) -> "HeuristicRouter":
        """Candidates = every model × strategy; ``pool_models`` are PoolModel objects (name, size_b, prices)."""
        if not pool_models:
            raise ValueError("heuristic router: the pool has no models")
        outs = [m.price_out_per_m for m in pool_models]
        order = np.argsort(np.argsort(outs, kind="stable"), kind="stable")
        n = len(pool_models)
        self.models = []
        for m, rank in zip(pool_models, order):
            self.models.append({"name": m.name, "size_b": m.size_b, "price_in_per_m": m.price_in_per_m,
                                "price_out_per_m": m.price_out_per_m,
                                "q": capability(m.size_b, float(rank) / max(1, n - 1))})
        self.candidates = []
        self._caps: list[int | None] = []
        for m in self.models:
            for s in self.params["strategies"]:
                self.candidates.append(Candidate(m["name"], s, None))
                self._caps.append(None if s == DEFAULT else get_strategy(s).max_tokens(None))
        return self

    # ---- deciding ----
    def decide(self, queries: pd.DataFrame, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> list[Decision]:
        return decisions(self.predict(queries, X), lam, max_cost)

    def decide_one(self, text: str, features: np.ndarray | None = None, *, lam: float = 0.0,
                   max_cost: float | None = None, task: str | None = None, input_chars: int | None = None,
                   max_tokens: int | None = None, **context: Any) -> Decision:
        """One query without a queries table: ``task`` (a kind the rules know, else inferred from the text),
        ``input_chars`` (the whole conversation; default: the text), ``max_tokens`` (the request's output cap)."""
        kind = task if task in MULT else None
        row = (text, len(text) if input_chars is None else input_chars, max_tokens, kind)
        return Decision.from_prediction(self.predict_rows([row]), 0, lam, max_cost)

    # ---- predicting ----
    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        texts = queries["text"].tolist()
        n = len(texts)
        chars = queries["input_chars"].tolist() if "input_chars" in queries else [len(t) for t in texts]
        caps = queries["max_tokens"].tolist() if "max_tokens" in queries else [None] * n
        kinds = queries["kind"].tolist() if "kind" in queries else [None] * n
        return self.predict_rows(list(zip(texts, chars, caps, kinds)))

    def predict_rows(self, rows: Sequence[tuple]) -> Prediction:
        """Predictions for (routing text, conversation chars, max_tokens or None, kind or None) rows, without
        pandas (the gateway's fast path; ``predict`` builds these rows from a queries table)."""
        if not self.candidates:
            raise RuntimeError("heuristic router: call fit_pool(pool.models) first")
        C = len(self.candidates)
        score = np.zeros((len(rows), C))
        cost = np.zeros((len(rows), C))
        tokens = np.zeros((len(rows), C))
        qmap = {m["name"]: m for m in self.models}
        k = int(self.params.get("sc_k", 5))
        for i, (text, nch, cap, kind) in enumerate(rows):
            kind = kind if kind in MULT else query_kind(text)
            d = difficulty(text)
            cap = None if cap is None or (isinstance(cap, float) and math.isnan(cap)) else int(cap)
            for j, (cand, scap) in enumerate(zip(self.candidates, self._caps)):
                m = qmap[cand.model]
                s = cand.strategy
                is_sc = s == "sc" or s.startswith("sc-")
                base = s[3:] if s.startswith("sc-") else ("cot" if s == "sc" else s)
                mult = MULT[kind].get("sc" if is_sc else s, 0.6)
                calls = k if is_sc else 1
                typical = TYPICAL_OUT.get(base, 200)
                out = typical if scap is None else min(typical, scap)
                if cap is not None:
                    if (s in REASONING or is_sc) and cap < typical:
                        mult *= max(0.05, cap / typical)
                    out = min(out, cap)
                in_tok = nch / 4 + (10 if s == DEFAULT else 40)
                score[i, j] = min(1.0, max(0.0, m["q"] * (1 - 0.5 * d) * mult))
                tokens[i, j] = out * calls
                cost[i, j] = calls * (in_tok * m["price_in_per_m"] + out * m["price_out_per_m"]) / 1e6
        return Prediction(list(self.candidates), score, cost, tokens)
