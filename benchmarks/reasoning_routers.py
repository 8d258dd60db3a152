#!/usr/bin/env python
"""The evidence for the reasoning-aware routers (RTR, R2-Router, joint) from one outcomes table.

    python benchmarks/reasoning_routers.py --data DATA --seeds 0,1,2 --out DIR [--items 1,2,3,4,5,6] [--fast]

``--data``: a built-in dataset name or a routecraft data folder (``routecraft.data.resolve.resolve_data``).
Candidates with outcomes for fewer than ``--min-coverage`` of the queries are dropped (said so), then queries
missing any remaining candidate. Per seed the queries are split 60/20/20 as in ``routecraft bench`` (train + val
= the routers' training data, which carve their own validation split; test = where everything is measured by
replaying the logged outcomes).

Items (each a table in DIR/report.md, numbers in DIR/summary.json, curves in DIR/*.png):

1. RTR against the best single (model, strategy) pair, every fixed pair, and model-only routers (KNN, MLP, MF
   trained per fixed strategy, i.e. on that strategy's candidates at the default budget), plus the same baselines
   over all pairs. The paper's claim: RTR reaches the best pair's test accuracy with > 60% fewer output tokens.
   RTR is swept on the paper's objective (predicted accuracy − λ·predicted output tokens); the saving is read at
   the best pair's accuracy both on the hull of the realised (tokens, accuracy) points (randomising between two
   λ's decisions) and at the cheapest λ point that reaches it.
2. R2-Router against budget-agnostic routers (KNN/MLP/MF/R2 over the default-budget candidates only): the cost and
   output tokens at which each reaches 50/80/100% of the best single candidate's accuracy, the cost ratio
   (the paper's claim: same quality at 4–5× lower cost), AUDC, QNC and peak (R2-Router's normalisation: global
   min/max cost over this item's curves, per seed).
3. The joint router against RTR and R2-Router (data with several strategies and limited budgets): does it at
   least match the better of the two (area under the accuracy-vs-cost hull, AIQ)?
4. RTR's ablations (``RTRConfig.features``): text-only, learnable-only, combined.
5. Cold start: one model (``--cold-model``; default the best single candidate's model) is held out; RTR (and
   R2-Router) are fitted without it, then it is added from n ∈ ``--cold-n`` labelled training queries with the
   router's ``add_candidates``; against RTR retrained from scratch on the same n labels plus everything else.
   Metrics on the test split: AUC / Brier / cell accuracy of the new candidates' P(correct), the router's accuracy
   at λ = 0, its AIQ and the share of decisions given to the new model.
6. Training time per router (all fits of the run) and per-query decision latency at batch 1 (p50/p99): encode one
   query text with the sentence encoder (no cache) + predict + decide, on this machine.

Model-only data (one strategy, no limited budget, e.g. ``zeroeval-gsm8k``, ``llmrouter-dcrouter``): item 1 becomes
RTR and R2-Router as model-only routers against the baselines; items 2 and 3 are skipped with a note.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from routecraft.core import metrics as M
from routecraft.core.sweep import lambda_grid
from routecraft.data.features import features_for
from routecraft.data.query_text import query_texts
from routecraft.data.schema import Candidate, OutcomeMatrices, RoutingData
from routecraft.routers import Prediction, choose, make_router

ITEM_TITLES = {
    1: "RTR vs the best single pair, every fixed pair and model-only routers",
    2: "R2-Router vs budget-agnostic routers",
    3: "Joint router vs RTR and R2-Router",
    4: "RTR ablations (text-only, learnable-only, combined)",
    5: "Cold start: adding a new model",
    6: "Training time and per-query decision latency",
}
LEVELS = (0.5, 0.8, 1.0)
CLAIM_SAVING = 0.60
CLAIM_RATIO = 4.0
#: joint "matches" the better of RTR and R2 when its AIQ is at most this far below (noise of the λ sweep)
MATCH_TOL = 0.005

#: small networks for the test and quick looks (the default is every router at its own / the paper's defaults)
FAST = {
    "rtr": {"hidden": 32, "epochs": 12, "pool": None},
    "r2": {"epochs": 10, "hidden": [32, 16], "pool": None},
    "joint": {"hidden": 32, "epochs": 12, "pool": None,
              "rtr": {"hidden": 32, "epochs": 12}, "r2": {"epochs": 10, "hidden": [32, 16]}},
    "knn": {},
    "mlp": {"epochs": 10, "hidden": 32},
    "mf": {"epochs": 10, "dim": 16},
    "linear": {},
}


@dataclass
class Settings:
    items: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    params: dict = field(default_factory=lambda: {k: {} for k in FAST})
    n_lambdas: int = 60
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    min_coverage: float = 0.9
    cold_n: tuple[int, ...] = (5, 10, 20, 40)
    cold_model: str | None = None
    latency_n: int = 100
    latency_threads: int = 1
    encoder: str | None = None
    first_seed: int = 0
    auto_items: bool = False
    first_queries: int | None = None

    def kw(self, name: str, seed: int) -> dict:
        base = dict(self.params.get(name, {}))
        if name in ("rtr", "r2", "joint", "mlp", "mf"):
            base.setdefault("seed", seed)
        return base


# ---- small helpers --------------------------------------------------------------------------------------------
class Log:
    def __init__(self, stream=None) -> None:
        self.t0 = time.perf_counter()
        self.stream = stream
        self.notes: list[str] = []

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f}s] {msg}", file=self.stream or sys.stdout, flush=True)

    def note(self, msg: str) -> None:
        if msg not in self.notes:  # the same note from every seed is said once
            self.notes.append(msg)
            self(f"note: {msg}")


def finite(vals: Sequence[float]) -> np.ndarray:
    a = np.asarray([np.nan if v is None else v for v in vals], dtype=float)
    return a[np.isfinite(a)]


def fmt(vals: Sequence[float], spec: str = "{:.3f}", pct: bool = False) -> str:
    """mean ± std over seeds of the finite values; '(k/n)' when only k of n seeds have one (e.g. reached the
    target); '—' when none has."""
    n = len(vals)
    v = finite(vals)
    if v.size == 0:
        return "—" if n else ""
    f0 = (lambda x: f"{x:.1%}") if pct else spec.format
    f = lambda x: f0(float(np.round(x, 12)) + 0.0)  # noqa: E731 - no "-0.0"
    txt = f"{f(v.mean())} ± {f(v.std(ddof=1))}" if v.size > 1 else f(v.mean())
    return txt + (f" ({v.size}/{n})" if v.size < n else "")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def nanmean0(a: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        ok = np.isfinite(a)
        return np.where(ok.any(0), np.nansum(a, 0) / np.maximum(ok.sum(0), 1), np.nan)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y) >= 0.5
    if y.all() or (~y).all():
        return float("nan")
    from scipy.stats import rankdata

    r = rankdata(p)
    n1 = y.sum()
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1)))


def _json(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


# ---- data -----------------------------------------------------------------------------------------------------
def prepare(data: RoutingData, min_coverage: float, log: Log) -> tuple[RoutingData, dict]:
    """Queries with any outcome; candidates covering >= min_coverage of them; queries complete over those."""
    n0, c0 = len(data.queries), len(data.candidates)
    have = set(data.outcomes["query_id"])
    if len(have) < n0:
        log.note(f"{n0 - len(have)} of {n0} queries have no outcome yet; left out")
        data = data.subset(have)
    data, dropped = data.drop_sparse_candidates(min_coverage)
    if dropped:
        log.note(f"dropped {len(dropped)} of {c0} candidates with outcomes for < {min_coverage:.0%} of the "
                 f"{len(data.queries)} queries: {', '.join(dropped)}")
    nq = len(data.queries)
    data = data.complete()
    if len(data.queries) < nq:
        log.note(f"{nq - len(data.queries)} queries lack an outcome for some remaining candidate; left out")
    cands = data.candidates
    info = {"queries": len(data.queries), "candidates": [c.id for c in cands], "dropped_candidates": dropped,
            "models": sorted({c.model for c in cands}), "strategies": sorted({c.strategy for c in cands}),
            "budgets": sorted({c.budget for c in cands if c.budget is not None})}
    info["has_strategies"] = len(info["strategies"]) > 1
    info["has_budgets"] = len(info["budgets"]) > 0
    info["model_only"] = not info["has_strategies"] and not info["has_budgets"]
    tok = data.outcomes["output_tokens"]
    info["has_tokens"] = bool(tok.notna().any())
    return data, info


def reference(truth: OutcomeMatrices, cols: Sequence[int] | None = None) -> dict:
    """Best single candidate on the test split (highest mean accuracy, ties -> cheaper), the cheapest one and
    the oracle, as in ``routecraft bench``; plus output tokens."""
    cols = list(range(len(truth.candidates))) if cols is None else list(cols)
    S, C, T = truth.score[:, cols], truth.cost[:, cols], truth.output_tokens[:, cols]
    ms, mc, mt = S.mean(0), C.mean(0), nanmean0(T)
    best = int(np.lexsort((mc, -ms))[0])
    cheap = int(np.lexsort((-ms, mc))[0])
    rows = np.arange(len(S))
    top = S.max(1, keepdims=True)
    oc = np.where(S >= top, C, np.inf).argmin(1)  # the oracle's cheapest best candidate per query
    return {"best": truth.candidates[cols[best]].id, "best_score": float(ms[best]), "best_cost": float(mc[best]),
            "best_tokens": float(mt[best]), "cheapest": truth.candidates[cols[cheap]].id,
            "cheapest_score": float(ms[cheap]), "cheapest_cost": float(mc[cheap]),
            "oracle_score": float(top.mean()), "oracle_cost": float(C[rows, oc].mean()),
            "oracle_tokens": float(np.nanmean(T[rows, oc])) if np.isfinite(T[rows, oc]).any() else float("nan"),
            "min_cost": float(mc.min()), "max_cost": float(mc.max())}


# ---- one seed -------------------------------------------------------------------------------------------------
class SeedRun:
    """The split of one seed, its λ grids, and every router fitted on it (fitted once, shared by the items)."""

    def __init__(self, seed: int, data: RoutingData, X: np.ndarray, st: Settings, log: Log) -> None:
        self.seed, self.st, self.log = seed, st, log
        sp = data.split(seed=seed, fractions=st.fractions)
        self.train = RoutingData(pd.concat([sp.train.queries, sp.val.queries], ignore_index=True),
                                 pd.concat([sp.train.outcomes, sp.val.outcomes], ignore_index=True), data.meta)
        self.test = sp.test
        self.X = X
        self.feats = features_for(data, X)
        self.Xtr, self.Xte = self.feats(self.train), self.feats(self.test)
        self.truth = self.test.matrices()
        self.pos = {c.id: j for j, c in enumerate(self.truth.candidates)}
        tm = self.train.matrices()
        self.lam_usd = lambda_grid(tm.cost.mean(0), st.n_lambdas)
        tok = nanmean0(tm.output_tokens)
        self.lam_tok = lambda_grid(np.nan_to_num(tok, nan=0.0), st.n_lambdas) if np.isfinite(tok).any() else None
        self.ref = reference(self.truth)
        self.routers: dict[str, Any] = {}
        self.fit_s: dict[str, float] = {}
        self.errors: dict[str, str] = {}

    def fit(self, label: str, name: str, params: dict | None = None, cands: Sequence[Candidate] | None = None,
            data: RoutingData | None = None):
        """Fit (once) router ``name`` as ``label`` on the training split (restricted to ``cands``) or ``data``;
        None (and a note) when it fails."""
        if label in self.routers:
            return self.routers[label]
        if label in self.errors:
            return None
        d = data if data is not None else (self.train if cands is None else self.train.filter_candidates(cands))
        params = self.st.kw(name, self.seed) if params is None else params
        self.log(f"seed {self.seed}: fit {label} ({len(d.queries)} queries, {len(d.candidates)} candidates)")
        t0 = time.perf_counter()
        try:
            r = make_router(name, **params).fit(d, self.feats(d))
        except Exception as e:  # noqa: BLE001 - one router failing must not stop the others
            self.errors[label] = f"{type(e).__name__}: {e}"
            self.log.note(f"seed {self.seed}: {label} failed: {self.errors[label]}")
            return None
        self.fit_s[label] = time.perf_counter() - t0
        self.routers[label] = r
        return r

    def predict(self, router, cands: Sequence[Candidate] | None = None) -> Prediction:
        """The router's test prediction restricted to the data's candidates (and ``cands``)."""
        pred = router.predict(self.test.queries, self.Xte)
        want = {c.id for c in (cands if cands is not None else self.truth.candidates)}
        keep = [j for j, c in enumerate(pred.candidates) if c.id in want and c.id in self.pos]
        return Prediction([pred.candidates[j] for j in keep], pred.score[:, keep], pred.cost[:, keep],
                          None if pred.tokens is None else pred.tokens[:, keep])

    def truth_pred(self, cands: Sequence[Candidate] | None = None) -> Prediction:
        """The oracle: the test outcomes themselves."""
        cols = [self.pos[c.id] for c in (cands or self.truth.candidates)]
        t = self.truth
        return Prediction([t.candidates[j] for j in cols], t.score[:, cols], t.cost[:, cols],
                          t.output_tokens[:, cols])

    def sweep(self, pred: Prediction, objective: str = "usd") -> dict:
        """Realised mean (cost, accuracy, output tokens) on the test split per λ; ``objective="tokens"``: decide by
        predicted accuracy − λ·predicted output tokens (RTR's paper objective)."""
        cols = np.array([self.pos[c.id] for c in pred.candidates])
        S, C, T = self.truth.score[:, cols], self.truth.cost[:, cols], self.truth.output_tokens[:, cols]
        if objective == "tokens":
            if pred.tokens is None or self.lam_tok is None:
                raise ValueError("no predicted tokens")
            p, lams = Prediction(pred.candidates, pred.score, np.nan_to_num(pred.tokens, nan=0.0)), self.lam_tok
        else:
            p, lams = pred, self.lam_usd
        rows = np.arange(len(S))
        out = {"lambda": [], "cost": [], "score": [], "tokens": []}
        for lam in lams:
            idx = choose(p, lam=float(lam))
            t = T[rows, idx]
            out["lambda"].append(float(lam))
            out["cost"].append(float(C[rows, idx].mean()))
            out["score"].append(float(S[rows, idx].mean()))
            out["tokens"].append(float(np.nanmean(t)) if np.isfinite(t).any() else float("nan"))
        return {k: np.array(v) for k, v in out.items()}


def curve_metrics(cv: dict, ref: dict) -> dict:
    """The numbers of one sweep against the seed's reference (best single candidate of the compared set)."""
    c, s, t = cv["cost"], cv["score"], cv["tokens"]
    best_s = ref["best_score"]
    out = {"acc0": float(s[0]), "cost0": float(c[0]), "tokens0": float(t[0]), "peak": M.peak(s)}
    out["aiq"] = M.aiq(c, s, ref["min_cost"], ref["max_cost"]) if ref["max_cost"] > ref["min_cost"] else float("nan")
    cr = M.cost_to_reach(c, s, best_s)
    out["cost_to_best"] = cr if np.isfinite(cr) else float("nan")
    out["saving_usd"] = 1 - cr / ref["best_cost"] if np.isfinite(cr) and ref["best_cost"] > 0 else float("nan")
    for k in ("tok_to_best", "tok_to_best_pt", "saving_tok", "saving_tok_pt"):
        out[k] = float("nan")
    if best_s <= 0:  # nothing to match (every candidate wrong on this test split): no saving is defined
        out["cost_to_best"] = out["saving_usd"] = float("nan")
        return out
    if np.isfinite(t).all() and np.isfinite(ref["best_tokens"]) and ref["best_tokens"] > 0:
        tr = M.cost_to_reach(t, s, best_s)
        hit = s >= best_s - M.ATOL
        tp = float(t[hit].min()) if hit.any() else float("inf")
        if np.isfinite(tr):
            out["tok_to_best"], out["saving_tok"] = tr, 1 - tr / ref["best_tokens"]
        if np.isfinite(tp):
            out["tok_to_best_pt"], out["saving_tok_pt"] = tp, 1 - tp / ref["best_tokens"]
    return out


def reach(cv: dict, target: float) -> tuple[float, float]:
    """(USD, output tokens) at which the hull of the sweep first reaches ``target`` accuracy (nan: never)."""
    c = M.cost_to_reach(cv["cost"], cv["score"], target)
    t = M.cost_to_reach(cv["tokens"], cv["score"], target) if np.isfinite(cv["tokens"]).all() else float("nan")
    return (c if np.isfinite(c) else float("nan")), (t if np.isfinite(t) else float("nan"))


def curve_json(cv: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in cv.items()}


# ---- the items ------------------------------------------------------------------------------------------------
def default_units(info: dict, cands: list[Candidate]) -> dict[str, list[Candidate]]:
    """Each strategy's candidates at the default budget (for per-strategy model-only routers)."""
    units: dict[str, list[Candidate]] = {}
    for c in cands:
        if c.budget is None:
            units.setdefault(c.strategy, []).append(c)
    return {s: cs for s, cs in units.items() if len(cs) >= 2}


def item1(run: SeedRun, info: dict) -> dict:
    cands = run.truth.candidates
    ref = run.ref
    res: dict[str, Any] = {"ref": ref, "routers": {}, "curves": {}, "pairs": {}}
    T = run.truth.output_tokens
    for j, c in enumerate(cands):
        res["pairs"][c.id] = {"acc": float(run.truth.score[:, j].mean()), "cost": float(run.truth.cost[:, j].mean()),
                              "tokens": float(np.nanmean(T[:, j])) if np.isfinite(T[:, j]).any() else float("nan")}

    def add(label: str, pred: Prediction, objectives=("usd",)) -> None:
        for obj in objectives:
            lbl = label if obj == "usd" else f"{label} [tokens]"
            try:
                cv = run.sweep(pred, obj)
            except ValueError:
                continue
            res["curves"][lbl] = curve_json(cv)
            res["routers"][lbl] = curve_metrics(cv, ref)

    rtr = run.fit("rtr", "rtr")
    if rtr is not None:
        add("rtr", run.predict(rtr), ("tokens", "usd"))
    r2 = run.fit("r2", "r2")
    if r2 is not None:
        add("r2", run.predict(r2), ("tokens", "usd") if info["model_only"] else ("usd",))
    base = ["knn", "mlp", "mf"] + (["linear"] if info["model_only"] else [])
    suffix = "" if info["model_only"] else " (all pairs)"
    for name in base:
        r = run.fit(name + suffix, name)
        if r is not None:
            add(name + suffix, run.predict(r))
    if not info["model_only"]:
        units = default_units(info, cands)
        few = sorted({c.strategy for c in cands if c.budget is None} - set(units))
        if few and run.seed == run.st.first_seed:
            run.log.note(f"no per-strategy model-only routers for {', '.join(few)}: fewer than 2 models there")
        for s, cs in units.items():
            for name in ("knn", "mlp", "mf"):
                lbl = f"{name} @{s}"
                r = run.fit(lbl, name, cands=cs)
                if r is not None:
                    add(lbl, run.predict(r, cs))
    bs = run.fit("best-single", "best-single")
    if bs is not None:
        add("best-single (train-chosen)", run.predict(bs))
        res["train_best"] = bs.choice.id
    add("oracle", run.truth_pred(), ("tokens", "usd"))
    return res


def saving_vs_train_best(rec: dict, key: str) -> float:
    """Output-token saving of ``key``'s sweep (on the hull) at the test accuracy of the pair chosen on the training
    split — the pair a deployment without a router would run — against that pair's test output tokens."""
    b, cv = rec["routers"].get("best-single (train-chosen)"), rec["curves"].get(key)
    if b is None or cv is None or not b["acc0"] > 0 or not b["tokens0"] > 0:
        return float("nan")
    t, sc = np.asarray(cv["tokens"], dtype=float), np.asarray(cv["score"], dtype=float)
    if not np.isfinite(t).all():
        return float("nan")
    tr = M.cost_to_reach(t, sc, b["acc0"])
    return float(1 - tr / b["tokens0"]) if np.isfinite(tr) else float("nan")


def item2(run: SeedRun, info: dict) -> dict:
    cands = run.truth.candidates
    agn = [c for c in cands if c.budget is None]
    ref = run.ref
    res: dict[str, Any] = {"ref": ref, "agnostic_candidates": [c.id for c in agn], "curves": {}, "routers": {}}
    preds: dict[str, Prediction] = {}
    r2 = run.fit("r2", "r2")
    if r2 is not None:
        preds["r2"] = run.predict(r2)
        preds["r2 @default budget"] = run.predict(r2, agn)
    for name in ("knn", "mlp", "mf"):
        r = run.fit(f"{name} @default budget", name, cands=agn)
        if r is not None:
            preds[f"{name} @default budget"] = run.predict(r, agn)
    bs = run.fit("best-single @default budget", "best-single", cands=agn)
    if bs is not None:
        preds["best-single @default budget"] = run.predict(bs, agn)
    curves = {k: run.sweep(p) for k, p in preds.items()}
    if not curves:
        return res
    allc = np.concatenate([cv["cost"] for cv in curves.values()])
    lo, hi = float(allc.min()), float(allc.max())
    for k, cv in curves.items():
        nc = (cv["cost"] - lo) / (hi - lo) if hi > lo else np.zeros_like(cv["cost"])
        m = {"audc": M.audc(nc, cv["score"]), "qnc": M.qnc(nc, cv["score"], ref["best_score"]),
             "peak": M.peak(cv["score"])}
        for f in LEVELS:
            m[f"cost@{f:g}"], m[f"tok@{f:g}"] = reach(cv, f * ref["best_score"])
        res["routers"][k] = m
        res["curves"][k] = curve_json(cv)
    agn_labels = [k for k in res["routers"] if k != "r2"]
    res["ratio"] = {}
    if "r2" in res["routers"]:
        for f in LEVELS:
            c_r2 = res["routers"]["r2"][f"cost@{f:g}"]
            c_agn = finite([res["routers"][k][f"cost@{f:g}"] for k in agn_labels])
            res["ratio"][f"{f:g}"] = float(c_agn.min() / c_r2) if c_agn.size and np.isfinite(c_r2) and c_r2 > 0 \
                else float("nan")
            t_r2 = res["routers"]["r2"][f"tok@{f:g}"]
            t_agn = finite([res["routers"][k][f"tok@{f:g}"] for k in agn_labels])
            res["ratio"][f"tok{f:g}"] = float(t_agn.min() / t_r2) if t_agn.size and np.isfinite(t_r2) and t_r2 > 0 \
                else float("nan")
    return res


def item3(run: SeedRun, info: dict) -> dict:
    res: dict[str, Any] = {"routers": {}, "curves": {}}
    for label in ("joint", "rtr", "r2"):
        r = run.fit(label, label)
        if r is None:
            continue
        cv = run.sweep(run.predict(r))
        res["curves"][label] = curve_json(cv)
        res["routers"][label] = curve_metrics(cv, run.ref)
        if label == "joint":
            res["blend"] = getattr(r, "chosen_blend", None) if hasattr(r, "weights_") else None
    a = {k: v["aiq"] for k, v in res["routers"].items()}
    if {"joint", "rtr", "r2"} <= set(a):
        res["margin"] = a["joint"] - max(a["rtr"], a["r2"])
        res["matches"] = bool(res["margin"] >= -MATCH_TOL)
    return res


def cell_metrics(pred: Prediction, run: SeedRun, cands: Sequence[Candidate] | None = None) -> dict:
    """How good P(correct) and the token prediction are on the test cells (of ``cands``)."""
    want = {c.id for c in (cands or pred.candidates)}
    j = [k for k, c in enumerate(pred.candidates) if c.id in want]
    cols = [run.pos[pred.candidates[k].id] for k in j]
    y, p = run.truth.score[:, cols].ravel(), pred.score[:, j].ravel()
    out = {"auc": auc(y, p), "brier": float(np.mean((p - y) ** 2)),
           "cell_acc": float(np.mean((p >= 0.5) == (y >= 0.5)))}
    if pred.tokens is not None:
        tt, tp = run.truth.output_tokens[:, cols].ravel(), pred.tokens[:, j].ravel()
        ok = np.isfinite(tt)
        out["tok_mae"] = float(np.mean(np.abs(tp[ok] - tt[ok]))) if ok.any() else float("nan")
    return out


def item4(run: SeedRun, info: dict) -> dict:
    res: dict[str, Any] = {"routers": {}}
    for feat in ("combined", "text", "learnable"):
        label = "rtr" if feat == "combined" else f"rtr features={feat}"
        r = run.fit(label, "rtr", {**run.st.kw("rtr", run.seed), "features": feat})
        if r is None:
            continue
        pred = run.predict(r)
        m = curve_metrics(run.sweep(pred), run.ref)
        try:
            mt = curve_metrics(run.sweep(pred, "tokens"), run.ref)
            m["saving_tok"], m["saving_tok_pt"] = mt["saving_tok"], mt["saving_tok_pt"]
        except ValueError:
            pass
        m.update(cell_metrics(pred, run))
        m["fit_s"] = run.fit_s[label]
        m["epochs"] = r.train_info_.get("epochs")
        res["routers"][feat] = m
    return res


def cold_model(data: RoutingData, st: Settings) -> str:
    if st.cold_model:
        return st.cold_model
    m = data.matrices()
    ms, mc = m.score.mean(0), m.cost.mean(0)
    return m.candidates[int(np.lexsort((mc, -ms))[0])].model


def item5(run: SeedRun, info: dict, model: str) -> dict:
    st = run.st
    cands = run.truth.candidates
    new = [c for c in cands if c.model == model]
    old = [c for c in cands if c.model != model]
    res: dict[str, Any] = {"model": model, "new_candidates": [c.id for c in new], "rows": {}}

    def measure(pred: Prediction, with_cells: bool = True) -> dict:
        cv = run.sweep(pred)
        idx0 = choose(pred, lam=0.0)
        m = {"acc0": float(cv["score"][0]), "aiq": curve_metrics(cv, run.ref)["aiq"],
             "share_new": float(np.mean([pred.candidates[j].model == model for j in idx0]))}
        if with_cells:
            m.update(cell_metrics(pred, run, new))
        return m

    full = run.fit("rtr", "rtr")
    if full is not None:
        res["rows"]["rtr, all labels"] = measure(run.predict(full))
    base = run.fit(f"rtr without {model}", "rtr", cands=old)
    if base is not None:
        res["rows"][f"rtr without {model}"] = measure(run.predict(base, old), with_cells=False)
    r2base = run.fit(f"r2 without {model}", "r2", cands=old)
    rng = np.random.default_rng(run.seed + 101)
    qids = run.train.queries["query_id"].to_numpy()
    order = qids[rng.permutation(len(qids))]
    res["by_n"] = {}
    for n in st.cold_n:
        if n > len(order):
            run.log.note(f"cold start: n={n} > the {len(order)} training queries; skipped")
            continue
        few_ids = set(order[:n])
        few = run.train.subset(few_ids).filter_candidates(new)
        Xfew = run.feats(few)
        row: dict[str, Any] = {}
        if base is not None:
            t0 = time.perf_counter()
            r = copy.deepcopy(base)
            try:
                r.add_candidates(few, Xfew)
                row["rtr cold start"] = {**measure(run.predict(r)), "time_s": time.perf_counter() - t0}
            except Exception as e:  # noqa: BLE001
                run.log.note(f"seed {run.seed}: rtr cold start n={n} failed: {e}")
        if r2base is not None:
            t0 = time.perf_counter()
            r = copy.deepcopy(r2base)
            try:
                r.add_candidates(few, Xfew)
                row["r2 cold start"] = {**measure(run.predict(r)), "time_s": time.perf_counter() - t0}
            except Exception as e:  # noqa: BLE001
                run.log.note(f"seed {run.seed}: r2 cold start n={n} failed: {e}")
        o = run.train.outcomes
        keep = (o["model"] != model) | o["query_id"].isin(few_ids)
        scratch_data = RoutingData(run.train.queries, o[keep].reset_index(drop=True), run.train.meta)
        label = f"rtr scratch n={n}"
        r = run.fit(label, "rtr", data=scratch_data)
        if r is not None:
            row["rtr from scratch"] = {**measure(run.predict(r)), "time_s": run.fit_s[label]}
        res["by_n"][n] = row
    return res


# ---- latency --------------------------------------------------------------------------------------------------
def default_encode(encoder: str) -> Callable[[list[str]], np.ndarray]:
    from routecraft.data.features import load_encoder

    model = load_encoder(encoder)

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=1, convert_to_numpy=True, normalize_embeddings=True).astype(np.float32)

    return encode


def latency(run: SeedRun, labels: Sequence[str], encode: Callable, n: int, log: Log, threads: int = 1) -> dict:
    """Per router: wall time of encode(one text) + decide(one query) at batch 1, over n test queries (after a
    warm-up of 3); the encode and decide parts separately too. Milliseconds. Torch and BLAS run on ``threads``
    threads: at batch 1 a second thread buys nothing, and on a busy 2-core machine two spinning OpenMP threads made
    one MiniLM encode 15x slower (1.2 s vs 84 ms p50, measured while a collection job ran)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            out = _latency(run, labels, encode, n, log)
    finally:
        torch.set_num_threads(before)
    out["threads"] = threads
    return out


def _latency(run: SeedRun, labels: Sequence[str], encode: Callable, n: int, log: Log) -> dict:
    q = run.test.queries.reset_index(drop=True)
    n = min(n, len(q))
    out: dict[str, Any] = {"n": n}
    lam = float(run.lam_usd[len(run.lam_usd) // 2])
    for label in labels:
        r = run.routers.get(label)
        if r is None:
            continue
        log(f"latency: {label} ({n} queries at batch 1)")
        tot, enc, dec = [], [], []
        for i in list(range(min(3, n))) + list(range(n)):
            row = q.iloc[[i]]
            t0 = time.perf_counter()
            x = encode([str(row["text"].iloc[0])])
            t1 = time.perf_counter()
            r.decide(row, np.asarray(x, dtype=np.float32).reshape(1, -1), lam=lam)
            t2 = time.perf_counter()
            tot.append(t2 - t0)
            enc.append(t1 - t0)
            dec.append(t2 - t1)
        k = min(3, n)
        tot, enc, dec = (np.array(a[k:]) * 1e3 for a in (tot, enc, dec))
        out[label] = {"p50": float(np.percentile(tot, 50)), "p99": float(np.percentile(tot, 99)),
                      "encode_p50": float(np.percentile(enc, 50)), "decide_p50": float(np.percentile(dec, 50)),
                      "decide_p99": float(np.percentile(dec, 99))}
    return out


# ---- running everything ---------------------------------------------------------------------------------------
def applicable(info: dict, items: Sequence[int], log: Log) -> list[int]:
    out = []
    for i in items:
        why = None
        if i == 2 and not info["has_budgets"]:
            why = "the data has no limited output budget (R2-Router's budget choice needs them)"
        elif i == 3 and not (info["has_strategies"] and info["has_budgets"]):
            why = "the joint router is compared where both RTR (several strategies) and R2-Router (limited " \
                  "budgets) apply; this data lacks " + ("strategies and budgets" if info["model_only"] else
                                                       "limited budgets" if info["has_strategies"] else
                                                       "several strategies")
        elif i in (1, 4) and not info["has_tokens"]:
            why = "no logged output tokens (RTR predicts them)"
        elif i == 5 and len(info["models"]) < 2:
            why = "only one model in the data (nothing to hold out)"
        if why:
            log.note(f"item {i} ({ITEM_TITLES[i]}) skipped: {why}")
        else:
            out.append(i)
    return out


def run(data: RoutingData, name: str, seeds: Sequence[int], out: str | Path, st: Settings | None = None,
        features: np.ndarray | None = None, encode: Callable | None = None, command: str | None = None,
        log: Log | None = None) -> dict:
    """Everything for one dataset; writes DIR/summary.json, DIR/report.md and the plots; returns the summary."""
    from routecraft.data.features import DEFAULT_ENCODER, EmbeddingCache

    st = st or Settings()
    log = log or Log()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    encoder = st.encoder or DEFAULT_ENCODER
    log(f"data {name}: {len(data.queries)} queries, {len(data.candidates)} candidates")
    features_of = features_for(data, None if features is None else np.asarray(features))
    if st.first_queries is not None:
        first = data.queries["query_id"].tolist()[:st.first_queries]
        if len(first) < st.first_queries:
            log.note(f"--first-queries {st.first_queries}: the data has only {len(first)} queries")
        data = data.subset(first)
        log(f"first {len(first)} queries of the data (--first-queries)")
    data, info = prepare(data, st.min_coverage, log)
    summary: dict[str, Any] = {"data": name, "seeds": list(seeds), "command": command, "info": info,
                               "settings": asdict(st), "machine": machine(), "items": {}, "notes": log.notes}
    mode = "model-only" if info["model_only"] else (
        "model × strategy × budget" if info["has_strategies"] and info["has_budgets"] else
        "model × strategy" if info["has_strategies"] else "model × budget")
    info["mode"] = mode
    log(f"using {info['queries']} queries × {len(info['candidates'])} candidates ({len(info['models'])} models, "
        f"strategies {info['strategies']}, budgets {info['budgets'] or '[default]'}): {mode}")
    if info["queries"] < 10 or len(info["candidates"]) < 1:
        log.note(f"only {info['queries']} complete queries over {len(info['candidates'])} candidates; "
                 "at least 10 are needed: nothing measured")
        summary["wall_s"] = time.perf_counter() - t_start
        write(summary, out, log)
        return summary
    wanted = st.items
    if info["model_only"] and getattr(st, "auto_items", False):
        wanted = tuple(i for i in wanted if i in (1, 6))
        log.note("model-only data: items 1 and 6 by default (RTR/R2-Router as model-only routers vs the baselines; "
                 "timing); the ablations (4) and cold start (5) run with --items 1,4,5,6")
    items = applicable(info, wanted, log)
    summary["items_run"] = items
    if features is None:
        log(f"embedding {info['queries']} queries with {encoder}")
        X = EmbeddingCache(encoder).embed(query_texts(data.queries))
    else:
        X = features_of(data)
    cmodel = cold_model(data, st) if 5 in items else None
    per_seed: dict[int, list] = {i: [] for i in items}
    st.first_seed = list(seeds)[0]
    fit_times: dict[str, list] = {}
    lat = None
    for seed in seeds:
        log(f"=== seed {seed}")
        sr = SeedRun(seed, data, X, st, log)
        log(f"seed {seed}: {len(sr.train.queries)} train / {len(sr.test.queries)} test queries; best pair on test: "
            f"{sr.ref['best']} ({sr.ref['best_score']:.3f})")
        for i in items:
            if i == 6:
                continue
            log(f"seed {seed}: item {i}: {ITEM_TITLES[i]}")
            fn = {1: item1, 2: item2, 3: item3, 4: item4}.get(i)
            r = fn(sr, info) if fn else item5(sr, info, cmodel)
            r["seed"] = seed
            per_seed[i].append(r)
        if 6 in items:
            if lat is None:
                labels = [k for k in ("rtr", "r2", "joint", "knn", "mlp", "mf", "knn (all pairs)",
                                      "mlp (all pairs)", "mf (all pairs)", "best-single") if k in sr.routers]
                if not labels:
                    for k in ("rtr", "r2", "knn", "mlp", "mf"):
                        sr.fit(k, k)
                    labels = [k for k in ("rtr", "r2", "knn", "mlp", "mf") if k in sr.routers]
                try:
                    enc = encode or default_encode(encoder)
                    lat = latency(sr, labels, enc, st.latency_n, log, st.latency_threads)
                except Exception as e:  # noqa: BLE001
                    log.note(f"latency not measured: {type(e).__name__}: {e}")
                    lat = {"error": str(e)}
            per_seed[6].append({"seed": seed, "fit_s": dict(sr.fit_s)})
        for k, v in sr.fit_s.items():
            fit_times.setdefault(k, []).append(v)
        summary.setdefault("errors", {})[seed] = sr.errors
    for i in items:
        summary["items"][i] = per_seed[i]
    if 6 in items:
        summary["items"][6] = {"fit_s": fit_times, "latency": lat, "per_seed": per_seed[6]}
    summary["cold_model"] = cmodel
    summary["wall_s"] = time.perf_counter() - t_start
    write(summary, out, log)
    log(f"done in {summary['wall_s']:.0f} s: {out / 'report.md'}")
    return summary


def machine() -> dict:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_at_start": load}


# ---- report ---------------------------------------------------------------------------------------------------
def seeds_of(recs: list[dict], *path: str) -> list[float]:
    out = []
    for r in recs:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
            if v is None:
                break
        out.append(float("nan") if v is None else float(v))
    return out


def ordered_labels(recs: list[dict], key: str = "routers") -> list[str]:
    labels: list[str] = []
    for r in recs:
        for k in r.get(key, {}):
            if k not in labels:
                labels.append(k)
    return labels


def acc_at_best_tokens(recs: list[dict], label: str) -> list[float]:
    """Per seed: the accuracy of the router's (tokens, accuracy) hull at the best pair's output tokens (nan where
    the router cannot go that cheap)."""
    out = []
    for r in recs:
        cv = r.get("curves", {}).get(label)
        t = np.asarray(cv["tokens"], dtype=float) if cv else np.array([np.nan])
        if cv is None or not np.isfinite(t).all() or not np.isfinite(r["ref"]["best_tokens"]):
            out.append(float("nan"))
            continue
        out.append(float(M.score_at_cost(t, np.asarray(cv["score"], dtype=float), r["ref"]["best_tokens"])))
    return out


def report_item1(recs: list[dict], info: dict, out: Path, figs: list) -> str:
    n = len(recs)
    L = []
    ref_best = [r["ref"]["best"] for r in recs]
    L.append(f"Reference: the best single candidate on each seed's test split: "
             f"{', '.join(f'`{b}`' for b in ref_best)}; accuracy {fmt(seeds_of(recs, 'ref', 'best_score'))}, "
             f"output tokens {fmt(seeds_of(recs, 'ref', 'best_tokens'), '{:.0f}')}, "
             f"${fmt(seeds_of(recs, 'ref', 'best_cost'), '{:.3g}')}/query; oracle accuracy "
             f"{fmt(seeds_of(recs, 'ref', 'oracle_score'))}.")
    L.append("")
    head = ["router", "acc (λ=0)", "out tok (λ=0)", "peak", "AIQ", "acc at the best pair's tokens",
            "tokens to best acc (hull)", "token saving (hull)", "token saving (cheapest λ point)", "$ to best acc",
            "$ saving"]
    rows = []
    for lbl in ordered_labels(recs):
        g = lambda k, lbl=lbl: seeds_of(recs, "routers", lbl, k)  # noqa: E731
        rows.append([f"**{lbl}**" if lbl.startswith("rtr") else lbl, fmt(g("acc0")), fmt(g("tokens0"), "{:.0f}"),
                     fmt(g("peak")), fmt(g("aiq")), fmt(acc_at_best_tokens(recs, lbl)),
                     fmt(g("tok_to_best"), "{:.0f}"), fmt(g("saving_tok"), pct=True),
                     fmt(g("saving_tok_pt"), pct=True), fmt(g("cost_to_best"), "{:.3g}"),
                     fmt(g("saving_usd"), pct=True)])
    L.append(table(head, rows))
    L.append("")
    L.append("`[tokens]`: swept on predicted accuracy − λ·predicted output tokens (RTR's paper objective); "
             "otherwise on predicted accuracy − λ·predicted USD cost. λ = 0 is the first point of the sweep. "
             "Token/USD savings are relative to the best single candidate at its accuracy: on the hull of the "
             "realised (tokens, accuracy) points (randomising between two λ's decisions), or at the cheapest λ "
             "point reaching it; '—' / (k/n): reached in k of n seeds. 'acc at the best pair's tokens': the hull's "
             "accuracy at the best pair's mean output tokens (the other side of the same comparison). AIQ: area "
             "under the accuracy-vs-USD hull between the cheapest and the dearest candidate, normalised.")
    key = "rtr [tokens]" if any("rtr [tokens]" in r["routers"] for r in recs) else "rtr"
    sv = seeds_of(recs, "routers", key, "saving_tok")
    svp = seeds_of(recs, "routers", key, "saving_tok_pt")
    holds = sum(1 for v in sv if np.isfinite(v) and v > CLAIM_SAVING)
    holds_p = sum(1 for v in svp if np.isfinite(v) and v > CLAIM_SAVING)
    reached = sum(1 for v in sv if np.isfinite(v))
    verdict = "holds" if holds == n else ("does not hold" if holds == 0 else "holds in some seeds only")
    L.append("")
    L.append(f"**Claim (RTR reaches the best pair's accuracy with > {CLAIM_SAVING:.0%} fewer output tokens): "
             f"{verdict} here.** `{key}` reached the best pair's test accuracy in {reached}/{n} seeds; output-token "
             f"saving at that accuracy {fmt(sv, pct=True)} on the hull ({holds}/{n} seeds > {CLAIM_SAVING:.0%}), "
             f"{fmt(svp, pct=True)} at the cheapest λ point reaching it ({holds_p}/{n} seeds > "
             f"{CLAIM_SAVING:.0%}).")
    sd = [saving_vs_train_best(r, key) for r in recs]
    if any("best-single (train-chosen)" in r["routers"] for r in recs):
        names = sorted({r["train_best"] for r in recs if "train_best" in r})
        acc_b = seeds_of(recs, "routers", "best-single (train-chosen)", "acc0")
        tok_b = seeds_of(recs, "routers", "best-single (train-chosen)", "tokens0")
        holds_d = sum(1 for v in sd if np.isfinite(v) and v > CLAIM_SAVING)
        L.append("")
        which = f": {', '.join(f'`{x}`' for x in names)}" if names else ""
        L.append(f"Against the pair chosen on each training split (what a deployment without a router runs{which}; "
                 f"test accuracy {fmt(acc_b)} at "
                 f"{fmt(tok_b, '{:.0f}')} output tokens), `{key}` reaches its accuracy with {fmt(sd, pct=True)} "
                 f"fewer output tokens on the hull ({holds_d}/{n} seeds > {CLAIM_SAVING:.0%}; '—' / (k/n): "
                 f"reached in k of n seeds).")
    L.append("")
    # fixed pairs
    pairs = ordered_labels(recs, "pairs")
    acc = {p: seeds_of(recs, "pairs", p, "acc") for p in pairs}
    pairs.sort(key=lambda p: -np.nanmean(acc[p]))
    L.append(f"Every fixed candidate ({len(pairs)}), test split, best first:")
    L.append("")
    L.append(table(["candidate", "accuracy", "output tokens", "$/query"],
                   [[p, fmt(acc[p]), fmt(seeds_of(recs, "pairs", p, "tokens"), "{:.0f}"),
                     fmt(seeds_of(recs, "pairs", p, "cost"), "{:.3g}")] for p in pairs]))
    L.append("")
    labels = [k for k in ordered_labels(recs) if k != "best-single (train-chosen)"]
    pts = {p: (float(np.nanmean(seeds_of(recs, "pairs", p, "tokens"))), float(np.nanmean(acc[p]))) for p in pairs}
    curves_t = {k: mean_curve(recs, k, "tokens") for k in labels}
    f1 = plot_curves(curves_t, pts, "mean output tokens per query (log)", out / "item1_accuracy_vs_tokens.png",
                     f"{info.get('name', '')}: accuracy vs output tokens")
    pts_c = {p: (float(np.nanmean(seeds_of(recs, "pairs", p, "cost"))), float(np.nanmean(acc[p]))) for p in pairs}
    curves_c = {k: mean_curve(recs, k, "cost") for k in labels if not k.endswith("[tokens]")}
    f2 = plot_curves(curves_c, pts_c, "mean cost per query, USD (log)", out / "item1_accuracy_vs_cost.png",
                     f"{info.get('name', '')}: accuracy vs cost")
    figs += [f for f in (f1, f2) if f]
    L += [f"![accuracy vs output tokens]({f1.name})" if f1 else "", "",
          f"![accuracy vs cost]({f2.name})" if f2 else ""]
    return "\n".join(L)


def report_item2(recs: list[dict], info: dict, out: Path, figs: list) -> str:
    n = len(recs)
    L = [f"Budget-agnostic routers choose among the default-budget candidates only "
         f"({len(recs[0]['agnostic_candidates'])} of {len(info['candidates'])}); R2-Router among all. Targets: "
         f"{', '.join(f'{f:.0%}' for f in LEVELS)} of the best single candidate's test accuracy "
         f"({fmt(seeds_of(recs, 'ref', 'best_score'))}, `{recs[0]['ref']['best']}` on seed {recs[0]['seed']}).", ""]
    head = ["router"] + [f"$ to {f:.0%}" for f in LEVELS] + [f"out tok to {f:.0%}" for f in LEVELS] + \
        ["AUDC", "QNC", "peak"]
    rows = []
    for lbl in ordered_labels(recs):
        g = lambda k, lbl=lbl: seeds_of(recs, "routers", lbl, k)  # noqa: E731
        rows.append([f"**{lbl}**" if lbl == "r2" else lbl] + [fmt(g(f"cost@{f:g}"), "{:.3g}") for f in LEVELS] +
                    [fmt(g(f"tok@{f:g}"), "{:.0f}") for f in LEVELS] + [fmt(g("audc")), fmt(g("qnc")),
                                                                        fmt(g("peak"))])
    L.append(table(head, rows))
    L.append("")
    L.append("Cost/tokens to reach a target: on the hull of the realised λ sweep; (k/n): reached in k of n seeds. "
             "AUDC/QNC: R2-Router's definitions on costs normalised by the global min/max over this table's curves "
             "(per seed); QNC's target is the best single candidate's accuracy, 1.0 = never reached.")
    L.append("")
    rr = []
    for f in LEVELS:
        v = seeds_of(recs, "ratio", f"{f:g}")
        vt = seeds_of(recs, "ratio", f"tok{f:g}")
        ok = sum(1 for x in v if np.isfinite(x) and x >= CLAIM_RATIO)
        rr.append([f"{f:.0%}", fmt(v, "{:.2f}"), fmt(vt, "{:.2f}"), f"{ok}/{n}"])
    L.append(table(["target", "cost ratio (best budget-agnostic / R2)", "output-token ratio",
                    f"seeds with ratio ≥ {CLAIM_RATIO:g}"], rr))
    v100 = seeds_of(recs, "ratio", "1")
    ok = sum(1 for x in v100 if np.isfinite(x) and x >= CLAIM_RATIO)
    L.append("")
    L.append(f"**Claim (same quality at 4–5× lower cost): at 100% of the best single's accuracy R2-Router's cost "
             f"is {fmt(v100, '{:.2f}')}× lower than the cheapest budget-agnostic router's; ≥ {CLAIM_RATIO:g}× in "
             f"{ok}/{n} seeds — {'holds' if ok == n else 'does not hold' if ok == 0 else 'holds in some seeds'}.**")
    labels = ordered_labels(recs)
    f1 = plot_curves({k: mean_curve(recs, k, "cost") for k in labels}, {}, "mean cost per query, USD (log)",
                     out / "item2_accuracy_vs_cost.png", f"{info.get('name', '')}: R2-Router vs budget-agnostic")
    f2 = plot_cost_to_accuracy(recs, labels, out / "item2_r2_cost_to_accuracy.png",
                               f"{info.get('name', '')}: cost to reach a share of the best single's accuracy")
    figs += [f for f in (f1, f2) if f]
    L += ["", f"![accuracy vs cost]({f1.name})" if f1 else "", "", f"![cost to accuracy]({f2.name})" if f2 else ""]
    return "\n".join(L)


def report_item3(recs: list[dict], info: dict, out: Path, figs: list) -> str:
    n = len(recs)
    head = ["router", "AIQ", "acc (λ=0)", "peak", "$ to best single acc", "$ saving", "token saving (hull)"]
    rows = []
    for lbl in ("joint", "rtr", "r2"):
        g = lambda k, lbl=lbl: seeds_of(recs, "routers", lbl, k)  # noqa: E731
        rows.append([lbl, fmt(g("aiq")), fmt(g("acc0")), fmt(g("peak")), fmt(g("cost_to_best"), "{:.3g}"),
                     fmt(g("saving_usd"), pct=True), fmt(g("saving_tok"), pct=True)])
    L = [table(head, rows), ""]
    m = seeds_of(recs, "margin")
    k = sum(1 for r in recs if r.get("matches"))
    blends = [str(r.get("blend")) for r in recs]
    L.append(f"Joint's chosen blend per seed: {', '.join(blends)}. AIQ margin joint − max(RTR, R2): "
             f"{fmt(m, '{:+.4f}')}.")
    L.append("")
    L.append(f"**Requirement (joint at least matches the better of RTR and R2-Router, AIQ within {MATCH_TOL}): "
             f"met in {k}/{n} seeds{'' if k == n else ' — not met everywhere'}.**")
    f1 = plot_curves({k2: mean_curve(recs, k2, "cost") for k2 in ("joint", "rtr", "r2")}, {},
                     "mean cost per query, USD (log)", out / "item3_joint.png", f"{info.get('name', '')}: joint")
    if f1:
        figs.append(f1)
        L += ["", f"![joint vs rtr vs r2]({f1.name})"]
    return "\n".join(L)


def report_item4(recs: list[dict]) -> str:
    head = ["features", "AIQ", "acc (λ=0)", "peak", "token saving (hull)", "AUC P(correct)", "Brier",
            "token MAE", "epochs", "fit s"]
    rows = []
    for feat in ("combined", "text", "learnable"):
        g = lambda k, feat=feat: seeds_of(recs, "routers", feat, k)  # noqa: E731
        rows.append([feat, fmt(g("aiq")), fmt(g("acc0")), fmt(g("peak")), fmt(g("saving_tok"), pct=True),
                     fmt(g("auc")), fmt(g("brier")), fmt(g("tok_mae"), "{:.1f}"), fmt(g("epochs"), "{:.0f}"),
                     fmt(g("fit_s"), "{:.1f}")])
    return table(head, rows) + "\n\ncombined = the paper (query ⊕ description ⊕ learnable embeddings); " \
        "text = description embeddings only; learnable = learnable tables only. AUC/Brier of P(correct) and the " \
        "token MAE on every test cell."


def report_item5(recs: list[dict], info: dict, out: Path, figs: list) -> str:
    model = recs[0]["model"]
    L = [f"Held-out model: `{model}` ({len(recs[0]['new_candidates'])} candidates). n labelled training queries "
         "of it (the same n queries for every method); metrics on the test split. AUC/Brier/cell acc: the new "
         "candidates' P(correct) against their outcomes; acc (λ=0) and AIQ: the router over all candidates; "
         "share new: how often λ = 0 picks the new model.", ""]
    head = ["method", "n", "AUC", "Brier", "cell acc", "acc (λ=0)", "AIQ", "share new", "time s"]
    rows = []
    ns = sorted({int(n) for r in recs for n in r.get("by_n", {})})
    methods = []
    for r in recs:
        for n in r.get("by_n", {}):
            for meth in r["by_n"][n]:
                if meth not in methods:
                    methods.append(meth)
    for meth in methods:
        for n in ns:
            g = lambda k, n=n, meth=meth: [  # noqa: E731
                r.get("by_n", {}).get(n, r.get("by_n", {}).get(str(n), {})).get(meth, {}).get(k, float("nan"))
                for r in recs]
            rows.append([meth, n, fmt(g("auc")), fmt(g("brier")), fmt(g("cell_acc")), fmt(g("acc0")), fmt(g("aiq")),
                         fmt(g("share_new"), "{:.2f}"), fmt(g("time_s"), "{:.2f}")])
    for lbl in ordered_labels(recs, "rows"):
        g = lambda k, lbl=lbl: seeds_of(recs, "rows", lbl, k)  # noqa: E731
        rows.append([lbl, "all" if "all" in lbl else "0", fmt(g("auc")), fmt(g("brier")), fmt(g("cell_acc")),
                     fmt(g("acc0")), fmt(g("aiq")), fmt(g("share_new"), "{:.2f}"), ""])
    L.append(table(head, rows))
    L.append("")
    L.append("rtr cold start: `RTRRouter.add_candidates` (the new model's learnable embedding starts at the "
             "description projection; only it is fine-tuned). r2 cold start: `R2Router.add_candidates` (the new "
             "model's own quality/token predictors fitted on the n queries). rtr from scratch: RTR retrained on all "
             "other candidates' training outcomes plus the same n queries of the new model.")
    f = plot_cold(recs, methods, ns, out / "item5_cold_start.png", f"{info.get('name', '')}: adding {model}")
    if f:
        figs.append(f)
        L += ["", f"![cold start]({f.name})"]
    return "\n".join(L)


def report_item6(s6: dict) -> str:
    rows = [[k, fmt(v, "{:.2f}"), len(v)] for k, v in sorted(s6["fit_s"].items(), key=lambda kv: -np.mean(kv[1]))]
    L = ["Training time (fit on the training split, seconds; mean ± std over the seeds that fitted it):", "",
         table(["router", "fit s", "fits"], rows), ""]
    lat = s6.get("latency") or {}
    if "error" in lat:
        L.append(f"Latency not measured: {lat['error']}")
    elif lat:
        L.append(f"Per-query decision latency at batch 1, ms, over {lat['n']} test queries of the first seed "
                 "(encode the query text with the sentence encoder, no cache + predict + decide at a middle λ; "
                 f"torch/BLAS on {lat.get('threads', '?')} thread(s)):")
        L.append("")
        rows = [[k, f"{v['p50']:.1f}", f"{v['p99']:.1f}", f"{v['encode_p50']:.1f}", f"{v['decide_p50']:.2f}",
                 f"{v['decide_p99']:.2f}"] for k, v in lat.items() if isinstance(v, dict)]
        L.append(table(["router", "p50", "p99", "encode p50", "predict+decide p50", "predict+decide p99"], rows))
    return "\n".join(L)


def write(summary: dict, out: Path, log: Log) -> None:
    info = summary["info"]
    info["name"] = summary["data"]
    figs: list[Path] = []
    L = [f"# Reasoning routers on {summary['data']}", ""]
    if summary.get("command"):
        L += ["```", summary["command"], "```", ""]
    mach = summary["machine"]
    L.append(f"Data: {info['queries']} queries × {len(info['candidates'])} candidates ({len(info['models'])} "
             f"models; strategies {', '.join(info['strategies']) or '—'}; limited budgets "
             f"{', '.join(map(str, info['budgets'])) or 'none'}) — {info.get('mode', '')}. Seeds "
             f"{summary['seeds']}; split 60/20/20 per seed, train + val for training, test for every number. "
             f"Mean ± std over seeds. Wall time {summary.get('wall_s', 0):.0f} s on {mach['cpus']} CPUs "
             f"(load average at start {mach['loadavg_at_start']}).")
    if summary["notes"]:
        L += ["", "Notes:", ""] + [f"- {n}" for n in dict.fromkeys(summary["notes"])]
    items = summary.get("items", {})
    for i in sorted(ITEM_TITLES):
        L += ["", f"## {i}. {ITEM_TITLES[i]}", ""]
        recs = items.get(i)
        if recs is None or (isinstance(recs, list) and not recs):
            L.append("Skipped (see the notes above)." if summary.get("items_run") is not None or summary["notes"]
                     else "Not run.")
            continue
        try:
            if i == 1:
                L.append(report_item1(recs, info, out, figs))
            elif i == 2:
                L.append(report_item2(recs, info, out, figs))
            elif i == 3:
                L.append(report_item3(recs, info, out, figs))
            elif i == 4:
                L.append(report_item4(recs))
            elif i == 5:
                L.append(report_item5(recs, info, out, figs))
            elif i == 6:
                L.append(report_item6(recs))
        except Exception as e:  # noqa: BLE001 - a broken table must not lose the others
            log.note(f"report of item {i} failed: {type(e).__name__}: {e}")
            L.append(f"(report failed: {e})")
    (out / "report.md").write_text("\n".join(L) + "\n")
    summary["figures"] = [f.name for f in figs]
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json))


def rewrite(out: Path, log: Log) -> None:
    """report.md and the plots again from summary.json (JSON turned the int keys into strings)."""
    summary = json.loads((out / "summary.json").read_text())
    items = {}
    for k, v in summary.get("items", {}).items():
        if int(k) == 5:
            for r in v:
                r["by_n"] = {int(n): row for n, row in r.get("by_n", {}).items()}
        items[int(k)] = v
    summary["items"] = items
    write(summary, out, log)
    log(f"re-wrote {out / 'report.md'}")


# ---- plots ----------------------------------------------------------------------------------------------------
def mean_curve(recs: list[dict], label: str, x: str) -> tuple[np.ndarray, np.ndarray] | None:
    cs = [r["curves"][label] for r in recs if label in r.get("curves", {})]
    if not cs:
        return None
    n = min(len(c["score"]) for c in cs)
    xs = np.nanmean([np.asarray(c[x][:n], dtype=float) for c in cs], axis=0)
    ys = np.mean([np.asarray(c["score"][:n], dtype=float) for c in cs], axis=0)
    ok = np.isfinite(xs) & np.isfinite(ys)
    return (xs[ok], ys[ok]) if ok.any() else None


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: dict, points: dict, xlabel: str, path: Path, title: str) -> Path | None:
    curves = {k: v for k, v in curves.items() if v is not None and len(v[0])}
    if not curves and not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    allx = []
    cmap = plt.get_cmap("tab20")
    for i, (k, (x, y)) in enumerate(curves.items()):
        color = "k" if k == "oracle" else cmap(i % 20)
        main = k.startswith(("rtr", "r2", "joint"))
        fx, fy = M.pareto_frontier(x, y)  # the operating points not beaten by a cheaper one
        ax.plot(fx, fy, "-" if main else "--", marker="o", ms=3, lw=2 if main else 1.1, label=k, color=color)
        ax.scatter(x, y, s=6, color=color, alpha=0.35, zorder=1)
        allx.append(np.asarray(x))
    if points:
        px = np.array([v[0] for v in points.values()])
        py = np.array([v[1] for v in points.values()])
        ok = np.isfinite(px) & np.isfinite(py)
        ax.scatter(px[ok], py[ok], marker="x", color="0.4", s=25, zorder=3, label="fixed candidates")
        names = list(points)
        order = np.argsort(-np.where(ok, py, -np.inf))
        for j in order[:6]:
            if ok[j]:
                ax.annotate(names[j].replace("|default", ""), (px[j], py[j]), fontsize=6, color="0.25",
                            xytext=(4, 2), textcoords="offset points")
        allx.append(px[ok])
    ax_all = np.concatenate(allx) if allx else np.array([1.0])
    if (ax_all > 0).all() and ax_all.size and ax_all.max() / max(ax_all.min(), 1e-300) > 5:
        ax.set_xscale("log")
    else:
        xlabel = xlabel.replace(" (log)", "")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (test)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_cost_to_accuracy(recs: list[dict], labels: list[str], path: Path, title: str) -> Path | None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    any_ = False
    for k in labels:
        ys = [np.nanmean(seeds_of(recs, "routers", k, f"cost@{f:g}")) if finite(
            seeds_of(recs, "routers", k, f"cost@{f:g}")).size else np.nan for f in LEVELS]
        if np.isfinite(ys).any():
            ax.plot([f * 100 for f in LEVELS], ys, "-o" if k == "r2" else "--o", label=k, lw=2 if k == "r2" else 1)
            any_ = True
    if not any_:
        plt.close(fig)
        return None
    ax.set_yscale("log")
    ax.set_xlabel("target: % of the best single candidate's accuracy")
    ax.set_ylabel("mean USD per query to reach it (hull)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_cold(recs: list[dict], methods: list[str], ns: list[int], path: Path, title: str) -> Path | None:
    if not ns:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, lab in ((axes[0], "auc", "AUC of the new candidates' P(correct)"),
                         (axes[1], "acc0", "router accuracy at λ = 0")):
        for meth in methods:
            ys = []
            for n in ns:
                v = [r.get("by_n", {}).get(n, {}).get(meth, {}).get(key, np.nan) for r in recs]
                ys.append(np.nanmean(v) if finite(v).size else np.nan)
            ax.plot(ns, ys, "-o", label=meth)
        for lbl in ordered_labels(recs, "rows"):
            v = seeds_of(recs, "rows", lbl, key)
            if finite(v).size:
                ax.axhline(np.nanmean(v), ls=":", color="0.4" if "all" in lbl else "0.7", label=lbl)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("labelled queries of the new model (n)")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- CLI ------------------------------------------------------------------------------------------------------
def parse_ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.replace(" ", "").split(",") if x)


def main(argv: Sequence[str] | None = None, features: np.ndarray | None = None, encode: Callable | None = None,
         data: RoutingData | None = None) -> int:
    """CLI entry. ``data``/``features``/``encode`` let a test pass a table, its query features and an encoder
    directly (then ``--data`` is only its display name)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="built-in dataset name or routecraft data folder")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--items", default="auto", help="which items to run, e.g. 1,4 (default 'auto': all that apply; "
                    "on model-only data 1 and 6, the others on request)")
    ap.add_argument("--report-only", action="store_true", help="re-write report.md and the plots from "
                    "OUT/summary.json without fitting anything")
    ap.add_argument("--fast", action="store_true", help="small networks (for tests and quick looks)")
    ap.add_argument("--set", action="append", default=[], metavar="ROUTER.KEY=VALUE",
                    help="override a router setting, e.g. --set rtr.epochs=50 (JSON values)")
    ap.add_argument("--min-coverage", type=float, default=0.9)
    ap.add_argument("--cold-n", default="5,10,20,40")
    ap.add_argument("--cold-model", default=None)
    ap.add_argument("--latency-n", type=int, default=100)
    ap.add_argument("--latency-threads", type=int, default=1, help="torch/BLAS threads while timing decisions")
    ap.add_argument("--lambdas", type=int, default=60)
    ap.add_argument("--encoder", default=None)
    ap.add_argument("--first-queries", type=int, default=None, metavar="N",
                    help="use only the data's first N queries (in its queries table's order), so that a result on "
                    "a dataset that keeps growing (routecraft's own, collected in chunks) can be reproduced later")
    a = ap.parse_args(argv)
    if a.first_queries is not None and a.first_queries < 10:
        ap.error(f"--first-queries must be at least 10, got {a.first_queries}")
    params = copy.deepcopy(FAST) if a.fast else {k: {} for k in FAST}
    for item in a.set:
        key, _, val = item.partition("=")
        router, _, k = key.partition(".")
        try:
            v = json.loads(val)
        except json.JSONDecodeError:
            v = val
        params.setdefault(router, {})[k] = v
    st = Settings(items=(1, 2, 3, 4, 5, 6) if a.items == "auto" else parse_ints(a.items), params=params,
                  n_lambdas=a.lambdas, min_coverage=a.min_coverage,
                  cold_n=parse_ints(a.cold_n), cold_model=a.cold_model, latency_n=a.latency_n,
                  latency_threads=a.latency_threads, encoder=a.encoder, first_queries=a.first_queries)
    log = Log()
    st.auto_items = a.items == "auto"
    if a.report_only:
        rewrite(Path(a.out), log)
        return 0
    if data is None:
        from routecraft.data.resolve import resolve_data

        name, data = resolve_data(a.data)
    else:
        name = a.data
    cmd = "python benchmarks/reasoning_routers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    run(data, name, parse_ints(a.seeds), a.out, st, features=features, encode=encode, command=cmd, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
