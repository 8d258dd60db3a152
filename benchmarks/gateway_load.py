"""Load benchmark of the routing gateway on loopback (bounded in request count and time).

Starts two private SmolLM2-135M llama.cpp servers ("smollm2-135m" and "smollm2-b", the latter configured as a
larger, dearer model so that ``routecraft/auto`` at λ = 0 routes to it with the plain-chat strategy, i.e. the same
messages a direct call sends) and ``routecraft serve`` as a subprocess, then measures with the official async
``openai`` client:

1. **added latency** — ``--requests`` calls with ``--concurrency`` workers, each worker alternating a direct call to
   smollm2-b and the same call through the gateway (so both see the same backend load): p50/p99 latency of each
   path, the difference, and the gateway's own overhead as it reports it (``x-routecraft-overhead-ms``: handler
   time minus backend time).
2. **throughput** — ``--requests`` routed calls and as many direct calls, in four alternating rounds: requests/s
   of each.
3. **routing decision alone** — in-process ``Gateway.route`` on ``--decisions`` varied texts (no HTTP, no backend):
   p50/p99; plus the decision time the gateway reported in phase 1 (``x-routecraft-decision-ms``).
4. **backend killed** — ``--kill-requests`` routed calls with unique ``x-request-id``s; when half have completed,
   smollm2-b is SIGKILLed. Counts client-side successes/failures and, from the usage ledger, requests lost (no ledger
   row or no answer) and duplicated (more than one row per id).

    python benchmarks/gateway_load.py [--requests 200] [--concurrency 8] [--max-tokens 8] [--json out.json]

Every call's text is unique (a counter is appended), so no call profits from llama.cpp's prompt cache of another.
The machine's load average is printed next to the numbers: other work on the same cores moves them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
import yaml

QUESTIONS = [
    "What is the capital of France?", "Name a primary colour.", "What is 7 times 8?", "Say hello in Spanish.",
    "What animal says moo?", "How many legs does a spider have?", "What is the opposite of hot?",
    "Name a planet in the solar system.", "What colour is the sky on a clear day?", "What is water made of?",
    "Give me a synonym for happy.", "What is the largest ocean?", "Who wrote Romeo and Juliet?",
    "What is 12 plus 30?", "Name a fruit that is yellow.", "What do bees make?", "How many days are in a week?",
    "What is the freezing point of water in Celsius?", "Name a musical instrument.", "What is the plural of mouse?",
]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))]


def start_backends(parallel: int, threads: int):
    from routecraft.pool.config import PoolModel, load_pool
    from routecraft.pool.models import install
    from routecraft.pool.server import LocalServer

    ref = load_pool("local").get("smollm2-135m")
    path = install("smollm2-135m")["smollm2-135m"]
    servers = {}
    for name in ("smollm2-135m", "smollm2-b"):
        s = LocalServer(name=name, local="smollm2-135m", model_path=str(path), ctx=2048, threads=threads,
                        parallel=parallel, private=True)
        s.launch()
        servers[name] = s
    for s in servers.values():
        s.wait_ready(300)
    models = []
    for name, s in servers.items():
        big = name == "smollm2-b"
        models.append(PoolModel(name=name, endpoint=s.base_url, model_id=name,
                                price_in_per_m=0.03 if big else ref.price_in_per_m,
                                price_out_per_m=0.25 if big else ref.price_out_per_m,
                                description=ref.description, size_b=1.7 if big else 0.135, context=2048))
    return servers, models


def start_gateway(d: Path, models, concurrency: int):
    cfg = {"port": 0, "ledger": str(d / "usage.sqlite"), "log_level": "error",
           "pool": {"name": "bench", "models": [m.model_dump(exclude_none=True) for m in models]},
           "limits": {"max_concurrency": max(16, 2 * concurrency), "unhealthy_cooldown_s": 30},
           "default_temperature": 0.0}
    (d / "gw.yaml").write_text(yaml.safe_dump(cfg))
    ready = d / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "routecraft.serve", "serve", "--config", str(d / "gw.yaml"),
                             "--ready-file", str(ready)], stdout=subprocess.DEVNULL, stderr=open(d / "gw.log", "w"),
                            env={**os.environ, "ROUTECRAFT_API_KEYS": ""})
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"gateway did not start: {(d / 'gw.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return proc, json.loads(ready.read_text()), cfg


_SEQ = iter(range(10**9))


async def one(client: openai.AsyncOpenAI, model: str, q: str, max_tokens: int, rid: str | None = None) -> dict:
    # every call gets a text of its own, so neither path profits from llama.cpp's prompt cache of the other's call
    text = f"{q} [{next(_SEQ)}]"
    t0 = time.perf_counter()
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0,
        extra_headers={"x-request-id": rid} if rid else None)
    resp = raw.parse()
    dt = time.perf_counter() - t0
    return {"latency_s": dt, "model": resp.model, "overhead_ms": _f(raw.headers.get("x-routecraft-overhead-ms")),
            "decision_ms": _f(raw.headers.get("x-routecraft-decision-ms")),
            "fallbacks": int(raw.headers.get("x-routecraft-fallbacks") or 0)}


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _f(x):
    return None if x is None else float(x)


async def run_pool(jobs, concurrency: int, deadline: float, on_done=None) -> list:
    """Run coroutine factories with ``concurrency`` workers; stops taking new jobs after ``deadline``."""
    queue = list(enumerate(jobs))
    results: list = [None] * len(jobs)

    async def worker():
        while queue and time.monotonic() < deadline:
            i, job = queue.pop(0)
            try:
                results[i] = await job()
            except Exception as exc:  # noqa: BLE001 - counted as a failure
                results[i] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            if on_done is not None:
                on_done()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def bench(args, gw_url: str, direct_url: str, servers, ledger: Path, models, gw_pid: int) -> dict:
    out: dict = {}
    deadline = time.monotonic() + args.time_limit
    gwc = openai.AsyncOpenAI(base_url=gw_url, api_key="none", max_retries=0, timeout=120)
    dc = openai.AsyncOpenAI(base_url=direct_url, api_key="none", max_retries=0, timeout=120)
    n, c, mt = args.requests, args.concurrency, args.max_tokens
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    # warm-up: prompt caches and connections
    await run_pool([lambda q=q: one(gwc, "routecraft/auto", q, mt) for q in QUESTIONS[:c]] +
                   [lambda q=q: one(dc, "smollm2-b", q, mt) for q in QUESTIONS[:c]], c, deadline)

    # 1. added latency, interleaved
    jobs = []
    for i in range(n):
        q = qs[i // 2]
        jobs.append((lambda q=q: one(dc, "smollm2-b", q, mt)) if i % 2 == 0 else
                    (lambda q=q: one(gwc, "routecraft/auto", q, mt)))
    t0 = time.perf_counter()
    res = await run_pool(jobs, c, deadline)
    direct = [r for i, r in enumerate(res) if i % 2 == 0 and r and "error" not in r]
    routed = [r for i, r in enumerate(res) if i % 2 == 1 and r and "error" not in r]
    d50, d99 = pct([r["latency_s"] for r in direct], .5), pct([r["latency_s"] for r in direct], .99)
    g50, g99 = pct([r["latency_s"] for r in routed], .5), pct([r["latency_s"] for r in routed], .99)
    ov = [r["overhead_ms"] for r in routed if r["overhead_ms"] is not None]
    dm = [r["decision_ms"] for r in routed if r["decision_ms"] is not None]
    out["latency"] = {
        "n_direct": len(direct), "n_gateway": len(routed), "errors": sum(1 for r in res if r and "error" in r),
        "wall_s": time.perf_counter() - t0, "load_avg": os.getloadavg()[0],
        "direct_p50_ms": d50 * 1e3, "direct_p99_ms": d99 * 1e3, "gateway_p50_ms": g50 * 1e3,
        "gateway_p99_ms": g99 * 1e3, "added_p50_ms": (g50 - d50) * 1e3, "added_p99_ms": (g99 - d99) * 1e3,
        "added_p50_pct": 100 * (g50 - d50) / d50 if d50 else float("nan"),
        "overhead_reported_p50_ms": pct(ov, .5), "overhead_reported_p99_ms": pct(ov, .99),
        "overhead_reported_p50_pct": 100 * pct(ov, .5) / (d50 * 1e3) if d50 else float("nan"),
        "decision_reported_p50_ms": pct(dm, .5), "decision_reported_p99_ms": pct(dm, .99),
        "routed_to": sorted({r["model"] for r in routed}),
    }

    # 2. throughput: alternating rounds of routed and direct calls, so that drifting background load hits both
    tp = {"gateway": {"ok": 0, "wall_s": 0.0, "rounds": []}, "direct": {"ok": 0, "wall_s": 0.0, "rounds": []}}
    rounds = 4
    per = max(1, n // rounds)
    paths = [("gateway", gwc, "routecraft/auto"), ("direct", dc, "smollm2-b")]
    gw_cpu = 0.0
    for rnd in range(rounds):
        for label, client, model in (paths if rnd % 2 == 0 else paths[::-1]):  # alternate which goes first
            t0, cpu0 = time.perf_counter(), proc_cpu_s(gw_pid)
            res = await run_pool([lambda q=q: one(client, model, q, mt) for q in qs[rnd * per:(rnd + 1) * per]], c,
                                 deadline)
            wall = time.perf_counter() - t0
            ok = sum(1 for r in res if r and "error" not in r)
            tp[label]["wall_s"] += wall
            tp[label]["ok"] += ok
            tp[label]["rounds"].append(ok / wall if wall else float("nan"))
            if label == "gateway":
                gw_cpu += proc_cpu_s(gw_pid) - cpu0
    for v in tp.values():
        v["req_per_s"] = v["ok"] / v["wall_s"] if v["wall_s"] else float("nan")
        v["load_avg"] = os.getloadavg()[0]
    tp["gateway_cpu_ms_per_request"] = 1e3 * gw_cpu / max(1, tp["gateway"]["ok"])
    tp["ratio_per_round"] = [g / d for g, d in zip(tp["gateway"]["rounds"], tp["direct"]["rounds"])]
    out["throughput"] = tp

    # 3. the decision alone, in-process
    out["decision"] = await decision_only(models, args.decisions, args.router)

    # 4. a backend killed midway
    k = args.kill_requests
    ids = [f"kill-{i}" for i in range(k)]
    done = {"n": 0, "killed_at": None}

    def on_done():
        done["n"] += 1
        if done["n"] == k // 2 and done["killed_at"] is None:
            os.kill(servers["smollm2-b"].pid, signal.SIGKILL)
            done["killed_at"] = done["n"]

    t0 = time.perf_counter()
    res = await run_pool([lambda i=i: one(gwc, "routecraft/auto", QUESTIONS[i % len(QUESTIONS)], mt, ids[i])
                          for i in range(k)], c, deadline, on_done)
    wall = time.perf_counter() - t0
    from routecraft.serve.ledger import read_rows

    rows = read_rows(ledger, "client_request_id LIKE 'kill-%'")
    per_id: dict[str, list] = {}
    for r in rows:
        per_id.setdefault(r["client_request_id"], []).append(r)
    sent = [i for i in range(k) if res[i] is not None]
    client_ok = [i for i in sent if "error" not in res[i]]
    lost = [ids[i] for i in sent if "error" in res[i] or not any(r["status"] == "ok" for r in per_id.get(ids[i], []))]
    dup = [rid for rid, rs in per_id.items() if len(rs) > 1]
    out["kill"] = {"sent": len(sent), "client_ok": len(client_ok), "client_errors": len(sent) - len(client_ok),
                   "killed_after": done["killed_at"], "ledger_rows": len(rows), "lost": len(lost),
                   "duplicated": len(dup), "fell_back": sum(1 for i in client_ok if res[i]["fallbacks"] > 0),
                   "served_by": {m: sum(1 for i in client_ok if res[i]["model"] == m)
                                 for m in sorted({res[i]["model"] for i in client_ok})},
                   "wall_s": wall, "load_avg": os.getloadavg()[0],
                   "errors": sorted({res[i]["error"][:120] for i in sent if "error" in res[i]})[:5],
                   "lost_ids": lost[:10], "duplicated_ids": dup[:10]}
    await gwc.close()
    await dc.close()
    return out


async def decision_only(models, n: int, router: str | None) -> dict:
    from routecraft.serve.config import config_from_dict
    from routecraft.serve.conversation import ChatRequest
    from routecraft.serve.gateway import Gateway

    out = {}
    specs = {"heuristic": "heuristic"}
    if router:
        specs["artifact"] = router
    with tempfile.TemporaryDirectory() as d:
        cfg = config_from_dict({"pool": {"name": "bench", "models": [m.model_dump(exclude_none=True)
                                                                     for m in models]},
                                "routers": {"auto": "heuristic", **({"artifact": router} if router else {})},
                                "ledger": str(Path(d) / "u.sqlite")})
        gw = Gateway(cfg)
        await gw.start()
        try:
            for label, name in (("heuristic", "auto"), ("artifact", "artifact")):
                if label not in specs:
                    continue
                target = gw.resolve(f"routecraft/{name}")
                times = []
                for i in range(n):
                    text = f"{QUESTIONS[i % len(QUESTIONS)]} (variant {i})"
                    req = ChatRequest.model_validate({"model": target.requested,
                                                      "messages": [{"role": "user", "content": text}]})
                    msgs = req.plain_messages()
                    t0 = time.perf_counter()
                    await gw.route(target, req, msgs, "open")
                    times.append((time.perf_counter() - t0) * 1e3)
                out[label] = {"n": n, "p50_ms": pct(times, .5), "p99_ms": pct(times, .99),
                              "mean_ms": statistics.fmean(times), "load_avg": os.getloadavg()[0]}
        finally:
            await gw.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--kill-requests", type=int, default=200)
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--router", default=None, help="also time the decision of this trained router artifact")
    ap.add_argument("--parallel", type=int, default=4, help="llama.cpp slots per backend")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads per backend")
    ap.add_argument("--time-limit", type=float, default=900, help="stop sending new requests after this (s)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f} requests={args.requests} "
          f"concurrency={args.concurrency} max_tokens={args.max_tokens}", file=sys.stderr)
    servers, models = start_backends(args.parallel, args.threads)
    proc = None
    try:
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            proc, info, _ = start_gateway(d, models, args.concurrency)
            res = asyncio.run(bench(args, info["url"], servers["smollm2-b"].base_url, servers, d / "usage.sqlite",
                                    models, info["pid"]))
            res["args"] = vars(args)
            res["cores"] = os.cpu_count()
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for s in servers.values():
            s.stop()
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


def report(r: dict) -> None:
    L, T, D, K = r["latency"], r["throughput"], r["decision"], r["kill"]
    print(f"\n## gateway load benchmark (loopback, {r['cores']} cores, max_tokens={r['args']['max_tokens']}, "
          f"concurrency={r['args']['concurrency']})")
    print(f"latency, interleaved ({L['n_direct']} direct / {L['n_gateway']} via gateway, load avg "
          f"{L['load_avg']:.2f}):")
    print(f"  direct   p50 {L['direct_p50_ms']:.1f} ms  p99 {L['direct_p99_ms']:.1f} ms")
    print(f"  gateway  p50 {L['gateway_p50_ms']:.1f} ms  p99 {L['gateway_p99_ms']:.1f} ms  (routed to "
          f"{', '.join(L['routed_to'])})")
    print(f"  added    p50 {L['added_p50_ms']:+.1f} ms ({L['added_p50_pct']:+.1f}% of direct)  p99 "
          f"{L['added_p99_ms']:+.1f} ms")
    print(f"  gateway's own overhead (handler - backend) p50 {L['overhead_reported_p50_ms']:.2f} ms "
          f"({L['overhead_reported_p50_pct']:.2f}% of direct p50)  p99 {L['overhead_reported_p99_ms']:.2f} ms")
    print(f"throughput: gateway {T['gateway']['req_per_s']:.2f} req/s ({T['gateway']['ok']} ok, load "
          f"{T['gateway']['load_avg']:.2f}); direct {T['direct']['req_per_s']:.2f} req/s ({T['direct']['ok']} ok, "
          f"load {T['direct']['load_avg']:.2f}); gateway/direct per round: "
          f"{', '.join(f'{x:.2f}' for x in T['ratio_per_round'])}; gateway process CPU "
          f"{T['gateway_cpu_ms_per_request']:.1f} ms per routed request")
    for label, d in D.items():
        print(f"decision only ({label}, in-process, {d['n']} texts): p50 {d['p50_ms']:.3f} ms  p99 "
              f"{d['p99_ms']:.3f} ms  (load {d['load_avg']:.2f})")
    print(f"decision as reported under load: p50 {L['decision_reported_p50_ms']:.3f} ms  p99 "
          f"{L['decision_reported_p99_ms']:.3f} ms")
    print(f"backend killed after {K['killed_after']} of {K['sent']} requests: client ok {K['client_ok']}, client "
          f"errors {K['client_errors']}, ledger rows {K['ledger_rows']}, lost {K['lost']}, duplicated "
          f"{K['duplicated']}, fell back {K['fell_back']}, served by {K['served_by']} (load {K['load_avg']:.2f})")
    if K["errors"]:
        print(f"  errors: {K['errors']}")
    ok_lat = L["added_p50_pct"] <= 5.0
    ok_dec = D["heuristic"]["p50_ms"] <= 5.0
    ok_kill = K["lost"] == 0 and K["duplicated"] == 0
    print(f"targets: added latency <= 5% of direct: {'PASS' if ok_lat else 'FAIL'} "
          f"({L['added_p50_pct']:+.1f}%); decision p50 <= 5 ms: {'PASS' if ok_dec else 'FAIL'}; "
          f"no request lost or duplicated with a backend killed: {'PASS' if ok_kill else 'FAIL'}")


if __name__ == "__main__":
    sys.exit(main())
