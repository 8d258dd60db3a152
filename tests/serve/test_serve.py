"""The gateway without a model: config validation, the heuristic router, conversation handling, keys, the ledger and
`routecraft usage`, and the HTTP layer in-process (request validation, auth, limits, 502 with reasons) against
backends that refuse connections (a real closed port). The real-model tests are in test_serve_gateway.py."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from routecraft.data.schema import Candidate
from routecraft.pool.config import PoolModel
from routecraft.routers.heuristic import HeuristicRouter, query_kind
from routecraft.serve.app import create_app
from routecraft.serve.auth import KeyStore
from routecraft.serve.config import KeySpec, ServeConfigError, config_from_dict, env_keys, hash_key, load_config
from routecraft.serve.conversation import RequestError, parse_chat, routing_text
from routecraft.serve.gateway import Gateway
from routecraft.serve.ledger import Ledger, read_rows, summarise
from routecraft.strategies import get_strategy
from routecraft.strategies.conversation import strategy_messages

MATH = "Tom has 3 apples and buys 5 more bags with 4 apples each. How many apples does he have in total?"
CHAT = "Write a friendly greeting for my neighbour."


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connections are refused


def _pool(url: str) -> dict:
    return {"name": "t", "models": [
        {"name": "small", "endpoint": url, "price_in_per_m": 0.003, "price_out_per_m": 0.02, "description": "small",
         "size_b": 0.135, "context": 2048},
        {"name": "big", "endpoint": url, "price_in_per_m": 0.03, "price_out_per_m": 0.25, "description": "big",
         "size_b": 1.5, "context": 2048},
        {"name": "base", "endpoint": url, "price_in_per_m": 0.01, "price_out_per_m": 0.05, "description": "base model",
         "size_b": 0.27, "instruct": False},
    ]}


def _models() -> list[PoolModel]:
    return [PoolModel(**m) for m in _pool("http://127.0.0.1:9/v1")["models"][:2]]


# ---- config ---------------------------------------------------------------------------------------------------
def test_builtin_config_is_valid_and_documented_defaults():
    cfg, _ = load_config()
    assert cfg.host == "127.0.0.1" and cfg.routers["auto"] == "builtin"  # the shipped default where it was selected
    assert cfg.default_tradeoff in cfg.tradeoffs and cfg.is_loopback()
    assert cfg.keys == [] and cfg.ledger.endswith("usage.sqlite")


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ServeConfigError, match=r"keys\.0\.sha256.*sha256 of the key"):
        config_from_dict({"keys": [{"name": "a", "sha256": "my-plain-secret"}]}, "gw.yaml")
    with pytest.raises(ServeConfigError, match=r"gw.yaml: field 'limits.max_concurrency'"):
        config_from_dict({"limits": {"max_concurrency": 0}}, "gw.yaml")
    with pytest.raises(ServeConfigError, match=r"field 'prot'.*[Ee]xtra"):
        config_from_dict({"prot": 1}, "gw.yaml")
    with pytest.raises(ServeConfigError, match="default_tradeoff 'fast' is not in tradeoffs"):
        config_from_dict({"default_tradeoff": "fast"}, "gw.yaml")
    with pytest.raises(ServeConfigError, match="unknown strategy 'tot'"):
        config_from_dict({"heuristic": {"strategies": ["default", "tot"]}}, "gw.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: [1,\n")
    with pytest.raises(ServeConfigError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ServeConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_env_keys_are_hashed_and_named():
    cfg = config_from_dict({"limits": {"key_budget_usd": 2.0, "key_rpm": 10}})
    keys = env_keys(cfg, {"ROUTECRAFT_API_KEYS": "alice=s3cret, bare-secret"})
    assert [k.name for k in keys] == ["alice", "env-1"]
    assert keys[0].sha256 == hash_key("s3cret") and keys[0].budget_usd == 2.0 and keys[0].rpm == 10
    with pytest.raises(ServeConfigError, match="empty key"):
        env_keys(cfg, {"ROUTECRAFT_API_KEYS": "bob="})


def test_open_gateway_on_public_address_is_refused():
    cfg = config_from_dict({"host": "0.0.0.0", "pool": _pool("http://127.0.0.1:9/v1"), "ledger": ":memory:"})
    with pytest.raises(ServeConfigError, match="not a loopback address and no API key"):
        asyncio.run(Gateway(cfg).start())


# ---- keys -----------------------------------------------------------------------------------------------------
def test_keystore_auth_rate_and_budget():
    ks = KeyStore([KeySpec(name="a", sha256=hash_key("ka"), budget_usd=0.01, rpm=2)])
    assert ks.authenticate("Bearer ka") == "a"
    for header, msg in [(None, "missing API key"), ("Bearer nope", "incorrect API key"), ("Basic ka", "malformed")]:
        with pytest.raises(RequestError, match=msg) as e:
            ks.authenticate(header)
        assert e.value.status == 401
    ks.check_rate("a", now=0.0)
    ks.check_rate("a", now=1.0)
    with pytest.raises(RequestError, match="2 requests per minute") as e:
        ks.check_rate("a", now=2.0)
    assert e.value.status == 429 and int(e.value.headers["retry-after"]) >= 1
    ks.check_rate("a", now=61.0)  # the window rolled on
    ks.check_budget("a")
    ks.charge("a", 0.02)
    with pytest.raises(RequestError, match="used its budget") as e:
        ks.check_budget("a")
    assert e.value.code == "insufficient_quota"
    assert KeyStore([]).authenticate(None) == "open"


# ---- heuristic router -----------------------------------------------------------------------------------------
def test_query_kind():
    assert query_kind(MATH) == "numeric"
    assert query_kind(CHAT) == "qa"
    assert query_kind("Which is a mammal?\n(A) shark\n(B) whale\n(C) trout") == "choice"
    # a request for a program is code (PAL cannot answer it: the gateway drops it), explaining code is not
    assert query_kind("Write a Python function that reverses a string.") == "code"
    assert query_kind("def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n") == "code"
    assert query_kind("Can you explain what a Python class is?") == "qa"
    from routecraft.data.collect.multitask import llmrouter_queries  # LLMRouter's test file, shipped in the package

    d = llmrouter_queries("test")
    code = d[d["task"].isin(["mbpp", "human_eval"])]["text"]
    assert len(code) == 100 and all(query_kind(q) == "code" for q in code)
    other = d[d["task"].isin(["gsm8k", "natural_qa", "trivia_qa", "commonsense_qa"])]["text"]
    assert len(other) == 200 and sum(query_kind(q) == "code" for q in other) == 0
    assert query_kind("I was born in 1990 and live at number 12.") == "qa"  # numbers without arithmetic


def test_heuristic_router_rules():
    r = HeuristicRouter(strategies=["default", "direct", "cot", "pal"]).fit_pool(_models())
    q = pd.DataFrame({"query_id": ["m", "c"], "text": [MATH, CHAT], "task": ["numeric", "qa"], "gold": [None, None]})
    d_math, d_chat = r.decide(q, None, lam=0.0)
    assert d_math.candidate.model == "big" and d_math.candidate.strategy in ("cot", "pal")
    assert d_chat.candidate.model == "big" and d_chat.candidate.strategy == "default"
    cheap = r.decide(q, None, lam=1e7)
    assert all(d.candidate.model == "small" for d in cheap)
    # a cost cap between the two models' costs: the best candidate within it
    pred = r.predict(q)
    cap = float(np.median(pred.cost[1]))
    d = r.decide(q.iloc[[1]], None, max_cost=cap)[0]
    assert d.predicted_cost <= cap
    # a tight output cap makes long reasoning unattractive
    short = r.predict_rows([(MATH, len(MATH), 8, "numeric")])
    ids = [c.id for c in short.candidates]
    assert short.score[0, ids.index("big|cot|default")] < short.score[0, ids.index("big")]
    assert short.tokens.max() <= 8
    assert not hasattr(r, "fit")  # built from the pool (fit_pool), not fit on an outcomes table


# ---- conversations --------------------------------------------------------------------------------------------
def test_routing_text_uses_the_conversation_with_the_last_turn_last():
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"}, {"role": "user", "content": "follow-up"}]
    assert routing_text(msgs) == "first question\nfollow-up"
    assert routing_text(msgs[:2]) == "first question"


def test_strategy_messages_single_turn_is_the_collection_prompt_and_multi_turn_wraps_the_last_turn():
    cot = get_strategy("cot")
    single = [{"role": "user", "content": MATH}]
    assert strategy_messages(cot, single, "numeric", 64) == cot.build_messages(MATH, "numeric", 64)
    conv = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": MATH}]
    out = strategy_messages(cot, conv, "numeric", 64)
    assert out[0] == {"role": "system", "content": "You are terse."}
    assert out[1:3] == conv[1:3]
    assert out[3]["content"].startswith(MATH) and cot.instruction("numeric") in out[3]["content"]
    assert out[3]["content"].endswith("Use at most 64 tokens.")



def test_the_plain_call_wraps_a_conversation_with_nothing_but_a_budget():
    plain = get_strategy("default")
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "who wrote hamlet"}]
    assert strategy_messages(plain, conv, "qa", None) == conv  # no blank line, no instruction appended
    assert strategy_messages(plain, conv, "qa", 32)[-1]["content"] == "who wrote hamlet\n\nUse at most 32 tokens."
    sc = get_strategy("sc-default")
    assert strategy_messages(sc, conv, "qa", None) == conv
    assert strategy_messages(plain, conv[-1:], "qa", 32) == plain.build_messages("who wrote hamlet", "qa", 32)


def test_a_budgeted_plain_call_gets_the_length_instruction_and_the_hard_cap(tmp_path):
    """What the gateway sends for strategy default: the conversation and the client's sampling as they are; with a
    budget (a router trained on budgeted plain-call cells), the length instruction and cap budget + slack, as the
    cells were collected (the lower of it and the request's max_tokens)."""
    gw = _gateway(tmp_path)
    msgs = [{"role": "user", "content": "who wrote hamlet"}]
    req = parse_chat(_chat(content="who wrote hamlet", temperature=0.2))
    sent, kw = gw.plain_call(Candidate("m1", "default"), msgs, "qa", req)
    assert sent == msgs and kw["max_tokens"] == 1024 and kw["temperature"] == 0.2
    sent, kw = gw.plain_call(Candidate("m1", "default", 32), msgs, "qa", req)
    assert sent[-1]["content"] == "who wrote hamlet\n\nUse at most 32 tokens." and kw["max_tokens"] == 42
    assert kw["temperature"] == 0.2  # the client's sampling is kept
    capped = parse_chat(_chat(content="who wrote hamlet", max_tokens=20))
    assert gw.plain_call(Candidate("m1", "default", 32), msgs, "qa", capped)[1]["max_tokens"] == 20
    assert gw.plain_call(Candidate("m1", "default", 4096), msgs, "qa", req)[1]["max_tokens"] == 1024


# ---- ledger and `routecraft usage` ----------------------------------------------------------------------------
def test_ledger_records_and_summarises(tmp_path):
    path = tmp_path / "usage.sqlite"
    led = Ledger(path).open()
    for i, (key, model, status, cost) in enumerate([("a", "m1", "ok", 0.5), ("a", "m2", "ok", 0.25),
                                                     ("b", "m1", "failed", 0.0)]):
        led.record({"request_id": f"r{i}", "key": key, "model": model, "status": status, "cost_usd": cost,
                    "input_tokens": 10, "output_tokens": 5, "latency_s": 0.1 * (i + 1), "decision_ms": 0.5,
                    "fallbacks": [{"candidate": "x", "error": "down"}] if i == 1 else []})
    with pytest.raises(Exception):  # noqa: B017 - whichever error the database raises
        led.record({"request_id": "r0", "status": "ok"})  # request ids are unique
    with pytest.raises(Exception, match="unknown ledger column"):
        led.record({"request_id": "r9", "status": "ok", "colour": "red"})
    assert led.spent_by_key() == {"a": 0.75, "b": 0.0}
    led.close()
    assert len(read_rows(path)) == 3
    by_key = {r["key"]: r for r in summarise(path, by="key")}
    assert by_key["a"]["requests"] == 2 and by_key["a"]["cost_usd"] == pytest.approx(0.75)
    assert by_key["b"]["failed"] == 1 and by_key["a"]["fallbacks"] == 1
    total = summarise(path)[0]
    assert total["requests"] == 3 and total["input_tokens"] == 30
    with pytest.raises(ValueError, match="--by must be one of"):
        summarise(path, by="colour")

    from routecraft.serve.cli import serve_app

    res = CliRunner().invoke(serve_app, ["usage", "--ledger", str(path), "--by", "model", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in json.loads(res.output)}
    assert rows["m1"]["requests"] == 2 and rows["m2"]["cost_usd"] == pytest.approx(0.25)
    res = CliRunner().invoke(serve_app, ["usage", "--ledger", str(tmp_path / "none.sqlite")])
    assert res.exit_code == 2 and "no usage ledger" in res.output


# ---- the HTTP layer in-process (backends refuse connections) ---------------------------------------------------
def _gateway(tmp_path, **over) -> Gateway:
    cfg = {"pool": _pool(f"http://127.0.0.1:{_closed_port()}/v1"), "ledger": str(tmp_path / "u.sqlite"),
           "limits": {"max_body_bytes": 4096, "unhealthy_cooldown_s": 0}}
    cfg.update(over)
    return Gateway(config_from_dict(cfg))


def _run(gw: Gateway, fn):
    async def main():
        await gw.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(gw)), base_url="http://gw") as c:
                return await fn(c)
        finally:
            await gw.close()

    return asyncio.run(main())


def _chat(model="routecraft/auto", content="hello", **kw) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **kw}


def test_bad_requests_get_openai_errors_never_500(tmp_path):
    async def chunked():
        yield b'{"model": "routecraft/auto", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    async def go(c):
        def post(**kw):
            return c.post("/v1/chat/completions", headers={"content-type": "application/json"}, **kw)

        cases = [
            (post(content=b"{not json"), 400, "could not parse the JSON body", None),
            (post(content=b""), 400, "body is empty", None),
            (post(content=b"[1, 2]"), 400, "must be an object", None),
            (post(content=b'{"model": "routecraft/auto", "max_cost": Infinity, "messages": []}'), 400,
             "Infinity is not a valid JSON number", None),
            (post(content=b"[" * 100_000 + b"]" * 100_000), 413, "over the limit", None),
            (post(content=b"[" * 2000 + b"]" * 2000), 400, "nested too deeply", None),
            (post(json={"messages": [{"role": "user", "content": "x"}]}), 400, "model: Field required", "model"),
            (post(json=_chat(max_tokens="ten")), 400, "max_tokens: Input should be a valid integer", "max_tokens"),
            (post(json=_chat(temperature=5)), 400, "temperature", "temperature"),
            (post(json={"model": "routecraft/auto", "messages": []}), 400, "at least 1 item", "messages"),
            (post(json={"model": "routecraft/auto", "messages": "hi"}), 400, "valid list", "messages"),
            (post(json={"model": "routecraft/auto", "messages": [{"role": "user", "content": 42}]}), 400,
             "messages[0].content: Input should be a valid string or Input should be a valid list",
             "messages[0].content"),
            (post(json={"model": "routecraft/auto", "messages": [{"role": "wizard", "content": "x"}]}), 400,
             "messages[0].role", "messages[0].role"),
            (post(json={"model": "routecraft/auto", "messages": [{"role": "user", "content": "  "}]}), 400,
             "at least one user message with non-empty text", "messages"),
            (post(json=_chat(n=3)), 400, "n: Input should be less than or equal to 1", "n"),
            (post(json=_chat(task="astrology")), 400, "unknown task 'astrology'", "task"),
            (post(json=_chat(routecraft={"lambda": -1})), 400, "routecraft.lambda", "routecraft.lambda"),
            (post(json=_chat(routecraft={"colour": 1})), 400, "routecraft.colour: Extra inputs", None),
            (post(json=_chat(max_tokens=100000)), 400, "over this gateway's limit", "max_tokens"),
            (post(json={"model": "routecraft/auto", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "http://x"}}]}]}), 400, "text only", None),
            (post(json=_chat(model="gpt-5")), 404, "The model 'gpt-5' does not exist", "model"),
            (post(json=_chat(model="base")), 404, "in the pool but not served", "model"),
            (post(json=_chat(model="routecraft/nope")), 404, "does not exist", "model"),
            (post(json=_chat(model="routecraft/auto:fastest")), 404, "unknown trade-off 'fastest'", "model"),
            (post(json=_chat(content="x" * 5000)), 413, "over the limit of 4096 bytes", None),
            (c.post("/v1/chat/completions", content=chunked()), 413, "over the limit", None),  # no Content-Length
            (c.get("/v1/chat/completions"), 405, "not allowed", None),
            (c.get("/v1/nothing"), 404, "no route", None),
        ]
        out = []
        for coro, status, msg, param in cases:
            r = await coro
            out.append((r, status, msg, param))
        return out

    for r, status, msg, param in _run(_gateway(tmp_path), go):
        assert r.status_code == status, (r.status_code, r.text)
        err = r.json()["error"]
        assert msg in err["message"], err
        assert set(err) >= {"message", "type", "param", "code"}
        if param is not None:
            assert err["param"] == param, err


def test_all_backends_down_is_502_with_every_reason_and_recorded(tmp_path):
    gw = _gateway(tmp_path)

    async def go(c):
        r1 = await c.post("/v1/chat/completions", json=_chat(), headers={"x-request-id": "client-1"})
        r2 = await c.post("/v1/chat/completions", json=_chat(stream=True))
        r3 = await c.post("/v1/chat/completions", json=_chat(model="small"))
        health = (await c.get("/health")).json()
        metrics = (await c.get("/metrics")).text
        return r1, r2, r3, health, metrics

    r1, r2, r3, health, metrics = _run(gw, go)
    for r in (r1, r2):
        assert r.status_code == 502
        err = r.json()["error"]
        assert err["code"] == "all_backends_failed"
        assert {f["model"] for f in err["failures"]} == {"small", "big"}  # each model tried once, then given up
        assert all("connection failed" in f["error"] for f in err["failures"])
    assert r3.status_code == 502 and [f["model"] for f in r3.json()["error"]["failures"]] == ["small"]  # bypass
    assert health["models"]["big"]["last_error"].startswith("model 'big'")
    assert 'routecraft_requests_total{model="big",requested="routecraft/auto",status="502"} 2.0' in metrics
    rows = read_rows(tmp_path / "u.sqlite")
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert rows[0]["client_request_id"] == "client-1" and rows[0]["http_status"] == 502
    assert json.loads(rows[0]["fallbacks"])[0]["model"] == "big"


def test_auth_rate_limit_budget_and_models(tmp_path):
    led = Ledger(tmp_path / "u.sqlite").open()
    led.record({"request_id": "old", "key": "poor", "status": "ok", "cost_usd": 1.0})  # spent before a restart
    led.close()
    keys = [{"name": "alice", "sha256": hash_key("ka"), "rpm": 3},
            {"name": "poor", "sha256": hash_key("kp"), "budget_usd": 0.5}]
    gw = _gateway(tmp_path, keys=keys, host="0.0.0.0")

    async def go(c):
        a = {"authorization": "Bearer ka"}
        out = {"none": await c.post("/v1/chat/completions", json=_chat()),
               "wrong": await c.post("/v1/chat/completions", json=_chat(), headers={"authorization": "Bearer x"}),
               "models_noauth": await c.get("/v1/models"),
               "models": await c.get("/v1/models", headers=a),
               "route1": await c.post("/v1/routecraft/route", json=_chat(content=MATH), headers=a),
               "route2": await c.post("/v1/routecraft/route", json=_chat(lam=1e9), headers=a),
               "capped": await c.post("/v1/routecraft/route", json=_chat(content=MATH, max_cost=1e-5), headers=a),
               "limited": await c.post("/v1/routecraft/route", json=_chat(), headers=a),
               "poor": await c.post("/v1/chat/completions", json=_chat(),
                                    headers={"authorization": "Bearer kp"}),
               "health": await c.get("/health", headers=a),
               "health_anon": await c.get("/health")}
        return out

    out = _run(gw, go)
    assert out["none"].status_code == 401 and out["none"].json()["error"]["code"] == "invalid_api_key"
    assert out["wrong"].status_code == 401 and "incorrect API key" in out["wrong"].json()["error"]["message"]
    assert out["models_noauth"].status_code == 401
    ids = [m["id"] for m in out["models"].json()["data"]]
    assert {"routecraft/auto", "routecraft/auto:cheap", "routecraft/heuristic", "small", "big"} <= set(ids)
    assert "base" not in ids  # base models are not served by default
    d1 = out["route1"].json()
    assert d1["decision"]["model"] == "big" and d1["task"] == "numeric" and d1["decision_ms"] > 0
    assert d1["order"][0] == d1["decision"]["candidate"] and len(d1["order"]) == 6
    assert out["route2"].json()["decision"]["model"] == "small"
    capped = out["capped"].json()
    assert capped["max_cost"] == 1e-5 and capped["decision"]["predicted_cost"] <= 1e-5
    assert capped["decision"]["model"] == "small" and capped["decision"]["strategy"] in ("cot", "pal")
    assert capped["order"][-1].startswith("big")  # over the cap: tried last
    assert out["limited"].status_code == 429 and out["limited"].json()["error"]["code"] == "rate_limit_exceeded"
    assert "3 requests per minute" in out["limited"].json()["error"]["message"]
    assert "retry-after" in out["limited"].headers
    assert out["poor"].status_code == 429 and out["poor"].json()["error"]["code"] == "insufficient_quota"
    assert out["health"].json()["auth"] == "keys"
    # without a key /health shows states only: no URLs, processes, errors or load
    anon = out["health_anon"].json()
    assert out["health_anon"].status_code == 200 and anon["status"] == "ok" and "auth" not in anon
    assert set(anon["models"]["big"]) == {"healthy"} and "url" in out["health"].json()["models"]["big"]


def test_trained_router_artifact_skips_candidates_outside_the_pool(tmp_path):
    from routecraft.data.schema import RoutingData
    from routecraft.routers import make_router

    qs = pd.DataFrame({"query_id": ["q1", "q2"], "text": ["a", "b"], "task": ["gsm8k"] * 2, "gold": ["1", "2"]})
    cands = [("big", "cot", None), ("small", "default", None), ("gpt-4o", "default", None)]
    rows = [{"query_id": q, "model": m, "strategy": s, "budget": b, "score": sc, "cost_usd": co}
            for q in ("q1", "q2") for (m, s, b), sc, co in zip(cands, (0.6, 0.3, 0.9), (1e-5, 1e-6, 1e-3))]
    rd = RoutingData.from_frames(qs, pd.DataFrame(rows))
    make_router("best-single").fit(rd).save(tmp_path / "best")  # best = gpt-4o, not in the pool
    gw = _gateway(tmp_path, routers={"auto": str(tmp_path / "best")})

    async def go(c):
        return await c.post("/v1/routecraft/route", json=_chat())

    d = _run(gw, go).json()
    assert d["decision"]["model"] == "big" and d["decision"]["strategy"] == "cot"
    assert all(not o.startswith("gpt-4o") for o in d["order"])
    assert gw.routers["auto"].skipped == ["gpt-4o"]

    only_foreign = RoutingData.from_frames(qs, pd.DataFrame([r for r in rows if r["model"] == "gpt-4o"]))
    make_router("best-single").fit(only_foreign).save(tmp_path / "foreign")
    with pytest.raises(ServeConfigError, match="none of its candidates' models is served.*gpt-4o"):
        asyncio.run(_gateway(tmp_path, routers={"auto": str(tmp_path / "foreign")}).start())
    with pytest.raises(ServeConfigError, match="cannot load"):
        asyncio.run(_gateway(tmp_path, routers={"auto": str(tmp_path / "nothing")}).start())
    # an old pickled artifact (format 1) is refused, unread, with the command that converts it
    import json
    import pickle

    old = tmp_path / "old"
    old.mkdir()
    (old / "router.json").write_text(json.dumps({"router": "best-single", "format_version": 1, "params": {},
                                                 "candidates": ["big|cot|default"], "encoder": None}))
    marker = tmp_path / "PWNED"
    (old / "state.joblib").write_bytes(pickle.dumps({"x": _OpensFile(str(marker))}))
    with pytest.raises(ServeConfigError, match=r"cannot load: .*format-1 .*routecraft artifact convert .* --trust"):
        asyncio.run(_gateway(tmp_path, routers={"auto": str(old)}).start())
    assert not marker.exists()


class _OpensFile:
    """Unpickled, creates the file: code an artifact would run if it were unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_queue_full_is_429(tmp_path):
    gw = _gateway(tmp_path, limits={"max_concurrency": 1, "max_queue": 0, "queue_timeout_s": 0.5})

    async def go(c):
        await gw.slots.acquire()  # the one execution slot is busy
        try:
            return await c.post("/v1/chat/completions", json=_chat())
        finally:
            gw.slots.release()

    r = _run(gw, go)
    assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"


def test_serve_command_reports_config_errors_without_traceback(tmp_path):
    from routecraft.serve.cli import serve_app

    r = CliRunner().invoke(serve_app, ["serve", "--port", "99999"])
    assert r.exit_code == 2 and "field 'port'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(serve_app, ["serve", "--config", str(tmp_path / "none.yaml")])
    assert r.exit_code == 2 and "cannot read gateway config" in r.output
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("pool: {name: t, models: [{name: a, endpoint: 'http://127.0.0.1:9/v1', price_in_per_m: 0,"
                   " price_out_per_m: 0, description: d}]}\nrouters: {auto: no-such-artifact}\n"
                   f"ledger: {tmp_path / 'u.sqlite'}\nport: 0\n")
    r = CliRunner().invoke(serve_app, ["serve", "--config", str(cfg)])
    assert r.exit_code == 2 and "router 'auto'" in r.output and "cannot load" in r.output


def test_builtin_is_the_shipped_learned_router_only_where_it_was_selected(tmp_path, caplog):
    """``routers.auto`` defaults to ``builtin``: the learned router shipped with routecraft when its selection file
    says it beat the heuristic on held-out questions and its models are served, else the heuristic — and
    ``routecraft/heuristic`` is offered either way."""
    import json

    import pandas as pd

    from routecraft.data.schema import RoutingData
    from routecraft.routers import make_router

    assert config_from_dict({"pool": "local"}).routers["auto"] == "builtin"
    shipped = tmp_path / "default_router"
    qs = pd.DataFrame({"query_id": ["q1", "q2"], "text": ["a", "b"], "task": ["gsm8k"] * 2, "gold": ["1", "2"]})
    rows = [{"query_id": q, "model": m, "strategy": "default", "score": 0.5, "cost_usd": 1e-5}
            for q in ("q1", "q2") for m in ("small", "big")]
    make_router("fixed", candidate="big|default|default").fit(
        RoutingData.from_frames(qs, pd.DataFrame(rows))).save(shipped)

    def kinds(**over) -> dict:
        gw = _gateway(tmp_path, **over)
        gw.builtin_dir = shipped
        return _run(gw, lambda c: asyncio.sleep(0, {n: e.kind for n, e in gw.routers.items()}))

    assert kinds()["auto"] == "heuristic"  # no selection file: not selected
    rule = "among the learned routers ... " * 20  # a paragraph, as the selection benchmark writes it
    (shipped / "selection.json").write_text(json.dumps({
        "selected": False, "router": "kind", "rule": rule, "margin_vs_heuristics": {
            "heuristic": {"quality": {"diff": 0.05}, "cheap": {"diff": 0.16}},
            "heuristic (collected strategies)": {"quality": {"diff": 0.05}, "cheap": {"diff": -0.029}}}}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="routecraft.serve"):
        assert kinds()["auto"] == "heuristic"
    # the start-up log at the default level says what routecraft/auto is and why, in one line: where the router
    # lost, and the file that holds the rule (not the rule's paragraph)
    line = next(r.getMessage() for r in caplog.records if "router auto:" in r.getMessage())
    assert line.startswith("router auto: the heuristic"), line
    assert "kind" in line and "heuristic (collected strategies) at cheap (-0.029 utility)" in line, line
    assert "at quality" not in line and rule not in line and str(shipped / "selection.json") in line, line
    (shipped / "selection.json").write_text(json.dumps({"selected": True, "rule": "beat the heuristic"}))
    got = kinds()
    assert got["auto"] == "fixed" and got["heuristic"] == "heuristic"
    assert kinds(models=["small"])["auto"] == "heuristic"  # one of its models, big, is not served
    # a shipped router whose query encoder cannot load here (say the `static` extra is missing): the heuristic
    # serves routecraft/auto, with a warning, instead of the gateway refusing to start
    lin = make_router("linear")
    lin.fit(RoutingData.from_frames(qs, pd.DataFrame(rows)), np.eye(2))
    lin.encoder = f"static:{tmp_path / 'no-such-encoder'}"
    shutil.rmtree(shipped)
    lin.save(shipped)
    (shipped / "selection.json").write_text(json.dumps({"selected": True, "rule": "beat the heuristic"}))
    got = kinds()
    assert got["auto"] == "heuristic" and got["heuristic"] == "heuristic"
    # named explicitly, the same artifact is a start-up error naming the encoder
    gw = _gateway(tmp_path, routers={"auto": str(shipped)})
    with pytest.raises(ServeConfigError, match=r"query encoder .*no-such-encoder.* cannot load"):
        asyncio.run(gw.start())


def test_a_kind_router_artifact_routes_by_the_detected_kind(tmp_path):
    """The learned ``kind`` router, served from its artifact: the kind it detects in the request's text picks the
    candidate (here ``small`` is right on multiple choice, ``big`` on arithmetic)."""
    from routecraft.data.schema import RoutingData
    from routecraft.routers import make_router

    # the options are kept apart, as a collection stores them: without them the two mmlu rows read as plain
    # questions, like the two trivia rows, on which big is right (and a kind never seen would predict big too)
    qs = pd.DataFrame({"query_id": ["c1", "c2", "n1", "n2", "t1", "t2"],
                       "text": ["Which is a mammal?", "Which is a metal?",
                                "Ann has 3 pens and buys 4 more. How many in total?",
                                "A box holds 12 eggs. How many eggs are in 5 boxes?",
                                "who wrote hamlet", "capital city of peru"],
                       "task": ["mmlu", "mmlu", "gsm8k", "gsm8k", "trivia_qa", "trivia_qa"],
                       "choices": [["shark", "whale"], ["iron", "wood"], None, None, None, None]})
    rows = [{"query_id": q, "model": m, "strategy": "direct", "score": float((q[0] == "c") == (m == "small")),
             "cost_usd": 1e-6 if m == "small" else 1e-5} for q in qs["query_id"] for m in ("small", "big")]
    make_router("kind", prior=0).fit(RoutingData.from_frames(qs, pd.DataFrame(rows))).save(tmp_path / "kind")
    gw = _gateway(tmp_path, routers={"auto": str(tmp_path / "kind")})

    async def go(c):
        return [await c.post("/v1/routecraft/route", json=_chat(content=text)) for text in (
            "Which gas do plants take in?\n(A) Oxygen\n(B) Carbon dioxide", MATH)]

    choice, numeric = (r.json() for r in _run(gw, go))
    assert choice["decision"]["model"] == "small" and numeric["decision"]["model"] == "big"
    assert gw.routers["auto"].kind == "kind"


def test_the_shipped_learned_default_leaves_open_requests_to_the_heuristic(tmp_path):
    """The learned default's cells all ask for an answer format ("a short answer", a letter, a number): an open
    request (no task named, none detected) would be told to give "a short answer", so routecraft/auto routes it
    with the heuristic's plain call; a multiple-choice request gets the learned router. A router named in the
    config routes everything itself."""
    import json

    from routecraft.data.schema import RoutingData
    from routecraft.routers import make_router

    qs = pd.DataFrame({"query_id": ["c1", "c2", "t1", "t2"],
                       "text": ["Which is a mammal?", "Which is a metal?", "who wrote hamlet", "capital of peru"],
                       "task": ["mmlu", "mmlu", "trivia_qa", "trivia_qa"],
                       "choices": [["shark", "whale"], ["iron", "wood"], None, None]})
    rows = [{"query_id": q, "model": m, "strategy": "direct", "score": float(m == "small"),
             "cost_usd": 1e-6 if m == "small" else 1e-5} for q in qs["query_id"] for m in ("small", "big")]
    shipped = tmp_path / "default_router"
    make_router("kind", prior=0).fit(RoutingData.from_frames(qs, pd.DataFrame(rows))).save(shipped)
    (shipped / "selection.json").write_text(json.dumps({"selected": True, "rule": "beat the heuristic"}))

    def route(**over):
        gw = _gateway(tmp_path, **over)
        gw.builtin_dir = shipped

        async def go(c):
            return [(await c.post("/v1/routecraft/route", json=_chat(content=text, **kw))).json() for text, kw in (
                ("Write me a short poem about the sea.", {}),
                ("Which gas do plants take in?\n(A) Oxygen\n(B) Carbon dioxide", {}),
                ("Write me a short poem about the sea.", {"task": "trivia_qa"}))]

        return gw, _run(gw, go)

    gw, (open_, choice, named) = route()
    assert gw.routers["auto"].kind == "kind" and gw.routers["auto"].open_requests == "heuristic"
    assert open_["decision"]["strategy"] == "default" and open_["router"] == "heuristic"
    assert choice["decision"] == {**choice["decision"], "model": "small", "strategy": "direct"}
    assert choice["router"] == "kind"
    assert named["router"] == "kind" and named["decision"]["strategy"] == "direct"  # a task named: learned
    routes = {s.labels["router"] for s in gw.metrics.decisions.collect()[0].samples}
    assert routes == {"auto"}  # counted under the route asked for, as the request log names it
    gw, (open_, _, _) = route(routers={"auto": str(shipped)})  # named in the config: it routes open requests too
    assert gw.routers["auto"].open_requests is None and open_["router"] == "kind"


def test_the_shipped_default_warns_when_open_requests_cannot_get_a_plain_call(tmp_path, caplog):
    """A config without a heuristic route, or whose heuristic has no plain call, leaves open requests to a router
    that prompts for an answer format: the start-up log says so (the config is valid, so not an error)."""
    import json
    import logging

    from routecraft.data.schema import RoutingData
    from routecraft.routers import make_router

    qs = pd.DataFrame({"query_id": ["c1", "t1"], "text": ["Which is a mammal?", "who wrote hamlet"],
                       "task": ["mmlu", "trivia_qa"], "choices": [["shark", "whale"], None]})
    rows = [{"query_id": q, "model": m, "strategy": "direct", "score": 1.0, "cost_usd": 1e-6}
            for q in qs["query_id"] for m in ("small", "big")]
    shipped = tmp_path / "default_router"
    make_router("kind").fit(RoutingData.from_frames(qs, pd.DataFrame(rows))).save(shipped)
    (shipped / "selection.json").write_text(json.dumps({"selected": True, "rule": "beat the heuristic"}))
    for over, says in (({"heuristic": {"strategies": ["cot", "pal"]}}, "no plain call"),
                       ({"routers": {"auto": "builtin", "heuristic": str(shipped)}}, "no route serves the heuristic")):
        caplog.clear()
        gw = _gateway(tmp_path, **over)
        gw.builtin_dir = shipped
        with caplog.at_level(logging.WARNING, logger="routecraft"):
            _run(gw, lambda c: c.get("/health"))
        assert any(says in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
