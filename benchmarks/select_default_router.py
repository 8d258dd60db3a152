"""Pick the gateway's learned default router (``routers: {auto: builtin}``) by replay on held-out questions.

    python benchmarks/select_default_router.py --train data/routecraft-multitask \
        --heldout data/routecraft-multitask-test [--routers mlp,mf,linear,knn] [--encoder static] \
        [--out runs/default-router] [--ship]

Candidates: every model × the strategies collected for *every* task (direct and CoT: the per-task strategies differ,
and a router needs each candidate's outcome on each training question). Each learned router is fit on the
training collection (features: ``--encoder``); the built-in heuristic router is built from the local pool's models
with the same strategies. Both decide every held-out question at each of the gateway's trade-offs (``quality``,
``balanced``, ``cheap``: the λs of the serve config's defaults), and a decision is scored by the collected cell of
the chosen candidate on that question (greedy cells: the call the pool would make). The routing text of a question
is what the gateway would see (a multiple-choice question with its options).

**The rule** (stated in selection.json): the learned router with the highest mean held-out utility (accuracy −
λ·cost, averaged over the three trade-offs) is selected over the heuristic when its utility is higher at every
trade-off; with ``--ship`` and a selection, its artifact and ``selection.json`` are written into
``src/routecraft/configs/default_router``. Without a held-out collection (``--heldout`` omitted), a seeded 30% of the
training questions is held out instead, and the result is a dry run: ``selected`` stays false.

Writes ``OUT/selection.json`` and ``OUT/heldout.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from routecraft.data.collect.local import query_choices
from routecraft.data.features import EmbeddingCache, features_for
from routecraft.data.schema import Candidate, RoutingData
from routecraft.pool.config import load_pool
from routecraft.routers import make_router
from routecraft.serve.config import ServeConfig
from routecraft.strategies.answers import format_choices

COMMON = ("direct", "cot")
SHIP = Path(__file__).resolve().parents[1] / "src" / "routecraft" / "configs" / "default_router"


def load(folder: str | Path) -> RoutingData:
    from routecraft.data.collect.store import CollectionStore

    store = CollectionStore(folder)
    q = store.queries()
    o = store.rows()
    if not len(o):
        raise SystemExit(f"{folder}: no collected rows")
    return RoutingData.from_frames(q, o)


def common_cells(rd: RoutingData, models: list[str]) -> tuple[RoutingData, list[Candidate]]:
    cands = [Candidate(m, s) for m in models for s in COMMON if Candidate(m, s).id in set(rd.candidate_ids)]
    sub = rd.filter_candidates(cands).complete()
    if not len(sub.queries):
        raise SystemExit("no question has every (model, direct|cot) cell collected yet")
    return sub, cands


def routing_texts(q: pd.DataFrame) -> list[str]:
    out = []
    for text, choices in zip(q["text"], q["choices"] if "choices" in q else [None] * len(q)):
        ch = query_choices(choices)
        out.append(format_choices(text, ch) if ch else text)
    return out


def replay(decide, test: RoutingData, cands: list[Candidate], lams: dict[str, float]) -> dict:
    truth = test.matrices(candidates=cands)
    idx = {c.id: j for j, c in enumerate(truth.candidates)}
    texts = routing_texts(test.queries)
    out = {}
    for name, lam in lams.items():
        picks = [idx[decide(i, texts[i], lam).candidate.id] for i in range(len(texts))]
        rows = np.arange(len(picks))
        s, c = truth.score[rows, picks], truth.cost[rows, picks]
        shares = pd.Series([truth.candidates[j].id for j in picks]).value_counts(normalize=True).round(3)
        out[name] = {"lam": lam, "accuracy": float(s.mean()), "cost_usd": float(c.mean()),
                     "utility": float(s.mean() - lam * c.mean()), "shares": shares.head(5).to_dict()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--heldout", default=None)
    ap.add_argument("--routers", default="mlp,mf,linear,knn")
    ap.add_argument("--encoder", default="static")
    ap.add_argument("--models", default=None, help="pool models to route between (default: every local model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/default-router"))
    ap.add_argument("--ship", action="store_true")
    args = ap.parse_args(argv)
    pool = load_pool("local")
    models = [m.strip() for m in args.models.split(",")] if args.models else [m.name for m in pool.models]
    pool = pool.subset(models)
    train_all, cands = common_cells(load(args.train), models)
    dry = args.heldout is None
    if dry:
        ids = train_all.queries["query_id"].to_numpy()
        rng = np.random.default_rng(args.seed)
        test_ids = set(rng.choice(ids, size=max(1, int(0.3 * len(ids))), replace=False))
        train = train_all.subset([q for q in ids if q not in test_ids])
        test = train_all.subset([q for q in ids if q in test_ids])
    else:
        train, test = train_all, common_cells(load(args.heldout), models)[0]
    lams = {k: t.lam for k, t in ServeConfig().tradeoffs.items()}
    enc = EmbeddingCache(args.encoder)
    both = pd.concat([train.queries, test.queries], ignore_index=True)
    X = enc.embed(routing_texts(both))
    feats = features_for(RoutingData.from_frames(both, pd.concat([train.outcomes, test.outcomes])), X)
    Xte = feats(test.queries)

    results: dict[str, dict] = {}
    heur = make_router("heuristic", strategies=list(COMMON)).fit_pool(pool.models)
    results["heuristic"] = replay(lambda i, text, lam: heur.decide_one(text, lam=lam), test, cands, lams)
    fitted = {}
    for name in [r.strip() for r in args.routers.split(",") if r.strip()]:
        r = make_router(name)
        r.encoder = enc.encoder
        r.fit(train, feats(train.queries))
        fitted[name] = r
        results[name] = replay(lambda i, text, lam, r=r: r.decide_one(text, Xte[i], lam=lam), test, cands, lams)
    mean_u = {k: float(np.mean([v["utility"] for v in res.values()])) for k, res in results.items()}
    best = max((k for k in results if k != "heuristic"), key=lambda k: mean_u[k])
    beats = all(results[best][t]["utility"] > results["heuristic"][t]["utility"] for t in lams)
    rule = ("the learned router with the highest mean held-out utility (accuracy − λ·cost over the trade-offs "
            f"{', '.join(f'{k} λ={v:g}' for k, v in lams.items())}) is selected when its utility beats the "
            "heuristic's at every trade-off")
    selection = {"selected": bool(beats and not dry), "router": best, "rule": rule, "dry_run": dry,
                 "candidates": [c.id for c in cands], "n_train": int(len(train.queries)),
                 "n_heldout": int(len(test.queries)), "encoder": args.encoder, "mean_utility": mean_u,
                 "heldout": results, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "selection.json").write_text(json.dumps(selection, indent=1))
    where = "dry run: 30% of the training collection" if dry else args.heldout
    lines = [f"{len(test.queries)} held-out questions ({where}), "
             f"{len(train.queries)} training questions; candidates {len(cands)} (model × direct|cot)", "",
             "| router | " + " | ".join(f"{t} acc / $ / utility" for t in lams) + " |",
             "|---|" + "---|" * len(lams)]
    for k, res in results.items():
        lines.append(f"| {k} | " + " | ".join(f"{res[t]['accuracy']:.3f} / {res[t]['cost_usd']:.2g} / "
                                               f"{res[t]['utility']:.3f}" for t in lams) + " |")
    lines += ["", f"best learned: {best}; beats the heuristic at every trade-off: {beats}; selected: "
              f"{selection['selected']}"]
    (args.out / "heldout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.ship and selection["selected"]:
        SHIP.mkdir(parents=True, exist_ok=True)
        tmp = args.out / "artifact"
        if tmp.exists():
            shutil.rmtree(tmp)
        fitted[best].save(tmp)
        for f in ("router.json", "state.safetensors"):
            shutil.copy2(tmp / f, SHIP / f)
        (SHIP / "selection.json").write_text(json.dumps(selection, indent=1))
        print(f"shipped {best} into {SHIP}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
