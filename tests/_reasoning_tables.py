"""Synthetic outcome tables with known structure, shared by the RTR / R2-Router / joint router tests.

Queries sit in two clusters of embedding space (``cl`` = 0 or 1). Prices are per model (USD per token), and every
cell's cost is input tokens × input price + output tokens × output price, so the routers' fitted prices are exact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routecraft.data.schema import RoutingData

#: USD per (input, output) token
PRICE = {"ma": (0.1e-6, 0.4e-6), "mb": (0.1e-6, 0.5e-6), "mc": (1e-6, 5e-6), "md": (0.05e-6, 0.2e-6),
         "me": (0.2e-6, 0.8e-6)}
#: output tokens per strategy (cluster-1 questions get 1.5x)
TOKENS = {"direct": 20, "cot": 200, "pal": 120}


def _clusters(n: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    cl = rng.integers(0, 2, n)
    X = rng.normal(0, 0.05, (n, d))
    X[np.arange(n), cl] += 1.0
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return rng, cl, X.astype(np.float32)


def _data(ids, rows, cols):
    o = pd.DataFrame(rows, columns=cols)
    q = pd.DataFrame({"query_id": ids, "text": [f"What is question {i}?" + " x" * (len(i) % 7) for i in ids],
                      "task": "gsm8k"})
    return RoutingData.from_frames(q, o)


def strategy_table(n: int = 300, d: int = 16, seed: int = 0, prefix: str = "q",
                   models=("ma", "mb", "mc"), strategies=("direct", "cot", "pal")):
    """Model × strategy: ``ma`` with cot is right on cluster 1 (95%), ``mb`` with pal on cluster 0 (95%); ``mc``
    (10x dearer) is right 90% of the time whatever the strategy; everything else 10%. ``md`` (cheapest) 5%.
    ``me`` behaves like ``mb`` (a new model for cold-start tests)."""
    rng, cl, X = _clusters(n, d, seed)
    ids = [f"{prefix}{i}" for i in range(n)]
    rows = []
    for i in range(n):
        for m in models:
            for s in strategies:
                p = {"mc": 0.9, "md": 0.05}.get(m, 0.1)
                if m == "ma" and s == "cot" and cl[i] == 1:
                    p = 0.95
                if m in ("mb", "me") and s == "pal" and cl[i] == 0:
                    p = 0.95
                t = int(TOKENS[s] * (1.5 if cl[i] else 1.0) * rng.uniform(0.9, 1.1))
                tin = 40 + (10 if s != "direct" else 0)
                pi, po = PRICE[m]
                rows.append((ids[i], m, s, float(rng.random() < p), tin, t, tin * pi + t * po))
    return _data(ids, rows, ["query_id", "model", "strategy", "score", "input_tokens", "output_tokens",
                             "cost_usd"]), X, cl


#: tokens a question of each cluster needs before a budgeted answer can be right
NEED = {0: 50, 1: 150}


def budget_table(n: int = 300, d: int = 16, seed: int = 0, prefix: str = "q", models=("ma", "mb", "mc"),
                 budgets=(32, 64, 128, 256), strategies=("cot",)):
    """Model × budget (strategy cot, plus direct at the default budget when asked): a budget below the question's
    need (cluster 0: 50 tokens, cluster 1: 150) cuts quality to 5%; otherwise the model's base rate (ma 0.6,
    mb 0.75, mc 0.95). Unbounded answers are verbose (~3x the need in tokens); bounded ones use at most
    budget + 10."""
    rng, cl, X = _clusters(n, d, seed)
    ids = [f"{prefix}{i}" for i in range(n)]
    base = {"ma": 0.6, "mb": 0.75, "mc": 0.95}
    rows = []
    for i in range(n):
        need = NEED[int(cl[i])]
        for m in models:
            pi, po = PRICE[m]
            for s in strategies:
                for b in (list(budgets) + [None]) if s == "cot" else [None]:
                    if s == "direct":
                        p, t = 0.2, 15
                    else:
                        p = base[m] if (b is None or b >= need) else 0.05
                        natural = need * 3 * rng.uniform(0.9, 1.1)
                        t = int(natural if b is None else min(b + 10, natural))
                    rows.append((ids[i], m, s, b, float(rng.random() < p), 60, t, 60 * pi + t * po))
    return _data(ids, rows, ["query_id", "model", "strategy", "budget", "score", "input_tokens", "output_tokens",
                             "cost_usd"]), X, cl
