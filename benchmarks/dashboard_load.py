"""How long the gateway's dashboard takes with a large usage ledger.

Fills a fresh SQLite ledger with ``--rows`` synthetic requests (default 100,000) spread over the last 7 days — four
routers × three trade-offs, three models × three strategies, five keys, ~1.5% failed or cancelled, ~3% with a
fallback, each routed row with a nine-candidate table like the gateway writes —, starts ``routecraft serve`` on it
(keys configured; its two pool models point at the instant stub backend ``benchmarks/openai_stub.py``, which the
dashboard never calls) and loads ``GET /dashboard`` over loopback HTTP with the key, ``--loads`` times per window
(after one warm-up load), reporting the p50, p90 and max wall time of a whole page load and the server's own time
(its ``Server-Timing`` header: ledger queries and rendering).

    python benchmarks/dashboard_load.py [--rows 100000] [--loads 15] [--windows all,24h,1h] [--json out.json]

Two more measurements, without the gateway: ``--in-process`` times ``ledger.usage_stats`` alone on the filled ledger,
with the ledger's indexes and — after dropping the ones only the dashboard needs — without them; ``--record-cost``
times ``Ledger.record`` (one committed insert, as the gateway writes each request) on a ledger of 20,000 rows, with
and without those indexes (median per insert, best of three interleaved rounds of 2,000).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

HERE = Path(__file__).resolve().parent
SECRET = "dash-bench-secret-key"
MODELS = [("smollm2-135m", 0.135, 0.00294, 0.0218), ("qwen2.5-coder-0.5b", 0.494, 0.0104, 0.0797),
          ("qwen2.5-coder-1.5b", 1.54, 0.0314, 0.241)]
STRATEGIES = ["default", "cot", "pal"]
ROUTERS = ["auto", "heuristic", "rtr", "bypass"]
TRADEOFFS = {"quality": 0.0, "balanced": 5000.0, "cheap": 100000.0}
KEYS = ["alice", "bob", "carol", "dave", "erin"]


def synthetic_rows(n: int, seed: int = 0, now: float | None = None, span_s: float = 7 * 86400) -> list[dict]:
    """``n`` ledger rows like the gateway writes, oldest first."""
    from routecraft.data.schema import candidate_id

    rng = random.Random(seed)
    now = time.time() if now is None else now
    rows = []
    for i in range(n):
        ts = now - span_s * (1 - (i + rng.random()) / n)
        router = rng.choices(ROUTERS, weights=[5, 2, 2, 1])[0]
        model, _, pin, pout = rng.choices(MODELS, weights=[5, 3, 2])[0]
        strategy = "default" if router == "bypass" else rng.choice(STRATEGIES)
        tradeoff = None if router == "bypass" else rng.choice(list(TRADEOFFS))
        status = rng.choices(["ok", "failed", "cancelled", "refused"], weights=[985, 6, 6, 3])[0]
        tin, tout = (rng.randint(20, 600), rng.randint(1, 400)) if status in ("ok", "cancelled") else (0, 0)
        fallbacks = []
        if rng.random() < 0.03:
            fm = rng.choice(MODELS)[0]
            fallbacks = [{"candidate": f"{fm}|{strategy}|default", "model": fm, "error": "connection refused",
                          "kind": "backend"}]
        cands = None
        if router != "bypass":
            cands = [[candidate_id(m, s), round(rng.random(), 4), float(f"{rng.random() * 1e-4:.4g}")]
                     for m, *_ in MODELS for s in STRATEGIES]
        rows.append({
            "request_id": f"chatcmpl-bench-{i:07d}", "ts": ts, "key": rng.choice(KEYS),
            "client_request_id": f"bench-{i}", "requested_model": (model if router == "bypass" else
                                                                  f"routecraft/{router}:{tradeoff}"),
            "router": router, "tradeoff": tradeoff, "lam": TRADEOFFS.get(tradeoff), "max_cost": None,
            "model": model, "strategy": strategy, "budget": None, "task": "numeric",
            "predicted_score": None if router == "bypass" else round(rng.random(), 4),
            "predicted_cost": None if router == "bypass" else rng.random() * 1e-4,
            "input_tokens": tin, "output_tokens": tout, "cost_usd": (tin * pin + tout * pout) / 1e6,
            "latency_s": rng.lognormvariate(0, 0.8), "backend_s": rng.lognormvariate(-0.1, 0.8),
            "decision_ms": None if router == "bypass" else rng.lognormvariate(-1.5, 0.6),
            "status": status, "http_status": {"ok": 200, "failed": 502, "cancelled": 499, "refused": 400}[status],
            "error": None if status == "ok" else "every candidate failed: connection refused",
            "attempts": 1 + len(fallbacks), "fallbacks": fallbacks, "stream": int(rng.random() < 0.3),
            "sticky": 0, "conversation_id": None, "candidates": cands})
    return rows


def fill_ledger(path: Path, n: int, seed: int = 0, now: float | None = None) -> Path:
    """A SQLite ledger at ``path`` with ``n`` synthetic rows, inserted in one transaction (the triggers keep
    ``key_spend``, as for rows the gateway writes)."""
    from routecraft.serve.ledger import COLUMNS, Ledger, _prepare

    led = Ledger(path).open()
    try:
        cols = list(COLUMNS)
        sql = f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        conn = led._c()
        conn.execute("BEGIN")
        conn.executemany(sql, ([r.get(c) for c in cols] for r in map(_prepare, synthetic_rows(n, seed, now))))
        conn.execute("COMMIT")
    finally:
        led.close()
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_stub(d: Path) -> subprocess.Popen:
    ready = d / "stub.json"
    proc = subprocess.Popen([sys.executable, str(HERE / "openai_stub.py"), "--port", "0", "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the stub backend did not start")
        time.sleep(0.05)
    return proc


def start_gateway(d: Path, ledger: Path, stub_port: int) -> tuple[subprocess.Popen, str]:
    from routecraft.serve.config import hash_key

    models = [{"name": m, "description": f"{m} (the stub backend)", "endpoint": f"http://127.0.0.1:{stub_port}/v1",
               "model_id": "stub", "size_b": size,
               "price_in_per_m": pin, "price_out_per_m": pout, "context": 4096} for m, size, pin, pout in MODELS]
    cfg = {"port": 0, "pool": {"name": "bench", "models": models}, "ledger": str(ledger),
           "heuristic": {"strategies": ["default", "cot"]},
           "keys": [{"name": k, "sha256": hash_key(SECRET if k == "alice" else f"{SECRET}-{k}")} for k in KEYS]}
    (d / "gw.yaml").write_text(yaml.safe_dump(cfg))
    ready = d / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "routecraft.serve", "serve", "--config", str(d / "gw.yaml"),
                             "--ready-file", str(ready)], stdout=(d / "gateway.log").open("wb"),
                            stderr=subprocess.STDOUT, env={**os.environ, "ROUTECRAFT_API_KEYS": ""})
    deadline = time.monotonic() + 180
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the gateway did not start:\n" + (d / "gateway.log").read_text()[-3000:])
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{json.loads(ready.read_text())['port']}"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]


def _server_ms(header: str) -> dict:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(\w+);dur=([0-9.]+)", header or "")}


def time_page(root: str, window: str, loads: int) -> dict:
    headers = {"authorization": f"Bearer {SECRET}"}
    walls, server = [], []
    with httpx.Client(timeout=120) as c:
        c.get(f"{root}/dashboard", params={"window": window}, headers=headers).raise_for_status()  # warm-up
        for _ in range(loads):
            t0 = time.perf_counter()
            r = c.get(f"{root}/dashboard", params={"window": window}, headers=headers)
            walls.append((time.perf_counter() - t0) * 1e3)
            r.raise_for_status()
            server.append(_server_ms(r.headers.get("server-timing", "")))
        size = len(r.content)
    out = {"window": window, "loads": loads, "p50_ms": _pct(walls, 0.5), "p90_ms": _pct(walls, 0.9),
           "max_ms": max(walls), "page_bytes": size}
    for part in sorted({k for s in server for k in s}):
        out[f"server_{part}_p50_ms"] = _pct([s.get(part, 0.0) for s in server], 0.5)
    return out


DASHBOARD_INDEXES = ("requests_groups", "requests_latency", "requests_decision", "requests_fallbacks",
                     "requests_failures")


def in_process(ledger: Path, windows: list[str], loads: int) -> list[dict]:
    """``usage_stats`` timed alone (p50 of ``loads``), with every index, then with the dashboard's dropped."""
    import sqlite3

    from routecraft.serve.dashboard import WINDOWS
    from routecraft.serve.ledger import LedgerReader, Prices, usage_stats

    cf = Prices(*MODELS[-1][:1], *MODELS[-1][2:])
    out = []
    for label in ("with the indexes", "without the dashboard's indexes"):
        if label.startswith("without"):
            conn = sqlite3.connect(ledger)
            for name in DASHBOARD_INDEXES:
                conn.execute(f"DROP INDEX IF EXISTS {name}")
            conn.commit()
            conn.close()
        with LedgerReader(ledger) as reader:
            for w in windows:
                span = WINDOWS[w]
                times = []
                for _ in range(loads):
                    t0 = time.perf_counter()
                    usage_stats(reader, None if span is None else time.time() - span, counterfactual=cf)
                    times.append((time.perf_counter() - t0) * 1e3)
                out.append({"indexes": label, "window": w, "loads": loads, "p50_ms": _pct(times, 0.5),
                            "p90_ms": _pct(times, 0.9)})
                print(json.dumps(out[-1]), flush=True)
    return out


def record_cost(d: Path, rounds: int = 3, n: int = 2000, prefill: int = 20_000) -> dict:
    """Median µs per ``Ledger.record`` with every index and with only key and ts (best of ``rounds``)."""
    import routecraft.serve.ledger as L

    full = L.INDEXES
    base = tuple(ix for ix in full if ix[0] not in DASHBOARD_INDEXES)
    rows = synthetic_rows(n, seed=1)
    res: dict[str, list[float]] = {"with the indexes": [], "without the dashboard's indexes": []}
    try:
        for r in range(rounds):
            for label, idx in (("without the dashboard's indexes", base), ("with the indexes", full)):
                L.INDEXES = idx
                path = fill_ledger(d / f"rec-{r}-{len(idx)}.sqlite", prefill, seed=2)
                led = L.Ledger(path).open()
                ts = []
                for row in rows:
                    row = {**row, "request_id": "x" + row["request_id"]}
                    t0 = time.perf_counter()
                    led.record(row)
                    ts.append(time.perf_counter() - t0)
                led.close()
                res[label].append(_pct(ts, 0.5) * 1e6)
    finally:
        L.INDEXES = full
    out = {k: {"best_us": round(min(v), 1), "rounds_us": [round(x, 1) for x in v]} for k, v in res.items()}
    print(json.dumps(out), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--loads", type=int, default=15)
    ap.add_argument("--windows", default="all,24h,1h")
    ap.add_argument("--json", default=None)
    ap.add_argument("--in-process", action="store_true", help="time usage_stats alone, with and without the "
                    "dashboard's indexes (no gateway)")
    ap.add_argument("--record-cost", action="store_true", help="time one ledger insert with and without the "
                    "dashboard's indexes (no gateway)")
    args = ap.parse_args()
    windows = [w.strip() for w in args.windows.split(",")]
    if args.in_process or args.record_cost:
        with tempfile.TemporaryDirectory(prefix="dash-bench-") as tmp:
            report: dict = {"rows": args.rows, "date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg()}
            if args.record_cost:
                report["record_cost"] = record_cost(Path(tmp))
            if args.in_process:
                report["in_process"] = in_process(fill_ledger(Path(tmp) / "usage.sqlite", args.rows), windows,
                                                  args.loads)
            report["load_average_after"] = os.getloadavg()
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
        return 0
    with tempfile.TemporaryDirectory(prefix="dash-bench-") as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        ledger = fill_ledger(d / "usage.sqlite", args.rows)
        fill_s = time.perf_counter() - t0
        print(f"filled {args.rows} rows in {fill_s:.1f} s ({ledger.stat().st_size / 1e6:.1f} MB)", flush=True)
        stub = start_stub(d)
        gw = None
        try:
            gw, root = start_gateway(d, ledger, json.loads((d / "stub.json").read_text())["port"])
            results = []
            for w in windows:
                res = time_page(root, w, args.loads)
                results.append(res)
                print(json.dumps(res), flush=True)
        finally:
            for p in (gw, stub):
                if p is not None and p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
        report = {"rows": args.rows, "ledger_mb": round(ledger.stat().st_size / 1e6, 1), "fill_s": round(fill_s, 1),
                  "date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg(), "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
