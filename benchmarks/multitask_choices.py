"""What a router chooses per task on a multi-task collection, over the bench's seeded splits.

    python benchmarks/multitask_choices.py --data data/routecraft-multitask --routers mf,sequential \
        [--seeds 0,1,2] [--encoder static] [--lam balanced] [--out runs/multitask-choices]

The bench's protocol (``routecraft bench``: inapplicable cells filled, the densest candidate set, seeded 60/20/20
splits, the router fit on train + validation), then per test question the router's pick at one trade-off (``--lam``:
a number, or one of the gateway's trade-offs ``quality``, ``balanced``, ``cheap``) — for an observing router its
plan, replayed on the logged answers — and per task: accuracy, $/query and the picks' shares, pooled over seeds.
Writes ``OUT/choices.md`` and ``OUT/choices.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from routecraft.data.features import EmbeddingCache, features_for
from routecraft.data.query_text import query_texts
from routecraft.data.resolve import resolve_data
from routecraft.data.schema import RoutingData
from routecraft.routers import make_router
from routecraft.routers.base import ObservingRouter
from routecraft.serve.config import ServeConfig


def short(cid: str) -> str:
    return cid.removesuffix("|default").replace("qwen2.5-coder-", "qwen-")


def choices(router_name: str, data: RoutingData, X: np.ndarray, seeds: list[int], lam: float) -> pd.DataFrame:
    feats = features_for(data, X)
    parts = []
    for seed in seeds:
        sp = data.split(seed=seed)
        train = RoutingData(pd.concat([sp.train.queries, sp.val.queries], ignore_index=True),
                            pd.concat([sp.train.outcomes, sp.val.outcomes], ignore_index=True), data.meta)
        test = sp.test
        r = make_router(router_name)
        r.fit(train, feats(train.queries))
        truth = test.matrices()
        if isinstance(r, ObservingRouter):
            rep = r.replay(test, feats(test.queries), lam)
            score, cost = rep.score, rep.cost
            picks = [f"plan ({int(c)} calls)" for c in rep.calls]
        else:
            ds = r.decide(test.queries, feats(test.queries), lam=lam)
            j = [truth.candidate_ids.index(d.candidate.id) for d in ds]
            rows = np.arange(len(j))
            score, cost = truth.score[rows, j], truth.cost[rows, j]
            picks = [short(d.candidate.id) for d in ds]
        parts.append(pd.DataFrame({"seed": seed, "task": test.queries["task"].to_numpy(), "score": score,
                                   "cost": cost, "pick": picks}))
    return pd.concat(parts, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--routers", default="mf,sequential")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--encoder", default="static")
    ap.add_argument("--lam", default="balanced")
    ap.add_argument("--out", type=Path, default=Path("runs/multitask-choices"))
    args = ap.parse_args(argv)
    tradeoffs = {k: t.lam for k, t in ServeConfig().tradeoffs.items()}
    try:
        lam = tradeoffs[args.lam] if args.lam in tradeoffs else float(args.lam)
    except ValueError:
        raise SystemExit(f"--lam: {args.lam!r} is neither a number nor one of {', '.join(tradeoffs)}") from None
    name, data = resolve_data(args.data)
    data, filled, dropped = data.for_routers()
    X = EmbeddingCache(args.encoder).embed(query_texts(data.queries))
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = [f"# What the routers choose per task — {name}", "",
             f"{len(data.queries)} questions × {len(data.candidates)} candidates ({filled} inapplicable cells "
             f"filled, {len(dropped)} candidates dropped), seeds {args.seeds}, λ = {lam:g} ({args.lam}); test "
             "questions pooled over the seeds.", ""]
    out: dict = {"data": name, "lam": lam, "seeds": seeds, "routers": {}}
    for rname in [r.strip() for r in args.routers.split(",") if r.strip()]:
        t = choices(rname, data, X, seeds, lam)
        lines += [f"## {rname}: accuracy {t['score'].mean():.3f}, ${t['cost'].mean():.2g}/query", "",
                  "| task | n | accuracy | $/query | picks (share) |", "|---|---|---|---|---|"]
        per = {}
        for task, g in t.groupby("task"):
            sh = g["pick"].value_counts(normalize=True)
            top = ", ".join(f"{k} {v:.0%}" for k, v in sh.head(3).items())
            lines.append(f"| {task} | {len(g)} | {g['score'].mean():.2f} | {g['cost'].mean():.2g} | {top} |")
            per[task] = {"n": len(g), "accuracy": float(g["score"].mean()), "cost_usd": float(g["cost"].mean()),
                         "picks": sh.round(3).to_dict()}
        lines.append("")
        out["routers"][rname] = {"accuracy": float(t["score"].mean()), "cost_usd": float(t["cost"].mean()),
                                 "per_task": per}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "choices.md").write_text("\n".join(lines) + "\n")
    (args.out / "choices.json").write_text(json.dumps(out, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
