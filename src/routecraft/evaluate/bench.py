"""The offline routing bench: fit each router on a train split, sweep λ on the test split, score with the field's
metrics, over several seeds.

Evaluation replays logged outcomes: the score and cost of a decision are the logged score and cost of the chosen
(query, candidate) cell. No model is called. Routers that observe answers before they decide (``cascade``,
``sequential``) are replayed the same way with the logged answers: the cost of a decision is the sum over every
consulted candidate, its score that of the answer returned; their rows also report consultations per query, the
escalation rate and the latency (each stage's slowest call, summed over stages), at the cheapest operating point that
reaches the train-best single's accuracy (else at their peak).

Two best-single references: ``best`` is the best candidate *on the test split* (a peek that favours the reference);
``train_best`` is the candidate a deployment without a router would run — the best *on the training split* — scored
on the test split. ``cost_to_best``/``saving_vs_best`` use the first, ``cost_to_train_best``/``saving_vs_train_best``
the second.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from routecraft.core import metrics as M
from routecraft.core.sweep import choose_indices, lambda_grid, sweep
from routecraft.data.features import DEFAULT_ENCODER, EmbeddingCache, features_for
from routecraft.data.query_text import query_texts
from routecraft.data.schema import Candidate, OutcomeMatrices, RoutingData
from routecraft.evaluate.html_report import render_html, write_html
from routecraft.evaluate.plots import plot_tradeoff
from routecraft.routers import (
    MultiStepRouter,
    ObservingRouter,
    Prediction,
    Router,
    TabularRouter,
    get_router_class,
    make_router,
)

DEFAULT_ROUTERS = ["random", "cheapest", "best-single", "knn", "mlp", "mf", "linear", "ensemble", "oracle"]
#: added to the defaults where the outcomes carry extracted answers (they observe them)
OBSERVING_DEFAULTS = ["cascade", "sequential"]


def default_routers(data: RoutingData) -> list[str]:
    """The default router list for ``data``: the up-front routers, plus the observing ones where there are answers."""
    o = data.outcomes
    has_answers = "prediction" in o.columns and bool(o["prediction"].notna().any())
    out = list(DEFAULT_ROUTERS)
    if has_answers:
        out[out.index("oracle"):out.index("oracle")] = OBSERVING_DEFAULTS
    return out


def parse_router_spec(spec: str) -> tuple[str, str, dict]:
    """``name`` or ``name:key=value,key=value`` or ``label=name:...`` -> (label, name, params)."""
    label = None
    if "=" in spec.split(":", 1)[0]:
        label, spec = spec.split("=", 1)
    name, _, rest = spec.partition(":")
    params: dict = {}
    for item in filter(None, rest.split(",")):
        if "=" not in item:
            raise ValueError(f"router spec {spec!r}: parameter {item!r} is not key=value")
        k, v = item.split("=", 1)
        params[k.strip()] = _parse_value(v.strip())
    return label or (name if not params else f"{name}({rest})"), name, params


def _parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    return v


@dataclass
class BenchResult:
    data_name: str
    seeds: list[int]
    routers: list[str]
    per_seed: list[dict] = field(default_factory=list)  # one dict per (seed, router): metrics + curve
    singles: pd.DataFrame | None = None                 # per candidate: mean cost/score over seeds
    summary: pd.DataFrame | None = None                 # per router: mean ± std of each metric
    timings: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)


METRIC_COLUMNS = ["peak", "aiq", "apgr", "cpt50", "cpt80", "audc", "qnc", "cost_to_best", "saving_vs_best",
                  "cost_to_train_best", "saving_vs_train_best", "gap_closed", "consultations", "escalation_rate",
                  "latency_s", "fit_s"]


def _reference(test: OutcomeMatrices, train: OutcomeMatrices | None = None) -> dict:
    mean_s, mean_c = test.score.mean(0), test.cost.mean(0)
    # best single: highest mean test score, ties -> cheaper
    order = np.lexsort((mean_c, -mean_s))
    best = int(order[0])
    cheap = int(np.lexsort((-mean_s, mean_c))[0])
    oracle_s = float(test.score.max(1).mean())
    return {"best": test.candidates[best].id, "best_score": float(mean_s[best]), "best_cost": float(mean_c[best]),
            "cheapest": test.candidates[cheap].id, "cheapest_score": float(mean_s[cheap]),
            "cheapest_cost": float(mean_c[cheap]), "oracle_score": oracle_s,
            "max_cost": float(mean_c.max()), "min_cost": float(mean_c.min()),
            **_train_best(test, train)}


def _train_best(test: OutcomeMatrices, train: OutcomeMatrices | None) -> dict:
    """The candidate with the best mean score on the training split (ties: cheaper), scored on the test split."""
    if train is None:
        return {}
    col = {c.id: j for j, c in enumerate(test.candidates)}
    tr_s, tr_c = train.score.mean(0), train.cost.mean(0)
    j_tr = int(np.lexsort((tr_c, -tr_s))[0])
    j = col[train.candidates[j_tr].id]
    return {"train_best": test.candidates[j].id, "train_best_score": float(test.score[:, j].mean()),
            "train_best_cost": float(test.cost[:, j].mean())}


def _curve_metrics(cost: np.ndarray, score: np.ndarray, ref: dict) -> dict:
    c_lo, c_hi = ref["min_cost"], ref["max_cost"]
    out = {"peak": M.peak(score),
           "aiq": M.aiq(cost, score, c_lo, c_hi)}
    weak = (ref["cheapest_cost"], ref["cheapest_score"])
    strong = (ref["best_cost"], ref["best_score"])
    if strong[1] > weak[1] and strong[0] > weak[0]:
        out["apgr"] = M.apgr(cost, score, weak[0], weak[1], strong[0], strong[1])
        out["cpt50"] = M.cpt(cost, score, weak[0], weak[1], strong[0], strong[1], 0.5)[0]
        out["cpt80"] = M.cpt(cost, score, weak[0], weak[1], strong[0], strong[1], 0.8)[0]
    else:
        out["apgr"] = out["cpt50"] = out["cpt80"] = float("nan")
    c_reach = M.cost_to_reach(cost, score, ref["best_score"])
    out["cost_to_best"] = c_reach
    out["saving_vs_best"] = (M.saving(cost, score, ref["best_cost"], ref["best_score"]) if ref["best_cost"] > 0
                             else float("nan"))
    if "train_best_score" in ref:
        out["cost_to_train_best"] = M.cost_to_reach(cost, score, ref["train_best_score"])
        out["saving_vs_train_best"] = (M.saving(cost, score, ref["train_best_cost"], ref["train_best_score"])
                                       if ref["train_best_cost"] > 0 else float("nan"))
    gap = ref["oracle_score"] - ref["best_score"]
    out["gap_closed"] = (M.gap_closed_at_cost(cost, score, ref["best_cost"], ref["best_score"], ref["oracle_score"])
                         if gap > 0 else float("nan"))
    return out


def preparation_notes(filled: int, dropped: list[str], n_kept: int, n_queries: int, n_candidates: int) -> list[str]:
    """What ``RoutingData.for_routers`` did, in words (the bench and ``routecraft train`` print them)."""
    notes = []
    if filled:
        notes.append(f"note: filled {filled} cells whose strategy does not apply to the query's task (PAL on a "
                     "multiple-choice question: never collected, never sent) as score 0 at the query's dearest cost")
    if dropped:
        notes.append(f"note: dropped {len(dropped)} candidates (the set leaving the most complete cells: "
                     f"{n_kept} of {n_queries} queries × {n_candidates} candidates): {', '.join(dropped)}")
    if n_kept < n_queries:
        notes.append(f"note: {n_queries - n_kept} of {n_queries} queries lack a cell of a kept candidate and are "
                     "left out")
    return notes


def run_bench(data: RoutingData, routers: list[str] | None = None, seeds: Iterable[int] = (0, 1, 2),
              features: np.ndarray | None = None, encoder: str | None = None, n_lambdas: int = 60,
              fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), data_name: str = "data",
              progress: Callable[[str], None] | None = None, qnc_rate: float = 1.0,
              min_coverage: float = 0.9) -> BenchResult:
    """Run every router on every seed. ``features`` must align with ``data.queries`` rows (computed if None)."""
    routers = list(routers or default_routers(data))
    specs = [parse_router_spec(s) for s in routers]
    for _, name, _ in specs:
        check_benchable(name)
    seeds = list(seeds)
    n_q = len(data.queries)
    data, filled, dropped = data.for_routers(min_coverage)
    if progress:
        for note in preparation_notes(filled, dropped, len(data.queries), n_q, len(data.candidates)):
            progress(note)
    timings: dict = {"dropped_candidates": dropped, "filled_inapplicable": filled}
    if len(data.queries) < 10:
        raise ValueError(f"{data_name}: only {len(data.queries)} queries have an outcome for every candidate; "
                         "the bench needs at least 10")
    encoder = encoder or DEFAULT_ENCODER
    if features is None and any(uses_features(name) for _, name, _ in specs):
        t0 = time.perf_counter()
        if progress:
            progress(f"embedding {len(data.queries)} queries with {encoder}")
        features = EmbeddingCache(encoder).embed(query_texts(data.queries))
        timings["embed_s"] = time.perf_counter() - t0
    feats = features_for(data, features)
    result = BenchResult(data_name, seeds, [lbl for lbl, _, _ in specs], timings=timings)
    singles_acc: dict[str, list] = {}
    t_all = time.perf_counter()
    for seed in seeds:
        sp = data.split(seed=seed, fractions=fractions)
        train = RoutingData(pd.concat([sp.train.queries, sp.val.queries], ignore_index=True),
                            pd.concat([sp.train.outcomes, sp.val.outcomes], ignore_index=True), data.meta)
        test = sp.test
        truth = test.matrices()
        ref = _reference(truth, train.matrices(candidates=truth.candidates))
        ref["seed"] = seed
        result.reference.setdefault("per_seed", []).append(ref)
        lambdas = lambda_grid(train.matrices().cost.mean(0), n_lambdas)
        for j, cand in enumerate(truth.candidates):
            singles_acc.setdefault(cand.id, []).append((truth.cost[:, j].mean(), truth.score[:, j].mean()))
        curves = {}
        fitted: dict[str, Router] = {}  # routers of this seed fitted with default parameters, by name
        for label, name, params in specs:
            if progress:
                progress(f"seed {seed}: {label}")
            router: Router = make_router(name, **({"seed": seed} if takes_seed(name) and "seed" not in params
                                                   else {}), **params)
            if isinstance(router, TabularRouter):
                # an ensemble takes members already fitted on this same train split (same seed, default
                # parameters) instead of fitting them again; its fit_s is then only its own extra work
                router.use_fitted(dict(fitted))
            t0 = time.perf_counter()
            fit_on = test if router.is_oracle else train
            router.fit(fit_on, feats(fit_on))
            fit_s = time.perf_counter() - t0
            if not params and not router.is_oracle:
                fitted[name] = router
            t0 = time.perf_counter()
            shares = None
            if isinstance(router, ObservingRouter):
                sw = replay_sweep(router, test, feats(test), lambdas)
                cands = [c.id for c in router.candidates]
            else:
                pred = router.predict(test.queries, feats(test))
                pred = align_prediction(pred, truth.candidates)
                sw = sweep(pred, truth, lambdas)
                cands = [c.id for c in pred.candidates]
                shares = routed_shares(pred, lambdas)
            predict_s = time.perf_counter() - t0
            curves[label] = sw
            result.per_seed.append({"seed": seed, "router": label, "fit_s": fit_s, "predict_s": predict_s,
                                    "curve": {k: np.asarray(v).tolist() for k, v in sw.items()},
                                    "candidates": cands, **({"shares": shares} if shares is not None else {})})
        # R2-Router's AUDC/QNC normalise cost with the global min/max over all methods' curves (per seed)
        all_c = np.concatenate([c["cost"] for c in curves.values()])
        g_lo, g_hi = float(all_c.min()), float(all_c.max())
        for rec in result.per_seed:
            if rec["seed"] != seed:
                continue
            sw = curves[rec["router"]]
            m = _curve_metrics(sw["cost"], sw["score"], ref)
            m.update(_observing_stats(sw, ref))
            nc = (sw["cost"] - g_lo) / (g_hi - g_lo) if g_hi > g_lo else np.zeros_like(sw["cost"])
            m["audc"] = M.audc(nc, sw["score"])
            m["qnc"] = M.qnc(nc, sw["score"], ref["best_score"] * qnc_rate)
            m["fit_s"] = rec["fit_s"]
            rec["metrics"] = m
    timings["routers_s"] = time.perf_counter() - t_all
    rows = []
    for cid, pts in singles_acc.items():
        a = np.array(pts)
        rows.append({"candidate": cid, "cost": a[:, 0].mean(), "score": a[:, 1].mean(),
                     "score_std": a[:, 1].std(ddof=1) if len(a) > 1 else 0.0})
    result.singles = pd.DataFrame(rows).sort_values("cost").reset_index(drop=True)
    result.summary = summarise(result)
    refs = result.reference["per_seed"]
    result.reference.update({k: float(np.mean([r[k] for r in refs])) for k in
                             ("best_score", "best_cost", "cheapest_score", "cheapest_cost", "oracle_score",
                              "train_best_score", "train_best_cost") if all(k in r for r in refs)})
    if all("train_best" in r for r in refs):
        result.reference["train_best"] = max(set(r["train_best"] for r in refs),
                                             key=[r["train_best"] for r in refs].count)
    result.reference["best"] = max(set(r["best"] for r in refs), key=[r["best"] for r in refs].count)
    result.reference["cheapest"] = max(set(r["cheapest"] for r in refs), key=[r["cheapest"] for r in refs].count)
    return result


def routed_shares(pred: Prediction, lambdas: Iterable[float]) -> list[list[list]]:
    """Per λ of the sweep, the share of test queries routed to each candidate that got any: ``[[candidate index
    (into the prediction's candidates), share], …]``, largest first, shares rounded to 4 decimals (the report's
    hover text; the same decisions as ``sweep``)."""
    out = []
    n = pred.score.shape[0]
    for lam in lambdas:
        counts = np.bincount(choose_indices(pred.score, pred.cost, lam=float(lam)), minlength=pred.score.shape[1])
        nz = np.flatnonzero(counts)
        nz = nz[np.argsort(-counts[nz], kind="stable")]
        out.append([[int(j), round(float(counts[j]) / n, 4)] for j in nz])
    return out


def replay_sweep(router: ObservingRouter, test: RoutingData, X: np.ndarray | None, lambdas: Iterable[float]) -> dict:
    """An observing router's curve: each λ's plan replayed on the logged answers of the test split."""
    pts = []
    for lam in lambdas:
        r = router.replay(test, X, float(lam))
        pts.append((float(lam), float(r.cost.mean()), float(r.score.mean()), float(r.calls.mean()),
                    float(r.escalated.mean()),
                    float(np.nanmean(r.latency)) if np.isfinite(r.latency).any() else float("nan")))
    a = np.array(pts)
    return {"lambda": a[:, 0], "cost": a[:, 1], "score": a[:, 2], "consultations": a[:, 3],
            "escalation_rate": a[:, 4], "latency_s": a[:, 5]}


def _observing_stats(sw: dict, ref: dict) -> dict:
    """Consultations, escalation rate and latency at the cheapest point that reaches the train-best single's score
    (else at the best-scoring point)."""
    if "consultations" not in sw:
        return {}
    cost, score = np.asarray(sw["cost"]), np.asarray(sw["score"])
    target = ref.get("train_best_score", ref["best_score"])
    ok = np.flatnonzero(score >= target - M.ATOL)
    i = int(ok[np.argmin(cost[ok])]) if ok.size else int(np.lexsort((cost, -score))[0])
    return {k: float(np.asarray(sw[k])[i]) for k in ("consultations", "escalation_rate", "latency_s")}


def align_prediction(pred: Prediction, cands: list[Candidate]) -> Prediction:
    """Reorder a prediction's columns to the truth's candidate order (error if a candidate is unknown)."""
    pos = {c.id: j for j, c in enumerate(pred.candidates)}
    missing = [c.id for c in cands if c.id not in pos]
    if missing:
        raise ValueError(f"router predicts no value for candidates {missing[:5]}")
    idx = [pos[c.id] for c in cands]
    return Prediction(list(cands), pred.score[:, idx], pred.cost[:, idx],
                      None if pred.tokens is None else pred.tokens[:, idx])


def uses_features(name: str) -> bool:
    """Whether the registered router ``name`` reads query features (embeddings)."""
    return get_router_class(name).uses_features


def takes_seed(name: str) -> bool:
    """Whether the registered router ``name`` takes a ``seed`` parameter (the bench passes the split seed)."""
    return get_router_class(name).takes_seed


def check_benchable(name: str) -> None:
    """The bench replays logged outcomes: it takes table routers and observing routers; others are refused with what
    to do instead (ValueError)."""
    cls = get_router_class(name)
    if issubclass(cls, MultiStepRouter):
        raise ValueError(f"{name} is trained from its config on the live pool, not fit on an outcomes table, so the "
                         f"bench cannot replay it; it has its own held-out evaluation (`python -m "
                         f"{cls.__module__.rsplit('.', 1)[0]} eval`)")
    if not issubclass(cls, (TabularRouter, ObservingRouter)):
        raise ValueError(f"{name} is not fit on an outcomes table, so the bench cannot replay it (it takes table "
                         f"routers and observing routers)")


def summarise(result: BenchResult) -> pd.DataFrame:
    rows = []
    for label in result.routers:
        recs = [r for r in result.per_seed if r["router"] == label]
        row = {"router": label, "n_seeds": len(recs)}
        for col in METRIC_COLUMNS:
            vals = np.array([r["metrics"].get(col, np.nan) for r in recs], dtype=float)
            finite = vals[np.isfinite(vals)]
            row[col] = float(finite.mean()) if finite.size else float("nan")
            row[col + "_std"] = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
            row[col + "_n"] = int(finite.size)
        rows.append(row)
    return pd.DataFrame(rows)


def mean_curve(result: BenchResult, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Average the per-seed curves of one router point-wise over λ (same grid index across seeds)."""
    recs = [r for r in result.per_seed if r["router"] == label]
    n = min(len(r["curve"]["cost"]) for r in recs)
    cost = np.mean([r["curve"]["cost"][:n] for r in recs], axis=0)
    score = np.mean([r["curve"]["score"][:n] for r in recs], axis=0)
    return cost, score


# ---- reporting -----------------------------------------------------------------------------------------------
_FMT = {"peak": ("Peak", "{:.3f}"), "aiq": ("AIQ", "{:.3f}"), "apgr": ("APGR", "{:.3f}"),
        "cpt50": ("CPT(50%)", "{:.3f}"), "cpt80": ("CPT(80%)", "{:.3f}"), "audc": ("AUDC", "{:.3f}"),
        "qnc": ("QNC", "{:.3f}"), "cost_to_best": ("$/q to best", "{:.3g}"),
        "saving_vs_best": ("saving vs best", "{:.1%}"), "cost_to_train_best": ("$/q to train-best", "{:.3g}"),
        "saving_vs_train_best": ("saving vs train-best", "{:.1%}"), "gap_closed": ("gap closed", "{:.1%}"),
        "consultations": ("calls/q", "{:.2f}"), "escalation_rate": ("escalated", "{:.1%}"),
        "latency_s": ("latency s", "{:.2f}"),
        "fit_s": ("fit s", "{:.2f}")}


def format_cell(row: pd.Series, col: str) -> str:
    """mean ± std over seeds; '(k/n)' when only k of the n seeds have a finite value (e.g. the target was reached
    in k seeds); '—' when none has."""
    v, sd = row[col], row.get(col + "_std", 0.0)
    if not np.isfinite(v):
        return "—"
    f = _FMT[col][1]
    k, n = int(row.get(col + "_n", row["n_seeds"])), int(row["n_seeds"])
    if col in ("saving_vs_best", "saving_vs_train_best", "gap_closed", "escalation_rate"):
        txt = f"{v:.1%} ± {sd:.1%}" if k > 1 else f"{v:.1%}"
    else:
        txt = f"{f.format(v)} ± {f.format(sd)}" if k > 1 else f.format(v)
    return txt + (f" ({k}/{n})" if k < n else "")


def markdown_table(result: BenchResult) -> str:
    cols = list(_FMT)
    head = "| router | " + " | ".join(_FMT[c][0] for c in cols) + " |"
    sep = "|---|" + "---|" * len(cols)
    lines = [head, sep]
    for _, row in result.summary.iterrows():
        lines.append(f"| {row['router']} | " + " | ".join(format_cell(row, c) for c in cols) + " |")
    ref = result.reference
    lines += ["", "Mean ± std over seeds; (k/n): only k of n seeds reached that target. Costs in USD per query.",
              "", f"Reference (test split, mean over seeds {result.seeds}): best single **{ref['best']}** "
                  f"score {ref['best_score']:.3f} at ${ref['best_cost']:.3g}/query; cheapest **{ref['cheapest']}** "
                  f"score {ref['cheapest_score']:.3f} at ${ref['cheapest_cost']:.3g}/query; oracle score "
                  f"{ref['oracle_score']:.3f}."
              + (f" Train-best single (chosen on the training split, what a deployment without a router runs): "
                 f"**{ref['train_best']}**, test score {ref['train_best_score']:.3f} at "
                 f"${ref['train_best_cost']:.3g}/query." if "train_best" in ref else ""),
              "calls/q and escalated: observing routers only, at their cheapest point reaching the train-best's "
              "score (else their peak)."]
    return "\n".join(lines)


def write_report(result: BenchResult, out: str | Path, title: str | None = None,
                 html: bool = False) -> dict[str, Path]:
    """``summary.json``, ``table.md`` and ``tradeoff.png`` in ``out``; with ``html`` also ``report.html`` (one
    self-contained file: the table and the plot with hover, :func:`write_html_report`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"data": result.data_name, "seeds": result.seeds, "routers": result.routers,
               "reference": result.reference, "timings": result.timings,
               "summary": json.loads(result.summary.to_json(orient="records")),
               "singles": json.loads(result.singles.to_json(orient="records")),
               "per_seed": result.per_seed}
    paths = {"json": out / "summary.json", "markdown": out / "table.md", "plot": out / "tradeoff.png"}
    paths["json"].write_text(json.dumps(summary, indent=1, default=_json_default))
    paths["markdown"].write_text(f"# {title or result.data_name}\n\n" + markdown_table(result) + "\n")
    curves = {lbl: mean_curve(result, lbl) for lbl in result.routers if lbl != "oracle"}
    oracle = mean_curve(result, "oracle") if "oracle" in result.routers else None
    singles = {r.candidate: (r.cost, r.score) for r in result.singles.itertuples()}
    plot_tradeoff(curves, singles, oracle, paths["plot"], title or result.data_name)
    if html:
        paths["html"] = write_html_report(json.loads(paths["json"].read_text()), out / "report.html", title)
    return paths


def write_html_report(summary: dict | str | Path, out_html: str | Path, title: str | None = None) -> Path:
    """The bench report as one self-contained HTML file, from a ``summary.json`` (its path or its dict): the
    metrics table (the Markdown table's cells) and the accuracy–cost plot (inline SVG; hover shows λ and the routed
    shares). Returns the path written."""
    if not isinstance(summary, dict):
        summary = json.loads(Path(summary).read_text())
    cols = list(_FMT)
    rows = []
    for rec in summary.get("summary", []):
        row = {k: (float("nan") if v is None else v) for k, v in rec.items()}
        rows.append([str(row["router"])] + [format_cell(row, c) for c in cols])
    notes = ("Mean ± std over seeds; (k/n): only k of n seeds reached that target. Costs in USD per query.",
             "calls/q and escalated: observing routers only, at their cheapest point reaching the train-best's "
             "score (else their peak).")
    return write_html(out_html, render_html(summary, ["router"] + [_FMT[c][0] for c in cols], rows,
                                            title or f"routecraft bench — {summary.get('data', '')}", notes))


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
