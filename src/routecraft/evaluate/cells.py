"""Per-cell summary of an outcomes table: accuracy and output tokens of every (model, strategy, budget) cell.

This is what a collected dataset shows before any router is trained: which strategy helps which model, and where a
length budget starts to cut accuracy. Only queries answered by *every* cell are counted by default (``common=True``),
so cells are compared on the same questions while a collection is still growing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

__all__ = ["cell_table", "cells_markdown", "plot_cells", "wilson"]


def wilson(k: np.ndarray | float, n: np.ndarray | float, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes out of n (vectorised); (nan, nan) where n == 0."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z * z / n
        mid = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return np.clip(mid - half, 0.0, 1.0), np.clip(mid + half, 0.0, 1.0)


def cell_table(outcomes: pd.DataFrame, common: bool = True) -> pd.DataFrame:
    """One row per (model, strategy, budget): n, accuracy (mean score) with a 95% Wilson interval, mean and p90
    output tokens, share of answers cut by the token cap (``finish_reason == 'length'`` when logged), mean cost and
    latency. With ``common``, only the queries every cell answered are used."""
    need = {"query_id", "model", "strategy", "budget", "score", "output_tokens"}
    missing = need - set(outcomes.columns)
    if missing:
        raise ValueError(f"outcomes table lacks column(s) {sorted(missing)}")
    o = outcomes.copy()
    o["budget_key"] = o["budget"].astype("Int64").astype("string").fillna("default")
    keys = ["model", "strategy", "budget_key"]
    if common and len(o):
        n_cells = o.groupby(keys).ngroups
        per_q = o.groupby("query_id")[keys].apply(lambda d: len(d.drop_duplicates()))
        o = o[o["query_id"].isin(per_q.index[per_q == n_cells])]
    if not len(o):
        return pd.DataFrame(columns=["model", "strategy", "budget", "n", "accuracy", "acc_lo", "acc_hi",
                                     "out_tokens", "out_tokens_p90", "cost_usd", "latency_s"])
    g = o.groupby(keys, sort=False)
    t = g.agg(n=("score", "size"), correct=("score", "sum"), accuracy=("score", "mean"),
              out_tokens=("output_tokens", "mean"),
              out_tokens_p90=("output_tokens", lambda s: float(np.nanpercentile(s.astype(float), 90))),
              cost_usd=("cost_usd", "mean") if "cost_usd" in o else ("score", "size"),
              latency_s=("latency_s", "mean") if "latency_s" in o else ("score", "size")).reset_index()
    lo, hi = wilson(t["correct"].to_numpy(), t["n"].to_numpy())
    t["acc_lo"], t["acc_hi"] = lo, hi
    t = t.rename(columns={"budget_key": "budget"}).drop(columns="correct")
    order = {"direct": 0, "cot": 1, "cod": 2, "pal": 3, "sc": 4}
    t["_s"] = t["strategy"].map(order).fillna(9)
    t["_b"] = pd.to_numeric(t["budget"], errors="coerce").fillna(1e9)
    t = t.sort_values(["model", "_s", "_b"]).drop(columns=["_s", "_b"]).reset_index(drop=True)
    return t[["model", "strategy", "budget", "n", "accuracy", "acc_lo", "acc_hi", "out_tokens", "out_tokens_p90",
              "cost_usd", "latency_s"]]


def cells_markdown(t: pd.DataFrame) -> str:
    lines = ["| model | strategy | budget | n | accuracy (95% CI) | mean out tokens | p90 out tokens | $/query "
             "| latency s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in t.itertuples(index=False):
        lines.append(f"| {r.model} | {r.strategy} | {r.budget} | {r.n} | {r.accuracy:.3f} ({r.acc_lo:.2f}–"
                     f"{r.acc_hi:.2f}) | {r.out_tokens:.0f} | {r.out_tokens_p90:.0f} | {r.cost_usd:.3g} | "
                     f"{r.latency_s:.2f} |")
    return "\n".join(lines)


def plot_cells(t: pd.DataFrame, path: str | Path, title: Optional[str] = None) -> Path:
    """Two panels: accuracy vs mean output tokens of every (model, strategy) cell at the default budget (error bars:
    95% Wilson interval), and accuracy vs budget per model for the budgeted cells (the default budget drawn at the
    model's mean tokens for that strategy, as an open marker)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5.2))
    models = list(dict.fromkeys(t["model"]))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    markers = {"direct": "o", "cot": "s", "cod": "^", "pal": "D", "sc": "P"}
    d = t[t["budget"] == "default"]
    for r in d.itertuples(index=False):
        yerr = [[max(0.0, r.accuracy - r.acc_lo)], [max(0.0, r.acc_hi - r.accuracy)]]
        a1.errorbar(r.out_tokens, r.accuracy, yerr=yerr,
                    fmt=markers.get(r.strategy, "x"), color=colors[r.model], ms=8, capsize=3, alpha=0.9)
    for m in models:
        a1.plot([], [], "s", color=colors[m], label=m)
    for s, mk in markers.items():
        if s in set(d["strategy"]):
            a1.plot([], [], mk, color="gray", label=s)
    a1.set_xscale("log")
    a1.set_xlabel("mean output tokens (log)")
    a1.set_ylabel("accuracy")
    a1.set_title("strategy cells at the default budget")
    a1.legend(fontsize=8, loc="best")
    a1.grid(alpha=0.3)
    b = t[t["budget"] != "default"].copy()
    if len(b):
        b["k"] = b["budget"].astype(int)
        for (m, s), g in b.groupby(["model", "strategy"]):
            g = g.sort_values("k")
            a2.errorbar(g["k"], g["accuracy"], yerr=[(g["accuracy"] - g["acc_lo"]).clip(lower=0),
                                                     (g["acc_hi"] - g["accuracy"]).clip(lower=0)],
                        marker=markers.get(s, "x"), color=colors[m], capsize=3, label=f"{m} {s}")
            ref = d[(d["model"] == m) & (d["strategy"] == s)]
            if len(ref):
                a2.plot(ref["out_tokens"], ref["accuracy"], marker=markers.get(s, "x"), mfc="none", ms=10,
                        color=colors[m], ls="none")
        a2.set_xscale("log", base=2)
        a2.set_xlabel("length budget k (tokens; open marker: no budget, at its mean tokens)")
        a2.set_ylabel("accuracy")
        a2.set_title("accuracy under a length budget")
        a2.legend(fontsize=8, loc="best")
        a2.grid(alpha=0.3)
    else:
        a2.set_axis_off()
        a2.text(0.5, 0.5, "no budgeted cells", ha="center", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
