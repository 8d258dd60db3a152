"""The serving layer: uvicorn's HTTP parsers answering their own 400s as OpenAI-style JSON, the event loop, and
several gateway workers on one port (``workers: 2``) as a subprocess in front of the instant stub backend of
``benchmarks/openai_stub.py`` (run in a thread here: what is tested is the processes, not a model).

The workers tests share one gateway and run in file order; the last one stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from gateway_proc import launch_gateway, stop_gateway

from _benchmarks import load_benchmark
from routecraft.serve.http_server import http_impl, json_error_protocol, run_loop
from routecraft.serve.ledger import read_rows


def _load_stub():
    return load_benchmark("openai_stub")


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            part = s.recv(65536)
            if not part:
                return out
            out += part


# ---- protocol errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["h11", "httptools"])
def test_malformed_requests_get_a_json_400_from_either_http_parser(impl):
    pytest.importorskip(impl)
    import uvicorn

    async def app(scope, receive, send):  # never reached by a malformed request
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    proto = json_error_protocol(impl)
    assert proto.__name__ == ("_JsonErrorH11Protocol" if impl == "h11" else "_JsonErrorHttpToolsProtocol")
    server = uvicorn.Server(uvicorn.Config(app, http=proto, lifespan="off", log_level="critical"))
    t = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        for bad in (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
                    b"NOT A REQUEST LINE\r\n\r\n"):
            head, _, body = _raw(port, bad).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower(), head
            err = json.loads(body)["error"]
            assert err["type"] == "invalid_request_error" and err["code"] == "bad_http_request"
            assert err["message"].startswith("malformed HTTP request: ")
        assert _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"ok")
    finally:
        server.should_exit = True
        t.join(10)


def test_the_fast_parser_and_loop_are_used_where_installed():
    try:
        import httptools  # noqa: F401
        assert http_impl() == "httptools"
    except ImportError:
        assert http_impl() == "h11"
    assert http_impl("h11") == "h11"

    async def loop_module():
        return type(asyncio.get_running_loop()).__module__

    try:
        import uvloop  # noqa: F401
        assert run_loop(loop_module()).startswith("uvloop")
    except ImportError:
        assert run_loop(loop_module()).startswith("asyncio")
    assert run_loop(loop_module(), "asyncio").startswith("asyncio")


# ---- two workers ---------------------------------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


@pytest.fixture(scope="module")
def workers_gw(tmp_path_factory):
    mod = _load_stub()
    stub, thread, loop = mod.start_stub()
    d = tmp_path_factory.mktemp("workers")
    common = {"endpoint": stub.base_url, "price_in_per_m": 0.03, "price_out_per_m": 0.25, "description": "stub",
              "context": 2048}
    cfg = {"port": 0, "workers": 2, "ledger": str(d / "usage.sqlite"), "log_level": "warning",
           "pool": {"name": "stub", "models": [{"name": "fast", "model_id": "ok", "size_b": 1.7, **common},
                                               {"name": "slow", "model_id": "slow-1500", "size_b": 0.135,
                                                **common}]},
           "limits": {"shutdown_grace_s": 30}}
    proc, info = launch_gateway(d, cfg, timeout_s=120)
    yield {"proc": proc, "info": info, "root": f"http://127.0.0.1:{info['port']}", "ledger": d / "usage.sqlite",
           "calls": mod.CALLS}  # chat requests the stub has received, per backend model id
    stop_gateway(proc, grace_s=60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _chat(root: str, rid: str, model: str = "routecraft/auto") -> httpx.Response:
    # a fresh connection per request: the kernel picks the worker that accepts it
    return httpx.post(root + "/v1/chat/completions", timeout=60, headers={"x-request-id": rid},
                      json={"model": model, "messages": [{"role": "user", "content": f"Say hi ({rid})."}]})


def test_two_workers_serve_one_port_and_write_one_ledger(workers_gw):
    gw = workers_gw
    pids = gw["info"]["workers"]
    assert len(pids) == 2 and gw["info"]["pid"] == gw["proc"].pid and set(pids) <= _children(gw["proc"].pid)
    sent = []
    for stopped, serving in ((pids[0], pids[1]), (pids[1], pids[0])):
        os.kill(stopped, signal.SIGSTOP)  # every new connection must now be served by the other worker
        try:
            for i in range(10):
                rid = f"only-{serving}-{i}"
                r = _chat(gw["root"], rid)
                assert r.status_code == 200, r.text
                assert r.json()["model"] == "fast" and r.headers["x-routecraft-router"] == "auto"
                sent.append(rid)
        finally:
            os.kill(stopped, signal.SIGCONT)

    async def burst():  # 120 concurrent requests over 24 connections
        async with httpx.AsyncClient(base_url=gw["root"], timeout=60,
                                     limits=httpx.Limits(max_connections=24)) as c:
            async def one(i):
                r = await c.post("/v1/chat/completions", headers={"x-request-id": f"burst-{i}"},
                                 json={"model": "fast" if i % 2 else "routecraft/auto",
                                       "messages": [{"role": "user", "content": f"Hello {i}"}]})
                return r.status_code
            return await asyncio.gather(*(one(i) for i in range(120)))

    assert asyncio.run(burst()) == [200] * 120
    sent += [f"burst-{i}" for i in range(120)]
    rows = read_rows(gw["ledger"])
    by_id: dict[str, list] = {}
    for r in rows:
        by_id.setdefault(r["client_request_id"], []).append(r)
    assert {rid: len(by_id.get(rid, [])) for rid in sent} == {rid: 1 for rid in sent}  # each exactly once
    assert all(by_id[rid][0]["status"] == "ok" for rid in sent)
    # any worker's /metrics is the sum over both
    metrics = httpx.get(gw["root"] + "/metrics").text
    total = sum(float(v) for v in re.findall(r'^routecraft_requests_total\{[^}]*status="200"[^}]*\} (\S+)$', metrics,
                                             re.M))
    assert total == len(sent)


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(workers_gw):
    gw = workers_gw
    before = _children(gw["proc"].pid)
    victim = gw["info"]["workers"][0]
    os.kill(victim, signal.SIGKILL)
    for i in range(5):
        assert _chat(gw["root"], f"after-kill-{i}").status_code == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _children(gw["proc"].pid)
        if victim not in now and len(now - before) == 1:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no worker replaced the killed one: children {_children(gw['proc'].pid)}, before {before}")


def test_sigterm_drains_every_worker(workers_gw):
    gw = workers_gw
    pids = _children(gw["proc"].pid)
    out: dict = {}

    def slow(i):
        try:
            out[i] = _chat(gw["root"], f"drain-{i}", model="slow").status_code
        except Exception as exc:  # noqa: BLE001
            out[i] = repr(exc)

    before = gw["calls"].get("slow-1500", 0)
    threads = [threading.Thread(target=slow, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30  # until all four wait on the 1.5 s backend (not a fixed sleep: a loaded
    while gw["calls"].get("slow-1500", 0) < before + 4 and time.monotonic() < deadline:  # machine is slower)
        time.sleep(0.02)
    assert gw["calls"].get("slow-1500", 0) == before + 4, gw["calls"]
    gw["proc"].send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert out == {i: 200 for i in range(4)}
    assert gw["proc"].wait(60) == 0
    assert all(not Path(f"/proc/{p}").exists() for p in pids)
    rows = read_rows(gw["ledger"], "client_request_id LIKE 'drain-%'")
    assert sorted(r["client_request_id"] for r in rows) == [f"drain-{i}" for i in range(4)]
    with pytest.raises(httpx.ConnectError):
        httpx.get(gw["root"] + "/health")
