"""The gateway under attack and faults, against `routecraft serve` (a subprocess) on loopback with a real llama.cpp
SmolLM2 backend: each case is one found by attacking the gateway, and each test pins what now comes back.

The module's gateway serves the session's SmolLM2 server twice ("small" and "big", context 2048), with API keys, one
execution slot and a queue of two (so a burst can be tested on an idle gateway), and a low failed-authentication
limit (its test runs last: after it, this address is throttled).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time

import httpx
import pytest
from gateway_proc import PRICE, STORY, start_gateway, stop_gateway

from routecraft.serve.config import hash_key
from routecraft.serve.ledger import read_rows

pytestmark = pytest.mark.slow

KEY, POOR = "alice-secret", "dave-secret"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, smollm_server):
    d = tmp_path_factory.mktemp("attacks")
    base = {"endpoint": smollm_server.base_url, "model_id": smollm_server.model_id, "description": "SmolLM2",
            "context": 2048, **PRICE}
    cfg = {
        "port": 0,
        "pool": {"name": "attack", "models": [{"name": "small", "size_b": 0.135, **base},
                                              {"name": "big", "size_b": 1.7, **base}]},
        "keys": [{"name": "alice", "sha256": hash_key(KEY)},
                 {"name": "dave", "sha256": hash_key(POOR), "budget_usd": 3e-7}],
        "limits": {"max_concurrency": 1, "max_queue": 2, "queue_timeout_s": 60, "unhealthy_cooldown_s": 60,
                   "auth_failures_per_min": 8},
        "ledger": str(d / "usage.sqlite"),
        "default_temperature": 0.0,
    }
    proc, root = start_gateway(d, cfg)
    yield {"root": root, "ledger": d / "usage.sqlite", "proc": proc}
    stop_gateway(proc)


def post(gw, body, key=KEY, **kw) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(gw["root"] + "/v1/chat/completions", content=data, timeout=120,
                      headers={"authorization": f"Bearer {key}", "content-type": "application/json",
                               **kw.pop("headers", {})}, **kw)


def health(gw, key=KEY) -> httpx.Response:
    return httpx.get(gw["root"] + "/health", headers={"authorization": f"Bearer {key}"} if key else {})


def rows_for(gw, rid: str) -> list[dict]:
    return read_rows(gw["ledger"], "client_request_id = ?", (rid,))


def assert_all_healthy(gw) -> None:
    h = health(gw)
    assert h.status_code == 200 and h.json()["status"] == "ok", h.text
    assert all(m["healthy"] and m["state"] != "down" for m in h.json()["models"].values()), h.text


# ---- client errors stay client errors ------------------------------------------------------------------------------
def test_lone_surrogate_is_a_400_naming_the_field_and_reaches_no_backend(gw):
    for model in ("small", "routecraft/auto"):
        body = ('{"model": "%s", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}' % model).encode()
        r = post(gw, body, headers={"x-request-id": f"surrogate-{model}"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["param"] == "messages[0].content"
        assert "surrogate" in err["message"]
        assert rows_for(gw, f"surrogate-{model}") == []  # refused before any backend call
    assert_all_healthy(gw)


def test_prompts_over_the_context_are_400_context_length_exceeded_and_mark_nothing_unhealthy(gw):
    cases = {
        # bypass, 600 KB: refused before the backend (surely too long for a 2048-token context)
        "ctx-bypass-huge": {"model": "small", "messages": [{"role": "user", "content": "word " * 120_000}]},
        # bypass, passes the gateway's lower-bound estimate: the backend's own 400 becomes the client's 400
        "ctx-bypass-backend": {"model": "small", "messages": [{"role": "user", "content": "7 " * 3600}]},
        # routed, 12k CJK characters: the estimate counts a token per character
        "ctx-cjk": {"model": "routecraft/auto", "messages": [{"role": "user", "content": "龍" * 12_000}]},
        # routed, ASCII that the chars/4 estimate lets through: the backend refuses it on every model of that
        # context, and nothing is tried on a model that is not larger
        "ctx-routed-backend": {"model": "routecraft/auto", "messages": [{"role": "user", "content": "7 " * 3600}],
                               "max_tokens": 8},
    }
    for rid, body in cases.items():
        r = post(gw, body, headers={"x-request-id": rid})
        assert r.status_code == 400, (rid, r.text)
        err = r.json()["error"]
        assert err["code"] == "context_length_exceeded" and err["type"] == "invalid_request_error", (rid, err)
        assert "127.0.0.1" not in err["message"]  # the backend's words, not its address
    assert rows_for(gw, "ctx-bypass-huge") == [] and rows_for(gw, "ctx-cjk") == []
    for rid in ("ctx-bypass-backend", "ctx-routed-backend"):  # these reached a backend: recorded, not billed
        (row,) = rows_for(gw, rid)
        assert row["status"] == "refused" and row["http_status"] == 400 and row["cost_usd"] == 0
        kinds = {f["kind"] for f in json.loads(row["fallbacks"])}
        assert kinds == {"context"}
    (row,) = rows_for(gw, "ctx-routed-backend")
    assert row["attempts"] == 1  # "big" has the same context: not worth a second call
    assert_all_healthy(gw)
    # and the next request goes to the model the router chose first, not moved back as "unhealthy"
    r = post(gw, {"model": "routecraft/auto", "messages": [{"role": "user", "content": "Say hi."}],
                  "max_tokens": 4})
    assert r.status_code == 200 and r.json()["routecraft"]["skipped"] == []
    assert r.json()["routecraft"]["fallbacks"] == []


@pytest.mark.parametrize("field,value", [("lambda", "1e999"), ("max_cost", "1e999"), ("lambda", "-1e999"),
                                         ("temperature", "1e999"), ("max_tokens", "1" + "0" * 400)])
def test_non_finite_and_huge_numbers_are_400_before_any_backend_call(gw, field, value):
    rid = f"nonfinite-{field}-{value[:6]}"
    body = ('{"model": "routecraft/auto", "messages": [{"role": "user", "content": "What is 2+2?"}], '
            '"%s": %s}' % (field, value)).encode()
    r = post(gw, body, headers={"x-request-id": rid})
    assert r.status_code == 400, r.text
    assert "out of range" in r.json()["error"]["message"]
    assert rows_for(gw, rid) == []
    nested = ('{"model": "routecraft/auto", "messages": [{"role": "user", "content": "hi"}], '
              '"routecraft": {"%s": %s}}' % (field, value)).encode()
    assert post(gw, nested).status_code == 400


def test_malformed_content_length_gets_an_openai_json_400(gw):
    host, port = gw["root"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head.lower()
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "bad_http_request"


def test_openapi_document_describes_the_endpoints(gw):
    doc = httpx.get(gw["root"] + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/chat/completions", "/v1/models", "/health", "/v1/routecraft/route"):
        assert path in doc["paths"], path
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages"} <= set(body["required"]) and "lambda" in body["properties"]
    assert "Message" in doc["components"]["schemas"]


# ---- billing that cannot be dodged ---------------------------------------------------------------------------------
def test_a_stream_dropped_before_its_end_is_billed_for_what_was_delivered(gw):
    body = {"model": "small", "messages": STORY, "max_tokens": 400, "stream": True}
    got = 0
    with httpx.stream("POST", gw["root"] + "/v1/chat/completions", json=body, timeout=60,
                      headers={"authorization": f"Bearer {POOR}", "x-request-id": "drop-1"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content": "' in line and '"content": ""' not in line:
                got += 1
            if got >= 40:
                break  # the client goes away mid-stream
    deadline = time.monotonic() + 20
    while not rows_for(gw, "drop-1") and time.monotonic() < deadline:
        time.sleep(0.1)
    (row,) = rows_for(gw, "drop-1")
    assert row["status"] == "cancelled" and row["key"] == "dave"
    assert row["output_tokens"] >= 40 and row["input_tokens"] > 0
    assert row["cost_usd"] == pytest.approx((row["input_tokens"] * PRICE["price_in_per_m"] +
                                             row["output_tokens"] * PRICE["price_out_per_m"]) / 1e6)
    assert row["cost_usd"] > 3e-7  # more than dave's budget ...
    r = post(gw, {"model": "small", "messages": STORY, "max_tokens": 4}, key=POOR)
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"  # ... so it is used up


# ---- admission -----------------------------------------------------------------------------------------------------
def test_a_burst_on_an_idle_gateway_holds_the_queue_bound(gw):
    """One slot and a queue of two: of 8 simultaneous requests, 3 are served and 5 get 429 queue_full."""
    async def burst():
        async with httpx.AsyncClient(timeout=120) as c:
            body = {"model": "small", "messages": STORY, "max_tokens": 48}
            return await asyncio.gather(*[
                c.post(gw["root"] + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
                for _ in range(8)])

    codes = sorted(r.status_code for r in asyncio.run(burst()))
    assert codes == [200] * 3 + [429] * 5, codes


# ---- /health -------------------------------------------------------------------------------------------------------
def test_health_shows_internals_only_to_key_holders(gw):
    anon = health(gw, key=None)
    assert anon.status_code == 200
    assert set(anon.json()) == {"status", "models"} and all(set(m) == {"healthy"}
                                                           for m in anon.json()["models"].values())
    assert "127.0.0.1" not in anon.text
    full = health(gw).json()
    assert full["models"]["small"]["url"].startswith("http://127.0.0.1:") and "inflight" in full


# ---- failed-auth throttling (last: it throttles this address) ------------------------------------------------------
def test_wrong_key_guesses_are_throttled_per_address(gw):
    codes = [post(gw, {"model": "small", "messages": STORY}, key=f"guess-{i}").status_code for i in range(12)]
    assert codes[:8] == [401] * 8 and codes[8:] == [429] * 4, codes
    r = post(gw, {"model": "small", "messages": STORY}, key="guess-x")
    assert r.json()["error"]["code"] == "auth_throttled" and int(r.headers["retry-after"]) >= 1
    # the right key from the same address waits too: a guesser holding one key gets no extra guesses
    assert post(gw, {"model": "small", "messages": STORY}, key=KEY).status_code == 429


# ---- backends that come back ---------------------------------------------------------------------------------------
def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_a_dead_private_server_is_restarted_and_a_mid_stream_failure_is_billed(tmp_path, smollm_path):
    """The built-in local pool with one model and no running server: the gateway starts a private llama.cpp server.
    SIGKILL it mid-stream: the stream ends with an error event and is billed for what was delivered; /health says
    "down" with 503; the supervisor restarts the server and requests are served again."""
    cfg = {"port": 0, "pool": "local", "models": ["smollm2-135m"], "ledger": str(tmp_path / "u.sqlite"),
           "servers": {"reuse_running": False, "parallel": 1, "threads": 1, "ctx": 1024},
           "supervision": {"interval_s": 0.5, "restart_backoff_s": 0.5}, "routers": {"auto": "heuristic"},
           "heuristic": {"strategies": ["default"]}, "default_temperature": 0.0}
    proc, root = start_gateway(tmp_path, cfg, env={"ROUTECRAFT_POOL_STATE": str(tmp_path / "state.json")})
    g = {"root": root, "ledger": tmp_path / "u.sqlite"}
    try:
        h = httpx.get(root + "/health").json()  # open gateway on loopback: everyone sees the details
        pid = h["models"]["smollm2-135m"]["pid"]
        got = 0
        body = {"model": "smollm2-135m", "messages": STORY, "max_tokens": 400, "stream": True}
        events = []
        with httpx.stream("POST", root + "/v1/chat/completions", json=body, timeout=60,
                          headers={"x-request-id": "midway-1"}) as r:
            for line in r.iter_lines():
                events.append(line)
                if '"content": "' in line and '"content": ""' not in line:
                    got += 1
                    if got == 20:
                        os.kill(pid, signal.SIGKILL)
        assert any("backend_failed_mid_stream" in e for e in events), events[-3:]
        (row,) = _wait(lambda: rows_for(g, "midway-1"), 20, "the ledger row")
        assert row["status"] == "failed" and row["output_tokens"] >= 20 and row["cost_usd"] > 0
        # down, said with a non-200 status
        down = _wait(lambda: (lambda r: r if r.status_code == 503 else None)(httpx.get(root + "/health")), 10,
                     "/health to report the dead server")
        assert down.json()["status"] == "down" and down.json()["models"]["smollm2-135m"]["healthy"] is False
        # restarted by the supervisor, and serving again
        up = _wait(lambda: (lambda r: r if r.status_code == 200 else None)(httpx.get(root + "/health")), 90,
                   "the restarted server")
        m = up.json()["models"]["smollm2-135m"]
        assert m["restarts"] == 1 and m["pid"] != pid and m["state"] == "up"
        r = httpx.post(root + "/v1/chat/completions", timeout=60,
                       json={"model": "smollm2-135m", "messages": STORY, "max_tokens": 4})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
    finally:
        stop_gateway(proc)


def test_a_pool_server_restarted_on_a_new_port_is_picked_up(tmp_path, smollm_path, monkeypatch):
    from routecraft.pool.config import load_pool
    from routecraft.pool.server import down, running, up

    monkeypatch.setenv("ROUTECRAFT_POOL_STATE", str(tmp_path / "state.json"))
    pool = load_pool("local")
    up(pool, ["smollm2-135m"], ctx=512, threads=1)
    try:
        first = running()["smollm2-135m"].port
        cfg = {"port": 0, "pool": "local", "models": ["smollm2-135m"], "ledger": str(tmp_path / "u.sqlite"),
               "servers": {"reuse_running": True, "start": False}, "supervision": {"interval_s": 0.5},
               "routers": {"auto": "heuristic"}, "heuristic": {"strategies": ["default"]}}
        proc, root = start_gateway(tmp_path, cfg)
        try:
            ask = {"model": "smollm2-135m", "messages": STORY, "max_tokens": 4}
            assert httpx.post(root + "/v1/chat/completions", json=ask, timeout=60).status_code == 200
            down(["smollm2-135m"])
            r = httpx.post(root + "/v1/chat/completions", json=ask, timeout=60)
            assert r.status_code == 502  # nothing to serve it now
            _wait(lambda: httpx.get(root + "/health").status_code == 503, 10, "/health to say down")
            # a blocker on the old port, so the new server surely gets another one
            with socket.socket() as blocker:
                blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                blocker.bind(("127.0.0.1", first))
                blocker.listen()
                up(pool, ["smollm2-135m"], ctx=512, threads=1)
                second = running()["smollm2-135m"].port
                assert second != first
                h = _wait(lambda: (lambda r: r if r.status_code == 200 else None)(httpx.get(root + "/health")), 20,
                          "the gateway to follow the new port")
                assert h.json()["models"]["smollm2-135m"]["url"] == f"http://127.0.0.1:{second}/v1"
                assert httpx.post(root + "/v1/chat/completions", json=ask, timeout=60).status_code == 200
        finally:
            stop_gateway(proc)
    finally:
        down(["smollm2-135m"])


def test_a_public_host_without_keys_is_refused_before_any_backend_starts(tmp_path):
    from routecraft.serve.config import ServeConfigError, config_from_dict
    from routecraft.serve.server import run_server

    cfg = config_from_dict({"host": "0.0.0.0", "pool": "local", "models": ["smollm2-135m"],
                            "servers": {"reuse_running": False}, "ledger": str(tmp_path / "u.sqlite")})
    seen = []
    t0 = time.monotonic()
    with pytest.raises(ServeConfigError, match="not a loopback address and no API key"):
        run_server(cfg, progress=seen.append)
    assert seen == [] and time.monotonic() - t0 < 10  # no server was started (that would print progress)
