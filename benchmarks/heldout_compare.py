"""Held-out comparison of the multi-step routers (Router-R1, R2-Reasoner) with every pool model alone and with the
query-level routers of the bench, on the same GSM8K test questions.

    python benchmarks/heldout_compare.py --data data/routecraft-gsm8k \
        --eval "router-r1 a=0=runs/rr1-a0/eval.jsonl" --eval "router-r1 untrained=runs/rr1-untrained.jsonl" \
        --out runs/heldout

* ``--eval LABEL=FILE`` (repeatable): per-question JSONL written by ``python -m routecraft.routers.router_r1 eval
  ... --out FILE`` or ``python -m routecraft.routers.r2_reasoner eval ... --out FILE``; each row needs ``query_id``,
  a correctness field (``score`` or ``correct``) and ``cost_usd`` (the pool bill of the calls it made, input and
  output tokens at the pool's prices — the policy/decomposer's own tokens are local and not billed).
* The questions compared are those in every eval file that the collected dataset (``--data``) also has complete
  for every candidate below; numbers are over exactly that set (n is printed).
* Pool models alone: every (model, strategy) cell of the collected dataset at the default budget, same questions.
* Observe-then-decide routers (``cascade``, ``sequential``) over the same model × strategy candidates as RTR,
  cross-fitted the same way; their plans are replayed on the dataset's logged answers (the collected cells are
  greedy, so a replayed consultation is the call the pool would make), the cost being every consultation's.
  Router-R1 with ``call.targets: candidates`` consults the same candidates live, through the same executor
  (``routecraft.routers.consult``).
* Query-level routers (random, best-single, knn, mlp, mf, linear, oracle over the ``--strategy`` cell of each
  ``--models`` model; rtr over model × strategy): ``--folds``-fold cross-fitting over the compared questions —
  the router that decides a question was fit on every other complete question of the dataset, never on it. They
  decide at λ = 0 (highest predicted accuracy) and, for the plot, along a λ sweep.

Writes ``OUT/heldout.json``, ``OUT/heldout.md`` (the table) and ``OUT/heldout.png`` (accuracy against cost).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from routecraft.core.sweep import lambda_grid
from routecraft.data.features import features_for
from routecraft.data.importers.common import read_jsonl
from routecraft.data.query_text import query_texts
from routecraft.data.schema import Candidate, DataValidationError, RoutingData
from routecraft.evaluate.bench import align_prediction, takes_seed
from routecraft.evaluate.cells import wilson
from routecraft.routers import choose, make_router
from routecraft.routers.base import ObservingRouter

INSTRUCT = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
MODEL_ROUTERS = ["random", "best-single", "knn", "mlp", "mf", "linear", "oracle"]
#: observe-then-decide routers, over the model × strategy candidates (as RTR), replayed on the logged answers
OBSERVING_ROUTERS = ["cascade", "sequential"]


def _calls(r: dict):
    """Pool calls of one evaluated question: Router-R1's ``n_calls``, R2-Reasoner's ``calls`` (subtasks + the
    final-answer turn), else the number of subtasks."""
    if isinstance(r.get("n_calls"), (int, float)):
        return r["n_calls"]
    if isinstance(r.get("calls"), (int, float)) and not isinstance(r.get("calls"), bool):
        return r["calls"]
    return len(r.get("subtasks") or []) or None


def read_eval(label: str, path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SystemExit(f"--eval {label}={path}: no such file")
    try:
        raw = read_jsonl(path)
    except DataValidationError as exc:
        raise SystemExit(str(exc)) from None
    rows = []
    for i, r in enumerate(raw):
        where = f"{path}: record {i + 1}"
        if not isinstance(r, dict) or r.get("query_id") is None:
            raise SystemExit(f"{where} has no query_id")
        if "score" in r:
            score = float(r["score"])
        elif "correct" in r:
            score = float(bool(r["correct"]))
        else:
            raise SystemExit(f"{where} has neither 'score' nor 'correct'")
        if "cost_usd" not in r:
            raise SystemExit(f"{where} has no cost_usd")
        rows.append({"query_id": r["query_id"], "score": score, "cost_usd": float(r["cost_usd"]),
                     "calls": _calls(r)})
    if not rows:
        raise SystemExit(f"{path}: no rows")
    return pd.DataFrame(rows).drop_duplicates("query_id", keep="last").set_index("query_id")


def summary_row(method: str, kind: str, score: np.ndarray, cost: np.ndarray, calls=None) -> dict:
    n = len(score)
    lo, hi = wilson(float(np.sum(score)), n)
    row = {"method": method, "kind": kind, "n": n, "accuracy": float(np.mean(score)), "ci_lo": float(lo),
           "ci_hi": float(hi),
           "cost_usd_per_q": float(np.mean(cost))}
    if calls is not None:
        row["calls_per_q"] = float(np.nanmean(np.asarray(calls, dtype=float)))
    return row


def _fold_splits(data: RoutingData, X: np.ndarray, qids: list[str], cands: list[Candidate], folds: int, seed: int):
    """Per fold: (train split, test split, the test questions' positions in ``qids``, the feature lookup); the
    train split is every other complete question of the dataset."""
    sub = data.filter_candidates(cands).complete()
    all_ids = sub.queries["query_id"].tolist()
    feats = features_for(data, X)
    order = np.random.default_rng(seed).permutation(len(qids))
    fold_of = {qids[i]: k % folds for k, i in enumerate(order)}
    pos = {q: i for i, q in enumerate(qids)}
    for k in range(folds):
        test_ids = [q for q in qids if fold_of[q] == k]
        if not test_ids:
            continue
        test_set = set(test_ids)
        test = sub.subset(test_ids)
        yield (sub.subset([q for q in all_ids if q not in test_set]), test,
               [pos[q] for q in test.queries["query_id"]], feats)


def _realised(router, pred, test: RoutingData, Xt, cands: list[Candidate], lam: float):
    """(score, cost, calls) per test question of the router's decision at ``lam``: a table router's pick (``pred``,
    its prediction) scored on the logged cells, an observing router's plan replayed on the logged answers."""
    if pred is None:
        r = router.replay(test, Xt, lam)
        return r.score, r.cost, r.calls
    truth = test.matrices(candidates=cands)
    p = choose(align_prediction(pred, truth.candidates), lam=lam)
    rows = np.arange(len(p))
    return truth.score[rows, p], truth.cost[rows, p], np.ones(len(rows))


def cross_fit(data: RoutingData, X: np.ndarray, qids: list[str], cands: list[Candidate], router_name: str,
              folds: int, seed: int, lambdas: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per compared question, the cross-fitted router's realised score, cost and calls at λ=0; and mean score/cost
    along ``lambdas``. A table router's pick is scored on the logged cells; an observing router's plan is replayed
    on the logged answers (its cost: every consultation's)."""
    n = len(qids)
    s0, c0, k0 = np.zeros(n), np.zeros(n), np.ones(n)
    sl, cl = np.zeros((len(lambdas), n)), np.zeros((len(lambdas), n))
    for train, test, idx, feats in _fold_splits(data, X, qids, cands, folds, seed):
        router = make_router(router_name, **({"seed": seed} if takes_seed(router_name) else {}))
        fit_on = test if router.is_oracle else train
        router.fit(fit_on, feats(fit_on))
        Xt = feats(test.queries)
        pred = None if isinstance(router, ObservingRouter) else router.predict(test.queries, Xt)
        s0[idx], c0[idx], k0[idx] = _realised(router, pred, test, Xt, cands, 0.0)
        for li, lam in enumerate(lambdas):
            sl[li, idx], cl[li, idx], _ = _realised(router, pred, test, Xt, cands, float(lam))
    return s0, c0, k0, sl.mean(1), cl.mean(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/routecraft-gsm8k")
    ap.add_argument("--eval", action="append", default=[], metavar="LABEL=FILE")
    ap.add_argument("--models", default=",".join(INSTRUCT), help="pool models the query-level routers choose from")
    ap.add_argument("--strategy", default="cot", help="the strategy of the model-level routers' candidates")
    ap.add_argument("--rtr-strategies", default="direct,cot,cod,pal")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="only the first N compared questions")
    ap.add_argument("--out", default="runs/heldout")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    evals = {}
    for spec in args.eval:
        if "=" not in spec:
            raise SystemExit(f"--eval needs LABEL=FILE, got {spec!r}")
        label, path = spec.rsplit("=", 1)
        evals[label] = read_eval(label, Path(path))

    data = RoutingData.load(args.data)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    strategies = [s.strip() for s in args.rtr_strategies.split(",") if s.strip()]
    model_cands = [Candidate(m, args.strategy, None) for m in models]
    rtr_cands = [Candidate(m, s, None) for m in models for s in strategies]
    have = set(data.candidate_ids)
    missing = [c.id for c in rtr_cands if c.id not in have]
    if missing:
        raise SystemExit(f"{args.data}: no outcomes for candidate(s) {', '.join(missing)}")
    complete = set(data.filter_candidates(rtr_cands).complete().queries["query_id"])
    qids = [q for q in data.queries["query_id"] if q in complete]
    for df in evals.values():
        qids = [q for q in qids if q in df.index]
    if args.limit:
        qids = qids[: args.limit]
    if len(qids) < 2 * args.folds:
        raise SystemExit(f"only {len(qids)} questions are in every eval file and complete in {args.data} for "
                         f"{len(rtr_cands)} candidates; need at least {2 * args.folds}")
    print(f"{len(qids)} questions compared ({len(complete)} complete in the dataset)", file=sys.stderr)

    rows = []
    for label, df in evals.items():
        d = df.loc[qids]
        rows.append(summary_row(label, "multi-step", d["score"].to_numpy(), d["cost_usd"].to_numpy(),
                                d["calls"].to_numpy()) | {"full_n": len(df), "full_accuracy": float(df["score"].mean()),
                                                          "full_cost_usd_per_q": float(df["cost_usd"].mean())})
    wide = data.subset(qids).matrices(query_ids=qids, candidates=[Candidate(m, s, None) for m in
                                                                  sorted({c.model for c in data.candidates})
                                                                  for s in strategies
                                                                  if Candidate(m, s, None).id in have],
                                      require_complete=False)
    for j, c in enumerate(wide.candidates):
        ok = ~np.isnan(wide.score[:, j])
        if ok.all():
            rows.append(summary_row(f"{c.model} {c.strategy}", "model alone", wide.score[:, j], wide.cost[:, j]))

    from routecraft.data.features import EmbeddingCache

    t0 = time.perf_counter()
    X = EmbeddingCache().embed(query_texts(data.queries))
    embed_s = time.perf_counter() - t0
    lambdas = lambda_grid(data.filter_candidates(rtr_cands).complete().matrices().cost.mean(0), 40)
    curves = {}
    for name in MODEL_ROUTERS + ["rtr"]:
        cands = rtr_cands if name == "rtr" else model_cands
        t0 = time.perf_counter()
        s0, c0, _, sl, cl = cross_fit(data, X, qids, cands, name, args.folds, args.seed, lambdas)
        label = f"{name} ({'model x strategy' if name == 'rtr' else 'model, ' + args.strategy})"
        rows.append(summary_row(label, "query-level router", s0, c0) | {"seconds": time.perf_counter() - t0})
        curves[label] = {"cost": cl.tolist(), "score": sl.tolist()}
        print(f"{label}: acc {s0.mean():.3f} cost {c0.mean():.3g}", file=sys.stderr)

    for name in OBSERVING_ROUTERS:
        t0 = time.perf_counter()
        s0, c0, k0, sl, cl = cross_fit(data, X, qids, rtr_cands, name, args.folds, args.seed, lambdas)
        label = f"{name} (model x strategy, observes answers)"
        rows.append(summary_row(label, "observing router", s0, c0, k0) | {"seconds": time.perf_counter() - t0})
        curves[label] = {"cost": cl.tolist(), "score": sl.tolist()}
        print(f"{label}: acc {s0.mean():.3f} cost {c0.mean():.3g} calls {k0.mean():.2f}", file=sys.stderr)

    lines = [f"{len(qids)} held-out GSM8K test questions (the first {len(qids)} complete ones of {args.data}); "
             "cost = pool bill per question (USD, input + output tokens at the pool's reference prices).", "",
             "| method | kind | accuracy [95% CI] | cost / question (USD) | calls / question |",
             "|---|---|---|---|---|"]
    for r in rows:
        calls = r.get("calls_per_q")
        calls_s = "" if calls is None or not np.isfinite(calls) else f"{calls:.2f}"
        lines.append(f"| {r['method']} | {r['kind']} | {r['accuracy']:.3f} [{r['ci_lo']:.2f}, {r['ci_hi']:.2f}] | "
                     f"{r['cost_usd_per_q']:.3g} | {calls_s} |")
    md = "\n".join(lines) + "\n"
    (out / "heldout.md").write_text(md)
    meta = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()}",
            "n_questions": len(qids), "question_ids": qids, "embed_s": embed_s,
            "total_s": time.perf_counter() - t_start}
    (out / "heldout.json").write_text(json.dumps({"meta": meta, "rows": rows, "curves": curves}, indent=2,
                                                 default=float))
    plot(rows, curves, out / "heldout.png", len(qids))
    print(md)
    return 0


def plot(rows: list[dict], curves: dict, path: Path, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    for label, cv in curves.items():
        if label.startswith(("oracle", "random", "best-single")):
            continue
        c, s = np.asarray(cv["cost"]), np.asarray(cv["score"])
        o = np.argsort(c)
        ax.plot(c[o], s[o], lw=1, alpha=0.6, label=f"{label}, λ sweep")
    positive = [r["cost_usd_per_q"] for r in rows if r["cost_usd_per_q"] > 0]
    floor = min(positive) / 3 if positive else 1e-9  # zero cost (no call made) drawn at the left edge
    for r in rows:
        x, y = max(r["cost_usd_per_q"], floor), r["accuracy"]
        err = [[y - r["ci_lo"]], [r["ci_hi"] - y]]
        if r["kind"] == "model alone":  # grey, labelled in place
            ax.errorbar([x], [y], yerr=err, fmt="o", color="0.55", ms=5, capsize=2, elinewidth=0.6)
            ax.annotate(r["method"], (x, y), fontsize=6, color="0.3", xytext=(3, 2), textcoords="offset points")
        elif r["kind"] in ("query-level router", "observing router"):
            ax.errorbar([x], [y], yerr=err, fmt="s", ms=6, capsize=2, elinewidth=0.6, label=r["method"])
        else:
            ax.errorbar([x], [y], yerr=err, fmt="*", ms=13, capsize=3, label=r["method"])
    ax.set_xscale("log")
    ax.set_xlabel("pool cost per question (USD, log; zero cost drawn at the left edge)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Held-out GSM8K, {n} questions (grey: each pool model alone, per strategy; bars: 95% CI)",
                 fontsize=9)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
