"""`routecraft serve` (as a subprocess) with real llama.cpp backends, driven by the official ``openai`` client with
only its base_url changed.

The pool has two real SmolLM2-135M servers: the session's ``smollm_server`` as "smollm2-135m", and a private second
one as "smollm2-b", configured as a larger, dearer model so that the heuristic router prefers it at λ = 0 (the
fallback test kills its process mid-request). The tests share one gateway and run in file order: the last two kill
the second backend and then stop the gateway.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pandas as pd
import pytest
from gateway_proc import launch_gateway, stop_gateway

from routecraft.serve.config import hash_key
from routecraft.serve.ledger import read_rows

pytestmark = pytest.mark.slow

KEY, LIMITED, POOR = "alice-secret", "bob-secret", "carol-secret"
HELLO = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def second_server(smollm_path):
    from routecraft.pool.config import PoolModel
    from routecraft.pool.server import serve_local

    pm = PoolModel(name="smollm2-b", local="smollm2-135m", price_in_per_m=0.03, price_out_per_m=0.25,
                   description="second SmolLM2 server", size_b=1.7)
    with serve_local(pm, ctx=2048, parallel=2, threads=1, install_missing=False) as srv:
        yield srv


def _fixed_router(path: Path, candidate: str = "smollm2-b|pal|default") -> Path:
    """A trained artifact (the 'fixed' baseline) that always picks ``candidate`` (smollm2-b with PAL); gpt-4o is not
    in the pool."""
    from routecraft.data.schema import Candidate, RoutingData
    from routecraft.routers import make_router

    qs = pd.DataFrame({"query_id": ["q1", "q2"], "text": ["a", "b"], "task": ["gsm8k"] * 2, "gold": ["1", "2"]})
    pick = Candidate.parse(candidate)
    cands = [(pick.model, pick.strategy, pick.budget), ("smollm2-135m", "default", None), ("gpt-4o", "default", None)]
    rows = [{"query_id": q, "model": m, "strategy": s, "budget": b, "score": 0.5, "cost_usd": 1e-5}
            for q in ("q1", "q2") for m, s, b in cands]
    make_router("fixed", candidate=candidate).fit(RoutingData.from_frames(qs, pd.DataFrame(rows))).save(path)
    return path


def _health(gateway, key: str = KEY) -> dict:
    """GET /health as a key holder (anonymous callers see the states only)."""
    return httpx.get(gateway.root + "/health", headers={"authorization": f"Bearer {key}"}).json()


class GatewayProc:
    def __init__(self, proc, url, port, ledger, servers):
        self.proc, self.url, self.port, self.ledger, self.servers = proc, url, port, ledger, servers

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, smollm_server, second_server):
    d = tmp_path_factory.mktemp("gateway")
    model = {"price_in_per_m": 0.00294, "price_out_per_m": 0.0218, "description": "SmolLM2-135M-Instruct",
             "size_b": 0.135, "context": 2048}
    cfg = {
        "port": 0,
        "pool": {"name": "test", "models": [
            {"name": "smollm2-135m", "endpoint": smollm_server.base_url, "model_id": smollm_server.model_id, **model},
            {"name": "smollm2-b", "endpoint": second_server.base_url, "model_id": second_server.model_id,
             **{**model, "price_in_per_m": 0.03, "price_out_per_m": 0.25, "size_b": 1.7}}]},
        "routers": {"auto": "heuristic", "pal": "fixed-pal", "short": "fixed-short"},
        "keys": [{"name": "alice", "sha256": hash_key(KEY)},
                 {"name": "bob", "sha256": hash_key(LIMITED), "rpm": 2},
                 {"name": "carol", "sha256": hash_key(POOR), "budget_usd": 1e-9}],
        "limits": {"max_body_bytes": 65536, "unhealthy_cooldown_s": 60, "shutdown_grace_s": 30},
        "ledger": str(d / "usage.sqlite"),
        "default_temperature": 0.0,
    }
    _fixed_router(d / "fixed-pal")
    _fixed_router(d / "fixed-short", "smollm2-b|default|8")  # a budgeted plain call
    proc, info = launch_gateway(d, cfg, timeout_s=120)
    gw = GatewayProc(proc, info["url"], info["port"], d / "usage.sqlite", {"b": second_server})
    yield gw
    stop_gateway(proc)


def _headers(raw) -> dict:
    return {k: v for k, v in raw.headers.items() if k.startswith("x-routecraft-")}


def _row(gw: GatewayProc, rid: str) -> dict:
    rows = read_rows(gw.ledger, "request_id = ?", (rid,))
    assert len(rows) == 1
    return rows[0]


# ---- chat, decision headers, ledger --------------------------------------------------------------------------------
def test_chat_completion_returns_the_decision_in_headers_and_body(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="routecraft/auto", messages=HELLO, max_tokens=16, temperature=0, extra_headers={"x-request-id": "t1"})
    h = _headers(raw)
    resp = raw.parse()
    rc = resp.model_extra["routecraft"]
    assert resp.object == "chat.completion" and resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content.strip()
    assert resp.model == h["x-routecraft-model"] == rc["model"] == "smollm2-b"  # the bigger model at λ = 0
    assert h["x-routecraft-strategy"] == rc["strategy"] == "default" and h["x-routecraft-budget"] == "default"
    assert h["x-routecraft-router"] == "auto" and rc["tradeoff"] == "quality" and rc["task"] == "qa"
    assert h["x-routecraft-decided-by"] == rc["decided_by"] == "heuristic"
    assert float(h["x-routecraft-predicted-score"]) == pytest.approx(rc["predicted_score"], rel=1e-5)
    assert float(h["x-routecraft-predicted-cost"]) == pytest.approx(rc["predicted_cost"], rel=1e-5)
    u = resp.usage
    assert u.prompt_tokens > 5 and 0 < u.completion_tokens <= 16
    assert rc["input_tokens"] == u.prompt_tokens and rc["output_tokens"] == u.completion_tokens
    assert (int(h["x-routecraft-input-tokens"]), int(h["x-routecraft-output-tokens"])) == \
        (u.prompt_tokens, u.completion_tokens)
    cost = (u.prompt_tokens * 0.03 + u.completion_tokens * 0.25) / 1e6
    assert float(h["x-routecraft-cost"]) == pytest.approx(cost, rel=1e-5) and rc["cost_usd"] == pytest.approx(cost)
    assert 0 < rc["decision_ms"] < 100 and rc["fallbacks"] == []
    assert float(h["x-routecraft-backend-ms"]) > 0 and float(h["x-routecraft-overhead-ms"]) >= 0
    assert rc["candidates"][0]["candidate"] == "smollm2-b"
    row = _row(gateway, resp.id)
    assert row["key"] == "alice" and row["client_request_id"] == "t1" and row["status"] == "ok"
    assert (row["model"], row["strategy"], row["input_tokens"], row["output_tokens"]) == \
        ("smollm2-b", "default", u.prompt_tokens, u.completion_tokens)
    assert row["cost_usd"] == pytest.approx(cost)


def test_streaming_passes_the_backend_stream_through(gateway):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="routecraft/auto:cheap", messages=[{"role": "user", "content": "Count from one to ten in words."}],
        max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
    h = _headers(raw)
    assert h["x-routecraft-model"] == "smollm2-135m" and "x-routecraft-cost" not in h  # cost is known at the end
    chunks = list(raw.parse())
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 3  # token by token, not one block
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason in ("stop", "length")
    usage = chunks[-1].usage
    assert usage is not None and 0 < usage.completion_tokens <= 24
    rc = chunks[-1].model_extra["routecraft"]
    assert rc["model"] == "smollm2-135m" and rc["output_tokens"] == usage.completion_tokens and rc["cost_usd"] > 0
    assert len({c.id for c in chunks}) == 1
    row = _row(gateway, chunks[0].id)
    assert row["stream"] == 1 and row["status"] == "ok" and row["output_tokens"] == usage.completion_tokens


def test_strategies_run_for_real_with_reasoning_on_request(gateway):
    q = "A shop sells pens at 3 dollars each. How much do 4 pens cost?"
    c = gateway.client()
    raw = c.chat.completions.with_raw_response.create(
        model="routecraft/pal", messages=[{"role": "user", "content": q}], max_tokens=64,
        extra_body={"routecraft": {"show_reasoning": True}})
    resp = raw.parse()
    rc = resp.model_extra["routecraft"]
    assert _headers(raw)["x-routecraft-strategy"] == "pal" and rc["router"] == "pal" and rc["task"] == "numeric"
    assert rc["answer_method"] in ("code", "code_error", "no_code")
    text = resp.choices[0].message.model_extra["reasoning_content"]
    assert text and rc["reasoning"]["text"] == text
    if rc["answer_method"] != "no_code":  # a program was found: it ran in the sandbox
        assert "sandbox" in rc["reasoning"] and rc["reasoning"]["code"]
    # the content is the strategy's answer (the model text only when no answer could be extracted)
    assert resp.choices[0].message.content == (rc["answer"] if rc["answer"] is not None else text)
    # streamed, a post-processed strategy sends its final answer as one content chunk
    chunks = list(c.chat.completions.create(model="routecraft/pal", messages=[{"role": "user", "content": q}],
                                            max_tokens=64, stream=True))
    contents = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(contents) == 1
    assert not any(ch.choices and getattr(ch.choices[0].delta, "reasoning_content", None) for ch in chunks)
    assert chunks[-1].model_extra["routecraft"]["strategy"] == "pal"


def test_a_budgeted_plain_call_is_sent_with_its_length_instruction_and_cap(gateway):
    """A router that picks smollm2-b's plain call with budget 8: the conversation gets the length instruction (more
    prompt tokens than the same plain call without a budget) and the hard cap 8 + 10 when the request sets none,
    streamed or not; the headers say the budget."""
    c = gateway.client()
    msgs = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]
    raw = c.chat.completions.with_raw_response.create(model="routecraft/short", messages=msgs, temperature=0)
    short = raw.parse()
    h = _headers(raw)
    assert h["x-routecraft-strategy"] == "default" and h["x-routecraft-budget"] == "8"
    assert h["x-routecraft-model"] == "smollm2-b"
    plain = c.chat.completions.create(model="routecraft/auto", messages=msgs, max_tokens=18, temperature=0)
    prc = plain.model_extra["routecraft"]
    assert (prc["model"], prc["strategy"], prc["budget"]) == ("smollm2-b", "default", None)
    assert short.usage.prompt_tokens > plain.usage.prompt_tokens  # "Use at most 8 tokens." was appended
    assert 0 < short.usage.completion_tokens <= 18
    chunks = list(c.chat.completions.create(model="routecraft/short", messages=msgs, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    usage = next(ch.usage for ch in chunks if ch.usage is not None)
    assert 0 < usage.completion_tokens <= 18 and usage.prompt_tokens == short.usage.prompt_tokens


def test_a_strategy_that_cannot_run_on_the_task_is_dropped_not_failed(gateway):
    """The fixed router always picks smollm2-b with PAL; a chat request (task "general") cannot be answered by a
    program: PAL is dropped from the decision (listed in ``skipped`` with why) and the next candidate answers —
    never a failed attempt, and no backend is marked unhealthy (the request's own task, not the backend's fault)."""
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="routecraft/pal", messages=[{"role": "user", "content": "Tell me about owls."}], max_tokens=16,
        extra_body={"task": "general"})
    rc = raw.parse().model_extra["routecraft"]
    assert rc["strategy"] != "pal" and rc["fallbacks"] == []
    assert {"candidate": "smollm2-b|pal|default",
            "reason": "strategy 'pal' does not apply to task 'general'"} in rc["skipped"]
    assert _health(gateway)["models"]["smollm2-b"]["healthy"] is True


# ---- multi-turn -----------------------------------------------------------------------------------------------------
def test_multi_turn_routes_on_the_conversation_and_sticks_per_conversation(gateway):
    c = gateway.client()
    conv = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "My name is Bob."},
            {"role": "assistant", "content": "Nice to meet you, Bob!"}, {"role": "user", "content": "What is my name?"}]
    first = c.chat.completions.create(model="routecraft/auto:cheap", messages=conv, max_tokens=12, temperature=0,
                                      extra_body={"conversation_id": "conv-1"})
    assert first.model == "smollm2-135m" and first.model_extra["routecraft"]["sticky"] is False
    again = c.chat.completions.create(model="routecraft/auto", messages=conv, max_tokens=12, temperature=0,
                                      extra_body={"conversation_id": "conv-1"})
    assert again.model == "smollm2-135m" and again.model_extra["routecraft"]["sticky"] is True
    other = c.chat.completions.create(model="routecraft/auto", messages=conv, max_tokens=12, temperature=0,
                                      extra_body={"conversation_id": "conv-2"})
    assert other.model == "smollm2-b" and other.model_extra["routecraft"]["sticky"] is False
    # the router reads earlier turns too: an arithmetic history makes a short follow-up a numeric task
    d = httpx.post(gateway.root + "/v1/routecraft/route", headers={"authorization": f"Bearer {KEY}"}, json={
        "model": "routecraft/auto", "messages": [
            {"role": "user", "content": "I have 12 apples and eat 5 of them each day. How many are left in total?"},
            {"role": "assistant", "content": "7 after one day."}, {"role": "user", "content": "And after two?"}]})
    assert d.json()["task"] == "numeric"


# ---- bypass, models, health, metrics ------------------------------------------------------------------------------
def test_pool_model_bypass_models_health_and_metrics(gateway):
    c = gateway.client()
    raw = c.chat.completions.with_raw_response.create(model="smollm2-135m", messages=HELLO, max_tokens=8,
                                                      temperature=0)
    assert _headers(raw)["x-routecraft-router"] == "bypass" and raw.parse().model == "smollm2-135m"
    ids = {m.id for m in c.models.list()}
    assert {"routecraft/auto", "routecraft/auto:cheap", "routecraft/pal", "routecraft/heuristic", "smollm2-135m",
            "smollm2-b"} <= ids
    health = _health(gateway)
    assert health["status"] == "ok" and health["routers"]["pal"]["skipped"] == 1  # gpt-4o is not in the pool
    m = httpx.get(gateway.root + "/metrics").text
    for needle in ('routecraft_requests_total{model="smollm2-b",requested="routecraft/auto",status="200"}',
                   'routecraft_tokens_total{kind="output",model="smollm2-135m"}',
                   'routecraft_cost_usd_total{model="smollm2-b"}',
                   'routecraft_routing_decisions_total{budget="None",model="smollm2-b",router="pal",strategy="pal"}',
                   "routecraft_routing_decision_seconds_bucket", "routecraft_request_latency_seconds_bucket"):
        assert needle in m, needle


# ---- auth and limits ------------------------------------------------------------------------------------------------
def test_auth_rate_limits_and_budgets(gateway):
    with pytest.raises(openai.AuthenticationError) as e:
        gateway.client("wrong-key").chat.completions.create(model="routecraft/auto", messages=HELLO)
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    bob = gateway.client(LIMITED)
    for _ in range(2):
        bob.chat.completions.create(model="routecraft/auto:cheap", messages=HELLO, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as e:
        bob.chat.completions.create(model="routecraft/auto:cheap", messages=HELLO, max_tokens=2)
    assert e.value.body["code"] == "rate_limit_exceeded"
    carol = gateway.client(POOR)
    carol.chat.completions.create(model="routecraft/auto:cheap", messages=HELLO, max_tokens=2)  # spends > budget
    with pytest.raises(openai.RateLimitError) as e:
        carol.chat.completions.create(model="routecraft/auto:cheap", messages=HELLO, max_tokens=2)
    assert e.value.body["code"] == "insufficient_quota"


# ---- bad requests ---------------------------------------------------------------------------------------------------
def test_bad_requests_are_openai_errors_never_500(gateway):
    c = gateway.client()
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="routecraft/auto", messages=[])
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError, match="valid integer"):
        c.chat.completions.create(model="routecraft/auto", messages=HELLO, max_tokens="many")
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\].content"):
        c.chat.completions.create(model="routecraft/auto", messages=[{"role": "user", "content": {"x": 1}}])
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert e.value.body["code"] == "model_not_found"
    auth = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    url = gateway.url + "/chat/completions"
    r = httpx.post(url, content=b'{"model": "routecraft/auto", "messages": [', headers=auth)
    assert r.status_code == 400 and "could not parse the JSON body" in r.json()["error"]["message"]
    r = httpx.post(url, content=json.dumps({"model": "routecraft/auto", "messages": [
        {"role": "user", "content": "x" * 100_000}]}).encode(), headers=auth)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(url, json={"model": 7, "messages": HELLO}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


# ---- ledger summary -------------------------------------------------------------------------------------------------
def test_usage_command_summarises_the_ledger(gateway):
    r = subprocess.run([sys.executable, "-m", "routecraft.serve", "usage", "--ledger", str(gateway.ledger), "--by",
                        "key", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {x["key"]: x for x in json.loads(r.stdout)}
    assert {"alice", "bob", "carol"} <= set(rows)
    assert rows["bob"]["requests"] == 2 and rows["carol"]["requests"] == 1  # refused requests are not billed
    assert rows["alice"]["ok"] >= 8 and rows["alice"]["cost_usd"] > 0 and rows["alice"]["output_tokens"] > 0


# ---- fallback and shutdown (these two change the gateway: keep them last) -----------------------------------------
def test_fallback_when_the_chosen_backend_is_killed_mid_request(gateway):
    c = gateway.client()
    b = gateway.servers["b"]
    out: dict = {}

    def call():
        try:
            out["raw"] = c.chat.completions.with_raw_response.create(
                model="routecraft/auto", messages=[{"role": "user", "content": "Write a long story about a dragon."}],
                max_tokens=120, temperature=0, extra_headers={"x-request-id": "kill-1"})
        except Exception as exc:  # noqa: BLE001
            out["error"] = exc

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 30
    while _health(gateway)["inflight"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.7)  # smollm2-b is generating
    assert t.is_alive(), f"the request finished before the backend could be killed: {out}"
    os.kill(b.pid, signal.SIGKILL)
    t.join(120)
    assert "error" not in out, out.get("error")
    raw = out["raw"]
    resp = raw.parse()
    rc = resp.model_extra["routecraft"]
    assert _headers(raw)["x-routecraft-model"] == resp.model == "smollm2-135m"
    assert _headers(raw)["x-routecraft-fallbacks"] == "1"
    assert rc["decided"] == "smollm2-b" and rc["fallbacks"][0]["model"] == "smollm2-b"
    assert "smollm2-b" in rc["fallbacks"][0]["error"] and resp.choices[0].message.content
    rows = read_rows(gateway.ledger, "client_request_id = ?", ("kill-1",))
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["attempts"] == 2
    # the dead model is now tried last, and a stream falls back before its first byte
    chunks = list(c.chat.completions.create(model="routecraft/auto", messages=HELLO, max_tokens=8, stream=True))
    assert chunks[-1].model_extra["routecraft"]["model"] == "smollm2-135m"
    assert _health(gateway)["models"]["smollm2-b"]["healthy"] is False
    # naming the dead model directly: nothing to fall back to, 502 with the reason
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="smollm2-b", messages=HELLO, max_tokens=8)
    assert e.value.status_code == 502 and e.value.body["failures"][0]["model"] == "smollm2-b"


def test_graceful_shutdown_finishes_in_flight_requests(gateway):
    c = gateway.client()
    out: dict = {}

    def call():
        try:
            out["resp"] = c.chat.completions.create(
                model="smollm2-135m", messages=[{"role": "user", "content": "Write a poem about the sea."}],
                max_tokens=48, temperature=0, extra_headers={"x-request-id": "drain-1"})
        except Exception as exc:  # noqa: BLE001
            out["error"] = exc

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 30
    while _health(gateway)["inflight"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    gateway.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert "error" not in out, out.get("error")
    assert out["resp"].choices[0].message.content and out["resp"].usage.completion_tokens > 0
    assert gateway.proc.wait(30) == 0
    rows = read_rows(gateway.ledger, "client_request_id = ?", ("drain-1",))
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    with pytest.raises(httpx.ConnectError):
        httpx.get(gateway.root + "/health")


def test_local_pool_models_get_a_private_server_that_stops_with_the_gateway(smollm_path):
    """What `routecraft serve` with no --config does for the built-in pool, on one model: a local model without a
    running server gets a private llama.cpp server, stopped on exit."""
    from routecraft.serve.config import config_from_dict
    from routecraft.serve.server import pool_endpoints

    cfg = config_from_dict({"pool": "local", "models": ["smollm2-135m"],
                            "servers": {"reuse_running": False, "parallel": 1, "threads": 1, "ctx": 512}})
    with pool_endpoints(cfg) as eps:
        assert list(eps) == ["smollm2-135m"]
        root = eps["smollm2-135m"].removesuffix("/v1")
        assert httpx.get(root + "/health").status_code == 200
        assert httpx.get(eps["smollm2-135m"] + "/models").json()["data"][0]["id"] == "smollm2-135m"
    with pytest.raises(httpx.ConnectError):
        httpx.get(root + "/health")
