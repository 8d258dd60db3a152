#!/usr/bin/env python
"""Pickle-free router artifacts (format 2): size and load time per registered router, and whether the loaded router
decides exactly as the one in memory.

    python benchmarks/artifact_sizes.py --json OUT.json [--encoder static] [--data zeroeval-gsm8k]
        [--reasoning-data data/routecraft-gsm8k] [--loads 10] [--routers NAME,...]

Every registered router is trained with the public API on 80% of ``--data``'s queries (seed 0; the reasoning routers
``rtr``, ``r2``, ``joint`` on 80% of ``--reasoning-data``, routecraft's own model × strategy × budget table, with their
description encoder set to the query encoder; ``heuristic`` from the local pool's models; ``oracle`` on the held-out
queries it routes), with features from ``--encoder`` (default ``static``: the cached static encoder). Then:

* saved with ``Router.save`` (router.json + state.safetensors), loaded with ``load_router``;
* decisions compared on the held-out queries at λ = 0, the middle and the top of the bench's λ grid and a cost cap
  (``decide``: candidate, predicted score and cost, table, plan — all must be equal), and for the table routers the
  predicted arrays bit for bit, for the observing ones the replay on the held-out logs;
* the format-1 size for comparison: the same router.json (without the state tree) plus ``joblib.dump(state())``;
* load time: the median (and max) of ``--loads`` ``load_router`` calls in this process, after one untimed load.

Router-R1 and R2-Reasoner have no learned state in the artifact (params point at policy folders); they are saved and
loaded, and their params and candidates compared (deciding needs the pool). The JSON holds the rows, the machine, the
load average, the date, the versions and the command; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def split(rd, seed: int = 0, frac: float = 0.8):
    q = rd.queries["query_id"].to_numpy()
    perm = np.random.default_rng(seed).permutation(len(q))
    cut = int(round(frac * len(q)))
    return rd.subset(q[np.sort(perm[:cut])]), rd.subset(q[np.sort(perm[cut:])])


def same_decisions(a, b) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b))


def compare(r, back, test, X) -> tuple[bool, int]:
    """(identical, decisions compared) of the in-memory router ``r`` and the loaded ``back`` on ``test``."""
    from routecraft.core.sweep import lambda_grid
    from routecraft.routers import ObservingRouter, TabularRouter

    cost = test.matrices().cost.mean(axis=0)
    lams = [0.0, *[float(x) for x in lambda_grid(cost, 60)[[30, -1]]]]
    cap = float(np.median(cost))
    ok, n = True, 0
    q = test.queries
    for kw in [{"lam": lam} for lam in lams] + [{"max_cost": cap}]:
        da, db = r.decide(q, X, **kw), back.decide(q, X, **kw)
        ok &= same_decisions(da, db)
        n += len(da)
        if isinstance(r, ObservingRouter):
            ra, rb = r.replay(test, X, **kw), back.replay(test, X, **kw)
            ok &= bool(np.array_equal(ra.score, rb.score) and np.array_equal(ra.cost, rb.cost))
    if isinstance(r, TabularRouter):
        pa, pb = r.predict(q, X), back.predict(q, X)
        ok &= bool(np.array_equal(pa.score, pb.score) and np.array_equal(pa.cost, pb.cost))
    return ok, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--encoder", default="static")
    ap.add_argument("--data", default="zeroeval-gsm8k")
    ap.add_argument("--reasoning-data", default="data/routecraft-gsm8k")
    ap.add_argument("--loads", type=int, default=10)
    ap.add_argument("--routers", default=None, help="comma-separated registry names (default: all)")
    args = ap.parse_args()

    import joblib

    from routecraft.data.features import EmbeddingCache, canonical_encoder
    from routecraft.data.query_text import query_texts
    from routecraft.data.resolve import resolve_data
    from routecraft.pool.config import load_pool
    from routecraft.routers import REGISTRY, MultiStepRouter, load_router, make_router
    from routecraft.routers.artifact import ARRAYS_FILE, META_FILE

    names = args.routers.split(",") if args.routers else list(REGISTRY)
    enc = canonical_encoder(args.encoder)
    cache = EmbeddingCache(enc)
    load0 = loadavg()
    t_start = time.time()

    _, rd = resolve_data(args.data)
    rd = rd.complete()
    train, test = split(rd)
    Xtr, Xte = cache.embed(query_texts(train.queries)), cache.embed(query_texts(test.queries))
    reasoning = None
    if Path(args.reasoning_data).exists():
        _, rg = resolve_data(args.reasoning_data)
        gtr, gte = split(rg.complete())
        reasoning = (gtr, cache.embed(query_texts(gtr.queries)), gte, cache.embed(query_texts(gte.queries)))

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="artifact-sizes-"))
    try:
        for name in names:
            kw: dict = {}
            if name == "fixed":
                kw = {"candidate": train.candidates[0].id}
            if name in ("rtr", "joint"):
                kw = {"text_encoder": enc}
            if name in ("router-r1", "r2-reasoner"):
                r = make_router(name)
                data = None
            elif name == "heuristic":
                r = make_router(name).fit_pool(load_pool("local").models)
                data = (None, None, test, None)
            else:
                tr, xtr, te, xte = (reasoning if name in ("rtr", "r2", "joint") else (train, Xtr, test, Xte))
                if tr is None:
                    log(f"{name}: skipped (no {args.reasoning_data})")
                    continue
                r = make_router(name, **kw)
                t0 = time.time()
                if r.is_oracle:
                    r.fit(te, xte if r.uses_features else None)
                else:
                    r.fit(tr, xtr if r.uses_features else None)
                log(f"{name}: fit {time.time() - t0:.1f}s")
                r.encoder = enc if r.uses_features else None
                data = (tr, xtr, te, xte)
            out = tmp / name
            r.save(out)
            back = load_router(out)
            times = []
            for _ in range(args.loads):
                t0 = time.perf_counter()
                load_router(out)
                times.append(time.perf_counter() - t0)
            meta = json.loads((out / META_FILE).read_text())
            v2 = {f: (out / f).stat().st_size for f in (META_FILE, ARRAYS_FILE)}
            # format 1 for comparison: router.json without the state tree, and the pickled state
            v1_meta = {k: meta[k] for k in ("router", "format_version", "params", "candidates", "encoder")}
            joblib.dump(r.state(), tmp / f"{name}.joblib")
            v1 = len(json.dumps(v1_meta, indent=2, default=str)) + (tmp / f"{name}.joblib").stat().st_size
            if isinstance(r, MultiStepRouter):
                ok = back.params == r.params and back.candidates == r.candidates
                n = 0
            elif name == "heuristic":
                q = data[2].queries
                ok = same_decisions(r.decide(q, None, lam=0.0), back.decide(q, None, lam=0.0)) and same_decisions(
                    r.decide(q, None, lam=1e4), back.decide(q, None, lam=1e4))
                n = 2 * len(q)
            else:
                te, xte = data[2], data[3]
                ok, n = compare(r, back, te, xte if r.uses_features else None)
            row = {"router": name, "params": kw, "router_json_bytes": v2[META_FILE],
                   "safetensors_bytes": v2[ARRAYS_FILE], "total_bytes": sum(v2.values()),
                   "tensors": meta["arrays"]["tensors"], "format1_bytes": v1,
                   "load_ms_median": 1e3 * statistics.median(times), "load_ms_max": 1e3 * max(times),
                   "identical_decisions": bool(ok), "decisions_compared": n}
            rows.append(row)
            log(f"{name}: {row['total_bytes'] / 1e3:.1f} kB (format 1: {v1 / 1e3:.1f} kB), load "
                f"{row['load_ms_median']:.1f} ms, identical={ok} over {n} decisions")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    from importlib import metadata

    res = {"rows": rows, "data": args.data, "reasoning_data": args.reasoning_data, "encoder": enc,
           "machine": {"cpu": cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
           "loadavg_before": load0, "loadavg_after": loadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "wall_s": time.time() - t_start,
           "versions": {d: metadata.version(d) for d in ("numpy", "scikit-learn", "torch", "safetensors", "joblib")},
           "command": " ".join(["python", *sys.argv])}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2))
    print("| router | router.json | state.safetensors | total | tensors | format 1 (pickle) | load, ms (median; max) "
          "| identical decisions |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['router']} | {r['router_json_bytes'] / 1e3:.1f} kB | {r['safetensors_bytes'] / 1e3:.1f} kB | "
              f"{r['total_bytes'] / 1e3:.1f} kB | {r['tensors']} | {r['format1_bytes'] / 1e3:.1f} kB | "
              f"{r['load_ms_median']:.1f}; {r['load_ms_max']:.1f} | "
              f"{'yes' if r['identical_decisions'] else 'NO'} ({r['decisions_compared']}) |")
    return 0 if all(r["identical_decisions"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
