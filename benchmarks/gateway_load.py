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

``--stub`` measures the gateway's own ceiling instead: both pool models point at ``benchmarks/openai_stub.py`` (a
minimal OpenAI-compatible backend in its own process that answers at once), so every request/s the gateway loses
against calling the stub directly is the gateway's own CPU. A lean keep-alive HTTP/1.1 load generator (raw asyncio
streams, on uvloop where installed) sends ``--stub-requests`` requests per round with ``--stub-concurrency``
connections, in ``--stub-rounds`` rounds that each run the three paths in a rotating order — **direct** (client →
stub), **routed** (``routecraft/auto``: heuristic router, plain-chat decision on smollm2-b) and **bypass**
(``smollm2-b`` by name) — so the client, the stub and the gateway share the same cores for each figure and drifting
background load hits all three. Reported per path: requests/s (all rounds, and the spread over rounds), p50/p99
latency, errors; the gateway's CPU (all its processes) per request, the stub's and the client's; the machine's load
average; and that every routed/bypass request has exactly one ledger row. ``--workers N`` sets the gateway's
``workers``; ``--stub-client openai`` sends the same load with the official openai client instead (what an
ordinary Python client gets: its own CPU, ~1.4 ms per call, then bounds every path on these shared cores);
``--profile FILE`` runs the gateway under cProfile (switched on for one extra routed round only) and
writes where its time goes, by part of the request path and by function.

    python benchmarks/gateway_load.py --stub [--workers 2] [--stub-requests 3000] [--stub-concurrency 32] \
        [--stub-rounds 3] [--stub-client raw|openai] [--profile prof.txt] [--json out.json]

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


# the gateway under cProfile, switched on by SIGUSR1 and off (stats written to argv[1]) by SIGUSR2
PROFILED_SERVE = """
import cProfile, signal, sys
prof, out = cProfile.Profile(), sys.argv.pop(1)
signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
signal.signal(signal.SIGUSR2, lambda *_: (prof.disable(), prof.dump_stats(out)))
from routecraft.serve.cli import serve_app
serve_app()
"""


def start_gateway(d: Path, models, concurrency: int, workers: int | None = None, profile_to: str | None = None,
                  routers: dict | None = None):
    cfg = {"port": 0, "ledger": str(d / "usage.sqlite"), "log_level": "error",
           "pool": {"name": "bench", "models": [m.model_dump(exclude_none=True) for m in models]},
           "limits": {"max_concurrency": max(16, 2 * concurrency), "unhealthy_cooldown_s": 30},
           "default_temperature": 0.0}
    if routers:
        cfg["routers"] = routers
    if workers is not None:
        cfg["workers"] = workers
    (d / "gw.yaml").write_text(yaml.safe_dump(cfg))
    ready = d / "ready.json"
    cmd = [sys.executable, "-m", "routecraft.serve"] if profile_to is None else \
        [sys.executable, "-c", PROFILED_SERVE, profile_to]
    proc = subprocess.Popen(cmd + ["serve", "--config", str(d / "gw.yaml"), "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=open(d / "gw.log", "w"),
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
            res = await run_pool([lambda q=q, client=client, model=model: one(client, model, q, mt)
                                  for q in qs[rnd * per:(rnd + 1) * per]], c, deadline)
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


# ================================================================ --stub: the gateway's own ceiling
class Conn:
    """One keep-alive HTTP/1.1 connection (the lean load generator: no HTTP library between the bytes and the
    clock, so that the client costs a small fraction of what the gateway does)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self) -> "Conn":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, path: bytes, body: bytes, extra: bytes = b"") -> tuple[int, bytes, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n%s\r\n%s" % (path, self.host.encode(), self.port, len(body),
                                                                  extra, body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        low = head.lower()
        i = low.find(b"\r\ncontent-length:")
        if i >= 0:
            j = low.find(b"\r\n", i + 2)
            data = await self.reader.readexactly(int(low[i + 17:j]))
        elif b"transfer-encoding: chunked" in low:
            parts = []
            while True:
                n = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                parts.append(await self.reader.readexactly(n + 2))
                if n == 0:
                    break
            data = b"".join(p[:-2] for p in parts)
        else:
            data = await self.reader.read()
        if b"connection: close" in low:
            self.close()
        return status, head, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _tree_pids(root: int) -> list[int]:
    """``root`` and its descendants (Linux /proc)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def tree_cpu_s(pids: list[int], system_only: bool = False) -> float:
    """User + system (or system only) CPU seconds of these processes."""
    total = 0.0
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(f[12]) + (0 if system_only else int(f[11]))) / os.sysconf("SC_CLK_TCK")
    return total


async def load_round(host: str, port: int, path: bytes, model: str, n: int, conc: int, seq0: int,
                     max_tokens: int, conns: list) -> dict:
    """``n`` chat requests over ``conc`` keep-alive connections; each text unique."""
    lat: list[float] = []
    errors: list[str] = []
    sample: dict = {}
    it = iter(range(n))

    async def worker(c: Conn) -> None:
        for i in it:
            text = f"{QUESTIONS[i % len(QUESTIONS)]} [{seq0 + i}]"
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}],
                               "max_tokens": max_tokens, "temperature": 0}).encode()
            t0 = time.perf_counter()
            try:
                status, head, data = await c.request(path, body)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                c.close()
                continue
            dt = time.perf_counter() - t0
            if status != 200:
                errors.append(f"HTTP {status}: {data[:200]!r}")
                continue
            lat.append(dt)
            if not sample:
                sample.update(head=head.decode("latin-1"), body=json.loads(data))

    for c in conns[:conc]:  # fresh connections: a server closes idle keep-alive ones (uvicorn after 5 s)
        c.close()
        await c.open()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns[:conc]))
    wall = time.perf_counter() - t0
    return {"ok": len(lat), "errors": len(errors), "error_examples": sorted(set(errors))[:3], "wall_s": wall,
            "req_per_s": len(lat) / wall if wall else float("nan"), "latencies": lat, "sample": sample}


async def load_round_openai(host: str, port: int, path: bytes, model: str, n: int, conc: int, seq0: int,
                            max_tokens: int, clients: list) -> dict:
    """``load_round`` with the official openai client (``--stub-client openai``): what an ordinary Python client
    costs on the same cores (about 1.4 ms of CPU per call here), so its figures are the client's as much as the
    gateway's."""
    lat: list[float] = []
    errors: list[str] = []
    sample: dict = {}
    it = iter(range(n))

    async def worker(c) -> None:
        for i in it:
            text = f"{QUESTIONS[i % len(QUESTIONS)]} [{seq0 + i}]"
            t0 = time.perf_counter()
            try:
                raw = await c.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0)
                resp = raw.parse()
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            lat.append(time.perf_counter() - t0)
            if not sample:
                sample.update(head="HTTP/1.1 200\r\n" + "\r\n".join(f"{k}: {v}" for k, v in raw.headers.items()),
                              body=resp.model_dump())

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(clients[0]) for _ in range(conc)))
    wall = time.perf_counter() - t0
    return {"ok": len(lat), "errors": len(errors), "error_examples": sorted(set(errors))[:3], "wall_s": wall,
            "req_per_s": len(lat) / wall if wall else float("nan"), "latencies": lat, "sample": sample}


def start_stub(d: Path):
    ready = d / "stub.json"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("openai_stub.py")), "--ready-file",
                             str(ready)], stdout=subprocess.DEVNULL, stderr=open(d / "stub.log", "w"))
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"stub did not start: {(d / 'stub.log').read_text()[-2000:]}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["port"]


def stub_models(base_url: str, router: str | None = None):
    """The two stub-backed pool models, plus (``router``: a trained artifact) every model the artifact's candidates
    name, also served by the stub, at the local pool's reference prices where it has the model."""
    from routecraft.pool.config import PoolModel, load_pool

    local = load_pool("local")
    ref = local.get("smollm2-135m")
    models = [PoolModel(name=name, endpoint=base_url, model_id=name,
                        price_in_per_m=0.03 if name == "smollm2-b" else ref.price_in_per_m,
                        price_out_per_m=0.25 if name == "smollm2-b" else ref.price_out_per_m,
                        description=ref.description, size_b=1.7 if name == "smollm2-b" else 0.135, context=2048)
              for name in ("smollm2-135m", "smollm2-b")]
    if router:
        from routecraft.data.schema import Candidate

        meta = json.loads((Path(router) / "router.json").read_text())
        names = dict.fromkeys(Candidate.parse(c).model for c in meta["candidates"])
        for name in names:
            if name in {m.name for m in models}:
                continue
            m = local.get(name) if name in local.names else None
            models.append(PoolModel(name=name, endpoint=base_url, model_id=name,
                                    price_in_per_m=m.price_in_per_m if m else 1.0,
                                    price_out_per_m=m.price_out_per_m if m else 2.0,
                                    description=m.description if m else name,
                                    size_b=m.size_b if m else None, context=4096))
    return models


#: where a function's own time is counted (first match of its file or name; C built-ins by their name)
PROFILE_PARTS = [
    ("backend call (ChatClient; before: the openai SDK and httpx)", ("routecraft/pool/", "openai/", "httpx",
                                                                     "httpcore", "anyio/abc/_sockets.py",
                                                                     "anyio/_backends", "typing.py")),
    ("ledger write (sqlite insert + commit)", ("routecraft/serve/ledger.py", "sqlite3.Connection", "sqlite3")),
    ("routing decision (heuristic router, choose)", ("routecraft/routers/", "gateway.py:_decide",
                                                     "gateway.py:route", "gateway.py:_apply_health",
                                                     "conversation.py:routing_text", "numpy", "sweep.py")),
    ("request validation (pydantic, body parsing)", ("pydantic", "conversation.py", "app.py:parse_body",
                                                     "app.py:read_json", "app.py:_finite_float", "json/decoder.py",
                                                     "loads")),
    ("response building (headers, body, JSON encoding)", ("session.py:info", "session.py:headers",
                                                          "session.py:ledger_row", "session.py:completion",
                                                          "json/encoder.py", "dumps", "responses.py")),
    ("prometheus metrics", ("prometheus_client",)),
    ("uvicorn HTTP protocol (httptools/h11)", ("uvicorn/", "httptools", "h11/")),
    ("starlette/fastapi request handling", ("starlette/", "fastapi/", "anyio/")),
    ("gateway handler (app.py, gateway.py, the rest)", ("routecraft/serve/",)),
    ("event loop and sockets (asyncio/uvloop, send/recv)", ("asyncio/", "uvloop", "selectors", "socket",
                                                            "transport", "'write'", "'send'")),
]


def profile_summary(stats_file: str, n_requests: int, top: int = 25) -> str:
    """Where the profiled requests spent their time: each function's own time (cProfile's tottime) summed by part of
    the request path, per request, and the functions with the most own time."""
    import pstats

    st = pstats.Stats(stats_file)
    total = 0.0
    parts: dict[str, float] = {}
    rows = []
    for (file, _line, name), (_cc, nc, tt, _ct, _callers) in st.stats.items():
        total += tt
        where = f"{file}:{name}" if file != "~" else name
        rows.append((tt, nc, where.replace(str(Path(sys.prefix)), "").rsplit("site-packages/", 1)[-1]))
        label = "other"
        for lab, needles in PROFILE_PARTS:
            if any(nd in where for nd in needles):
                label = lab
                break
        parts[label] = parts.get(label, 0.0) + tt
    n = max(1, n_requests)
    lines = [f"profiled time {total:.2f} s for {n_requests} requests = {1e6 * total / n:.0f} us per request "
             "(cProfile's own overhead included: read the shares, not the absolute figures)", "",
             "own time by part of the request path:"]
    for lab, t in sorted(parts.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {100 * t / max(total, 1e-9):5.1f}%  {1e6 * t / n:6.0f} us/request  {lab}")
    lines += ["", f"top {top} functions by own time:"]
    for tt, nc, where in sorted(rows, reverse=True)[:top]:
        lines.append(f"  {100 * tt / max(total, 1e-9):5.1f}%  {nc / n:5.1f} calls/request  {where}")
    return "\n".join(lines)


def _round_stats(rounds: list[dict]) -> dict:
    ok = sum(r["ok"] for r in rounds)
    wall = sum(r["wall_s"] for r in rounds)
    lat = [x for r in rounds for x in r["latencies"]]
    rates = [r["req_per_s"] for r in rounds]
    return {"ok": ok, "errors": sum(r["errors"] for r in rounds), "wall_s": wall,
            "req_per_s": ok / wall if wall else float("nan"), "rounds_req_per_s": rates,
            "min_req_per_s": min(rates), "max_req_per_s": max(rates),
            "p50_ms": pct(lat, .5) * 1e3, "p99_ms": pct(lat, .99) * 1e3,
            "error_examples": sorted({e for r in rounds for e in r["error_examples"]})[:3]}


async def stub_bench(args, host: str, gw_port: int, stub_port: int, gw_pid: int, stub_pid: int,
                     ledger: Path) -> dict:
    n, c, mt = args.stub_requests, args.stub_concurrency, args.max_tokens
    paths = {"direct": (stub_port, b"/v1/chat/completions", "smollm2-b"),
             "routed": (gw_port, b"/v1/chat/completions", "routecraft/auto"),
             "bypass": (gw_port, b"/v1/chat/completions", "smollm2-b")}
    if args.router:  # the trained router's path: same load, its decision (encode + predict) on every request
        paths["trained"] = (gw_port, b"/v1/chat/completions", "routecraft/trained")
    if args.stub_client == "openai":
        rnd_fn = load_round_openai
        conns = {label: [openai.AsyncOpenAI(base_url=f"http://{host}:{port}/v1", api_key="none", max_retries=0,
                                            timeout=120)] for label, (port, _, _) in paths.items()}
    else:
        rnd_fn = load_round
        conns = {label: [await Conn(host, port).open() for _ in range(c)] for label, (port, _, _) in paths.items()}
    seq = 0
    # warm-up: connections, caches, the gateway's first requests
    warm_ok = 0
    for label, (port, path, model) in paths.items():
        w = await rnd_fn(host, port, path, model, max(200, n // 10), c, 10**8 + seq, mt, conns[label])
        seq += max(200, n // 10)
        warm_ok += w["ok"] if label != "direct" else 0
    gw_pids = _tree_pids(gw_pid)
    rounds: dict[str, list] = {k: [] for k in paths}
    cpu = {k: {"gateway": 0.0, "gateway_system": 0.0, "stub": 0.0, "client": 0.0} for k in paths}
    load = [os.getloadavg()[0]]
    order = list(paths)
    for rnd in range(args.stub_rounds):
        for label in order[rnd % len(order):] + order[:rnd % len(order)]:  # rotate which path goes first
            port, path, model = paths[label]
            g0, s0, c0 = tree_cpu_s(gw_pids), proc_cpu_s(stub_pid), time.process_time()
            k0 = tree_cpu_s(gw_pids, system_only=True)
            r = await rnd_fn(host, port, path, model, n, c, seq, mt, conns[label])
            seq += n
            cpu[label]["gateway"] += tree_cpu_s(gw_pids) - g0
            cpu[label]["gateway_system"] += tree_cpu_s(gw_pids, system_only=True) - k0
            cpu[label]["stub"] += proc_cpu_s(stub_pid) - s0
            cpu[label]["client"] += time.process_time() - c0
            rounds[label].append(r)
        load.append(os.getloadavg()[0])
    out: dict = {"load_avg": load, "gateway_processes": len(gw_pids)}
    for label, rs in rounds.items():
        st = _round_stats(rs)
        for k, v in cpu[label].items():
            st[f"{k}_cpu_ms_per_request"] = 1e3 * v / max(1, st["ok"])
        s = rs[0]["sample"]
        if s:
            hdr = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip()
                   for ln in s["head"].split("\r\n")[1:] if ":" in ln}
            st["sample"] = {"model": s["body"].get("model"), "strategy": hdr.get("x-routecraft-strategy"),
                            "router": hdr.get("x-routecraft-router"),
                            "overhead_ms": _f(hdr.get("x-routecraft-overhead-ms")),
                            "content": s["body"]["choices"][0]["message"]["content"]}
        out[label] = st
    # every request through the gateway is in the ledger exactly once
    from routecraft.serve.ledger import read_rows

    rows = read_rows(ledger, "status = 'ok'")
    ids = [r["request_id"] for r in rows]
    sent_ok = sum(r["ok"] for k in paths if k != "direct" for r in rounds[k])
    # the decision as the gateway timed it under this load (its ledger's decision_ms), per router
    out["decision_ms"] = {}
    for router in sorted({r["router"] for r in rows if r["router"] != "bypass"}):
        dms = sorted(r["decision_ms"] for r in rows if r["router"] == router and r["decision_ms"] is not None)
        if dms:
            out["decision_ms"][router] = {"n": len(dms), "p50": pct(dms, 0.5), "p99": pct(dms, 0.99),
                                          "mean": sum(dms) / len(dms)}
    out["ledger"] = {"rows_ok": len(rows), "unique_ids": len(set(ids)), "answered_via_gateway_incl_warmup":
                     sent_ok + warm_ok}
    if args.profile and args.stub_client == "raw":
        out["profile"] = await profile_round(args, host, gw_port, gw_pid, conns["routed"], seq)
    for cs in conns.values():
        for cn in cs:
            if isinstance(cn, Conn):
                cn.close()
            else:
                await cn.close()
    return out


async def profile_round(args, host: str, gw_port: int, gw_pid: int, conns: list, seq: int) -> dict:
    """One more routed round with the gateway's cProfile switched on (single-process gateways only)."""
    out = Path(args.profile).with_suffix(".pstats")
    n = args.stub_requests
    os.kill(gw_pid, signal.SIGUSR1)
    await asyncio.sleep(0.2)
    r = await load_round(host, gw_port, b"/v1/chat/completions", "routecraft/auto", n, args.stub_concurrency, seq,
                         args.max_tokens, conns)
    os.kill(gw_pid, signal.SIGUSR2)
    for _ in range(100):
        await asyncio.sleep(0.1)
        if out.exists() and out.stat().st_size > 0:
            break
    await asyncio.sleep(0.3)
    if not out.exists():
        return {"error": "the gateway wrote no profile"}
    text = profile_summary(str(out), r["ok"])
    Path(args.profile).write_text(f"one routed round of {n} requests ({r['ok']} ok) under cProfile "
                                  f"({r['req_per_s']:.0f} req/s while profiled; load avg {os.getloadavg()[0]:.2f})"
                                  f"\n\n{text}\n")
    return {"file": args.profile, "pstats": str(out), "req_per_s_profiled": r["req_per_s"]}


def stub_main(args) -> dict:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        stub, stub_port = start_stub(d)
        proc = None
        try:
            models = stub_models(f"http://127.0.0.1:{stub_port}/v1", args.router)
            prof = str(Path(args.profile).resolve().with_suffix(".pstats")) if args.profile else None
            proc, info, _ = start_gateway(d, models, args.stub_concurrency, workers=args.workers, profile_to=prof,
                                          routers={"trained": str(Path(args.router).resolve())} if args.router
                                          else None)
            res = run_client(stub_bench(args, "127.0.0.1", info["port"], stub_port, info["pid"], stub.pid,
                                        d / "usage.sqlite"))
        finally:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            stub.terminate()
            stub.wait(10)
    res["args"] = vars(args)
    res["cores"] = os.cpu_count()
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return res


def run_client(coro):
    """The load generator's event loop: uvloop where installed (a cheaper client leaves more CPU to the gateway)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def stub_report(r: dict) -> None:
    a = r["args"]
    print(f"\n## gateway ceiling against an instant stub backend (loopback, {r['cores']} cores, "
          f"{r['gateway_processes']} gateway process(es), workers={a['workers'] or 'config default'}, "
          f"{a['stub_rounds']} rounds x {a['stub_requests']} requests per path, {a['stub_concurrency']} concurrent "
          f"({a['stub_client']} client); load avg {', '.join(f'{x:.2f}' for x in r['load_avg'])})")
    for label in ("direct", "routed", "bypass", "trained"):
        if label not in r:
            continue
        s = r[label]
        rounds = ", ".join(f"{x:.0f}" for x in s["rounds_req_per_s"])
        print(f"  {label:7s} {s['req_per_s']:7.1f} req/s (rounds {rounds})"
              f"  p50 {s['p50_ms']:.2f} ms  p99 {s['p99_ms']:.2f} ms  ok {s['ok']} errors {s['errors']}  CPU per "
              f"request: gateway {s['gateway_cpu_ms_per_request']:.2f} ms (system "
              f"{s['gateway_system_cpu_ms_per_request']:.2f}), stub {s['stub_cpu_ms_per_request']:.2f} "
              f"ms, client {s['client_cpu_ms_per_request']:.2f} ms")
        if s["errors"]:
            print(f"          errors: {s['error_examples']}")
        if s.get("sample") and label != "direct":
            print(f"          sample: model {s['sample']['model']}, router {s['sample']['router']}, strategy "
                  f"{s['sample']['strategy']}, overhead {s['sample']['overhead_ms']} ms")
    for router, dm in r.get("decision_ms", {}).items():
        print(f"  decision inside the gateway under this load, router {router}: p50 {dm['p50']:.3f} ms, p99 "
              f"{dm['p99']:.3f} ms (n {dm['n']}, from the ledger's decision_ms)")
    L = r["ledger"]
    print(f"  ledger: {L['rows_ok']} ok rows, {L['unique_ids']} unique ids, {L['answered_via_gateway_incl_warmup']} "
          f"answered through the gateway (warm-up included)")
    routed = r["routed"]["req_per_s"]
    print(f"target: >= 300 req/s routed: {'PASS' if routed >= 300 else 'FAIL'} ({routed:.1f}; direct "
          f"{r['direct']['req_per_s']:.1f} in the same run)")
    if "profile" in r:
        p = r["profile"]
        print(f"profile: {p.get('file') or p.get('error')}")
        if p.get("file"):
            print(Path(p["file"]).read_text())


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
    ap.add_argument("--workers", type=int, default=None, help="the gateway's `workers` (default: the config's)")
    ap.add_argument("--stub", action="store_true", help="measure the gateway's ceiling against an instant stub "
                    "backend instead of the SmolLM2 servers")
    ap.add_argument("--stub-requests", type=int, default=3000, help="--stub: requests per path per round")
    ap.add_argument("--stub-concurrency", type=int, default=32, help="--stub: keep-alive connections per path")
    ap.add_argument("--stub-rounds", type=int, default=3, help="--stub: rounds (each runs all three paths)")
    ap.add_argument("--stub-client", choices=("raw", "openai"), default="raw",
                    help="--stub: the load generator: raw keep-alive HTTP/1.1 (default) or the official openai "
                         "client (as an ordinary client would call; it costs far more CPU than the gateway now does)")
    ap.add_argument("--profile", default=None, help="--stub: profile the gateway (cProfile) in one extra routed round "
                    "and write where its time goes here (the raw stats beside it, .pstats)")
    args = ap.parse_args()
    if args.stub:
        print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f} stub mode: {args.stub_rounds} rounds x "
              f"{args.stub_requests} requests x 3 paths, {args.stub_concurrency} connections", file=sys.stderr)
        res = stub_main(args)
        stub_report(res)
        if args.json:
            for label in ("direct", "routed", "bypass"):
                res[label].pop("latencies", None)
            Path(args.json).write_text(json.dumps(res, indent=2, default=str))
        return 0
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f} requests={args.requests} "
          f"concurrency={args.concurrency} max_tokens={args.max_tokens}", file=sys.stderr)
    servers, models = start_backends(args.parallel, args.threads)
    proc = None
    try:
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            proc, info, _ = start_gateway(d, models, args.concurrency, workers=args.workers)
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
