#!/usr/bin/env python
"""Decision latency of one fresh query at batch 1: encode + predict + decide, per trained router x encoder.

    python benchmarks/decision_latency.py --json OUT.json [--routers mlp,mf,linear,knn,rtr]
        [--encoders all-MiniLM-L6-v2,static] [--data zeroeval-gsm8k] [--rtr-data data/routecraft-gsm8k] [--n 300]

Each table router (``mlp``, ``mf``, ``linear``, ``knn``) is fit with the public API (``make_router(name).fit(train,
X)``) on 80% of ``--data``'s queries (the bench's candidate filtering: candidates answering < 90% of the queries
dropped, then complete queries only); ``rtr`` on 80% of ``--rtr-data`` (routecraft's own model x strategy x budget
table; skipped with a note where that folder is absent), with its description encoder set to the query encoder.
Then each of ``--n`` held-out queries (texts the router never saw; cycled if fewer) is timed as a server sees it:

    t0 -> x = load_encoder(enc).encode([text], convert_to_numpy=True, normalize_embeddings=True)   (no cache)
    t1 -> d = router.decide_one(text, x[0], lam=λ, task=..., input_chars=len(text))   (else decide on a 1-row frame)
    t2

after ``--warmup`` untimed queries, with torch and every BLAS/OpenMP pool on one thread (``threadpoolctl``,
``torch.set_num_threads(1)``). λ is the middle of the bench's λ grid for the training costs (a decision that trades
cost, not the λ = 0 corner). The JSON holds, per (router, encoder): p50/p99/mean of the total and of the encode and
decide parts (ms), fit seconds, the encoder's dimension; plus the machine (CPU model, cores), the load average before
and after, the date, the library versions and the exact command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# one thread everywhere, before numpy/torch load their pools
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def versions() -> dict:
    out = {}
    for mod in ("torch", "sentence_transformers", "model2vec", "tokenizers", "numpy", "pandas"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent is a fact to record
            out[mod] = None
    return out


def split_80_20(rd, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rd.queries["query_id"].to_numpy()
    test = set(rng.choice(ids, size=max(1, len(ids) // 5), replace=False).tolist())
    from routecraft.data.schema import RoutingData

    q, o = rd.queries, rd.outcomes
    tr = RoutingData(q[~q["query_id"].isin(test)].reset_index(drop=True),
                     o[~o["query_id"].isin(test)].reset_index(drop=True), rd.meta)
    te = RoutingData(q[q["query_id"].isin(test)].reset_index(drop=True),
                     o[o["query_id"].isin(test)].reset_index(drop=True), rd.meta)
    return tr, te


def prepare(data: str):
    from routecraft.data.resolve import resolve_data

    name, rd = resolve_data(data)
    rd, filled, dropped = rd.for_routers(0.9)  # the bench's preparation
    if filled:
        log(f"{name}: filled {filled} cells whose strategy does not apply to the query's task")
    if dropped:
        log(f"{name}: dropped candidates (the densest complete set): {', '.join(dropped)}")
    return name, rd


def time_router(router, encoder_name: str, queries, lam: float, n: int, warmup: int) -> dict:
    from routecraft.data.features import load_encoder
    from routecraft.data.query_text import query_texts

    enc = load_encoder(encoder_name)
    use_one = hasattr(router, "decide_one")
    texts = query_texts(queries)
    tasks = queries["task"].astype(str).tolist() if "task" in queries else ["general"] * len(texts)
    tot, e_ms, d_ms = [], [], []
    import pandas as pd

    for i in range(warmup + n):
        j = i % len(texts)
        text, task = texts[j], tasks[j]
        t0 = time.perf_counter()
        # a router without features (kind) is not given an embedding, as the gateway does not compute one for it
        x = (np.asarray(enc.encode([text], convert_to_numpy=True, normalize_embeddings=True), dtype=np.float32)
             if router.uses_features else None)
        t1 = time.perf_counter()
        if use_one:
            d = router.decide_one(text, None if x is None else x[0], lam=lam, task=task, input_chars=len(text))
        else:  # the gateway's one-row frame
            q = pd.DataFrame({"query_id": ["q0"], "text": [text], "task": [task], "gold": [None],
                              "input_chars": [len(text)], "max_tokens": [None]})
            d = router.decide(q, x, lam=lam)[0]
        t2 = time.perf_counter()
        assert d.candidate is not None
        if i >= warmup:
            tot.append(t2 - t0)
            e_ms.append(t1 - t0)
            d_ms.append(t2 - t1)
    tot, e_ms, d_ms = (np.array(a) * 1e3 for a in (tot, e_ms, d_ms))

    def stats(a):
        return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}

    return {"total_ms": stats(tot), "encode_ms": stats(e_ms), "decide_ms": stats(d_ms), "n": int(n),
            "api": "decide_one" if use_one else "decide(1-row frame)",
            "query_chars_p50": float(np.median([len(t) for t in texts]))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, type=Path, help="write the results here")
    ap.add_argument("--routers", default="mlp,mf,linear,knn,rtr")
    ap.add_argument("--encoders", default="all-MiniLM-L6-v2,static")
    ap.add_argument("--data", default="zeroeval-gsm8k", help="dataset for the table routers")
    ap.add_argument("--rtr-data", default="data/routecraft-gsm8k", help="model x strategy x budget data for rtr")
    ap.add_argument("--n", type=int, default=300, help="timed queries per (router, encoder)")
    ap.add_argument("--warmup", type=int, default=20)
    a = ap.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from routecraft.core.sweep import lambda_grid
    from routecraft.data.features import EmbeddingCache, canonical_encoder, load_encoder
    from routecraft.data.query_text import query_texts
    from routecraft.routers import make_router

    torch.set_num_threads(1)
    routers = [r.strip() for r in a.routers.split(",") if r.strip()]
    encoders = [canonical_encoder(e.strip()) for e in a.encoders.split(",") if e.strip()]
    res: dict = {"command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "versions": versions(),
                 "threads": 1, "loadavg_start": loadavg(), "results": [], "notes": []}
    sets = {}
    table = [r for r in routers if r != "rtr"]
    if table:
        sets["table"] = (*prepare(a.data), table)
    if "rtr" in routers:
        from routecraft.data.resolve import builtin_names

        if Path(a.rtr_data).is_dir() or a.rtr_data in builtin_names():
            sets["rtr"] = (*prepare(a.rtr_data), ["rtr"])
        else:
            res["notes"].append(f"rtr skipped: {a.rtr_data} not found")
            log(res["notes"][-1])
    with threadpool_limits(limits=1):
        for dname, rd, names in sets.values():
            train, test = split_80_20(rd)
            lam = float(np.asarray(lambda_grid(train.matrices().cost.mean(0), 60))[30])
            for enc_name in encoders:
                log(f"{dname}: embedding {len(rd.queries)} training texts with {enc_name} (cached on disk)")
                X = EmbeddingCache(enc_name).embed(query_texts(train.queries))
                load_encoder(enc_name)  # loaded before timing
                for rname in names:
                    params = {"text_encoder": enc_name} if rname == "rtr" else {}
                    r = make_router(rname, **params)
                    r.encoder = enc_name
                    t0 = time.perf_counter()
                    r.fit(train, X if r.uses_features else None)
                    fit_s = time.perf_counter() - t0
                    log(f"{dname}: {rname} x {enc_name}: fit {fit_s:.1f} s; timing {a.n} queries")
                    row = {"router": rname, "encoder": enc_name, "data": dname, "dim": int(X.shape[1]),
                           "n_train": len(train.queries), "n_test_texts": len(test.queries),
                           "candidates": len(r.candidates), "lambda": lam, "fit_s": fit_s,
                           **time_router(r, enc_name, test.queries, lam, a.n, a.warmup)}
                    res["results"].append(row)
                    log(f"  p50 {row['total_ms']['p50']:.2f} ms, p99 {row['total_ms']['p99']:.2f} ms "
                        f"(encode p50 {row['encode_ms']['p50']:.2f}, decide p50 {row['decide_ms']['p50']:.2f})")
    res["loadavg_end"] = loadavg()
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=2))
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    lines = ["| router | data | encoder | dim | total p50 ms | total p99 ms | encode p50 | decide p50 | decide p99 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["results"]:
        lines.append(f"| {r['router']} | {r['data']} | {r['encoder']} | {r['dim']} | {r['total_ms']['p50']:.2f} | "
                     f"{r['total_ms']['p99']:.2f} | {r['encode_ms']['p50']:.2f} | {r['decide_ms']['p50']:.2f} | "
                     f"{r['decide_ms']['p99']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
