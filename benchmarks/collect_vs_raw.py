"""Collection throughput against the raw llama.cpp server, same model, same prompts, same concurrency.

For N GSM8K test questions and the given strategies, the *raw* path sends each cell's exact request (the strategy's
messages, its max_tokens cap, greedy) straight to the llama.cpp server with httpx, at the same concurrency, and does
nothing else. The *collect* path runs `routecraft.data.collect.collect` on the same cells into a fresh folder
(prompting, answer extraction, PAL execution, grading, Parquet shards, compaction). Rounds alternate the order
(raw first, then collect first) and each round uses its own questions for both paths, so neither path gets the
other's prompt cache. Reported: output tokens per second of wall time and cells per second for each path; the
ratio collect/raw is the efficiency (target ≥ 0.90).

    python benchmarks/collect_vs_raw.py --model smollm2-135m --questions 12 --rounds 2 --json out.json

Starts its own private server (threads and slots as the collection uses them); stop other CPU work first.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time


async def _raw(base_url: str, model_id: str, reqs: list[dict], concurrency: int) -> tuple[float, int]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    toks = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as http:
        async def one(r: dict) -> None:
            nonlocal toks
            async with sem:
                path = "/completions" if "prompt" in r else "/chat/completions"
                resp = await http.post(path, json={"model": model_id, **r})
                resp.raise_for_status()
                toks += int(resp.json()["usage"]["completion_tokens"])

        t0 = time.perf_counter()
        await asyncio.gather(*(one(r) for r in reqs))
        return time.perf_counter() - t0, toks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--strategies", default="direct,cot,cod,pal")
    ap.add_argument("--budgets", default="default")
    ap.add_argument("--questions", type=int, default=12, help="questions per round and path")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from routecraft.data.collect import collect, gsm8k_queries, parse_budgets
    from routecraft.pool.config import load_pool
    from routecraft.pool.server import serve_local
    from routecraft.strategies import get_strategy

    ref = load_pool("local").get(args.model)
    strategies = args.strategies.split(",")
    budgets = parse_budgets(args.budgets)
    qs = gsm8k_queries("test", limit=args.questions * args.rounds, offset=1000)
    results = []
    with serve_local(args.model, ctx=4096, parallel=args.concurrency, threads=args.threads) as srv:
        from routecraft.pool.config import Pool, PoolModel

        pool_model = PoolModel(name=ref.name, endpoint=srv.base_url, model_id=srv.model_id,
                               price_in_per_m=ref.price_in_per_m, price_out_per_m=ref.price_out_per_m,
                               price_source=ref.price_source, description=ref.description, size_b=ref.size_b,
                               instruct=ref.instruct, context=4096)

        pool = Pool(name="bench", description="benchmark", models=[pool_model])
        for r in range(args.rounds):
            q = qs.iloc[r * args.questions:(r + 1) * args.questions]
            reqs = []
            for text in q["text"]:
                for s in strategies:
                    st = get_strategy(s)
                    for b in budgets:
                        body = {"max_tokens": st.max_tokens(b), "temperature": 0.0}
                        if ref.instruct is False:
                            body |= {"prompt": st.build_prompt(text, "gsm8k", b), "stop": st.stop("prompt")}
                        else:
                            body |= {"messages": st.build_messages(text, "gsm8k", b)}
                        reqs.append(body)
            order = ["raw", "collect"] if r % 2 == 0 else ["collect", "raw"]
            row = {"round": r, "cells": len(reqs)}
            for path in order:
                if path == "raw":
                    wall, toks = asyncio.run(_raw(srv.base_url, srv.model_id, reqs, args.concurrency))
                else:
                    with tempfile.TemporaryDirectory() as d:
                        t0 = time.perf_counter()
                        res = collect(pool, q, [args.model], strategies, budgets, d, concurrency=args.concurrency)
                        wall = time.perf_counter() - t0
                        import pandas as pd

                        toks = int(pd.read_parquet(os.path.join(d, "outcomes.parquet"))["output_tokens"].sum())
                        assert res["ran"] == len(reqs), res
                row[path] = {"wall_s": round(wall, 2), "out_tokens": toks, "tok_per_s": round(toks / wall, 2),
                             "cells_per_s": round(len(reqs) / wall, 4)}
                print(f"round {r} {path:7s}: {len(reqs)} cells, {toks} output tokens in {wall:.1f} s = "
                      f"{toks / wall:.1f} tok/s", flush=True)
            row["efficiency_tok"] = round(row["collect"]["tok_per_s"] / row["raw"]["tok_per_s"], 3)
            row["efficiency_cells"] = round(row["collect"]["cells_per_s"] / row["raw"]["cells_per_s"], 3)
            results.append(row)
    eff_t = statistics.median(r["efficiency_tok"] for r in results)
    eff_c = statistics.median(r["efficiency_cells"] for r in results)
    summary = {"model": args.model, "strategies": strategies, "budgets": args.budgets, "rounds": results,
               "efficiency_tok_median": eff_t, "efficiency_cells_median": eff_c,
               "load_avg": os.getloadavg(), "machine": platform.processor() or platform.machine(),
               "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    print(f"collect/raw: {eff_t:.3f} by output tokens per second, {eff_c:.3f} by cells per second (median of "
          f"{len(results)} rounds)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    sys.exit(0)


if __name__ == "__main__":
    main()
