"""Observe-then-decide plans executed by the gateway, against `routecraft serve` (a subprocess) with two real
llama.cpp SmolLM2 backends: the session's server as "smollm2-135m" and a private second one as "smollm2-b" (priced as
a dearer model), the last test kills it.

A ``cascade`` artifact is trained on a small hand-made outcomes table over three candidates — A = smollm2-135m with
plain chat, B = smollm2-b with ``direct``, C = smollm2-135m with ``direct`` — where A and B agree (and are right) on
half of the queries and give two different wrong answers on the other half, on which only C is right. The plan it
picks at λ = 0 is then "consult A and B, accept when both agree, else C": the cheapest plan with the best score. A
plain chat answer (a sentence) and a ``direct`` answer (the extracted short answer) never have the same vote key, so
online the two consultations disagree and the plan escalates to C, deterministically.
"""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pandas as pd
import pytest
from gateway_proc import PRICE, start_gateway, stop_gateway

from routecraft.serve.ledger import read_rows

pytestmark = pytest.mark.slow

A = ("smollm2-135m", "default")
B = ("smollm2-b", "direct")
C = ("smollm2-135m", "direct")
B_PRICE = {"price_in_per_m": 0.03, "price_out_per_m": 0.25}
QUESTION = [{"role": "user", "content": "What colour is the sky on a clear day?"}]


def cascade_artifact(path):
    from routecraft.data.schema import RoutingData
    from routecraft.routers import make_router

    cost = {A: 1e-6, B: 2e-6, C: 1e-4}
    n = 8
    qs = pd.DataFrame({"query_id": [f"q{i}" for i in range(n)], "text": [f"question {i}" for i in range(n)],
                       "task": ["qa"] * n, "gold": [f"g{i}" for i in range(n)]})
    rows = []
    for i in range(n):
        for cand in (A, B, C):
            right = cand == C or i % 2 == 0
            rows.append({"query_id": f"q{i}", "model": cand[0], "strategy": cand[1], "score": float(right),
                         "cost_usd": cost[cand], "prediction": f"g{i}" if right else f"wrong-{cand[0]}-{cand[1]}",
                         "input_tokens": 10, "output_tokens": 5})
    r = make_router("cascade").fit(RoutingData.from_frames(qs, pd.DataFrame(rows)))
    plan = r.decide_one("any question", lam=0.0).plan
    assert plan["stages"] == [{"consult": ["smollm2-135m", "smollm2-b|direct|default"], "min_agree": 2}]
    assert plan["final"] == "smollm2-135m|direct|default"
    return r.save(path)


@pytest.fixture(scope="module")
def second_server(smollm_path):
    from routecraft.pool.config import PoolModel
    from routecraft.pool.server import serve_local

    pm = PoolModel(name="smollm2-b", local="smollm2-135m", description="second SmolLM2 server", size_b=1.7,
                   **B_PRICE)
    with serve_local(pm, ctx=2048, parallel=2, threads=1, install_missing=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def gw(tmp_path_factory, smollm_server, second_server):
    d = tmp_path_factory.mktemp("consult")
    base = {"description": "SmolLM2", "size_b": 0.135, "context": 2048}
    cfg = {
        "port": 0,
        "pool": {"name": "consult", "models": [
            {"name": "smollm2-135m", "endpoint": smollm_server.base_url, "model_id": smollm_server.model_id,
             **base, **PRICE},
            {"name": "smollm2-b", "endpoint": second_server.base_url, "model_id": second_server.model_id,
             **base, **B_PRICE}]},
        "routers": {"cascade": str(cascade_artifact(d / "cascade"))},
        "limits": {"unhealthy_cooldown_s": 60},
        "ledger": str(d / "usage.sqlite"),
        "default_temperature": 0.0,
    }
    proc, root = start_gateway(d, cfg)
    yield {"root": root, "ledger": d / "usage.sqlite", "server_b": second_server}
    stop_gateway(proc)


def chat(gw, rid: str, **kw) -> httpx.Response:
    body = {"model": "routecraft/cascade", "messages": QUESTION, "max_tokens": 24, "task": "qa", **kw}
    return httpx.post(gw["root"] + "/v1/chat/completions", json=body, headers={"x-request-id": rid}, timeout=180)


def price(model: str, tin: int, tout: int) -> float:
    p = B_PRICE if model == "smollm2-b" else PRICE
    return (tin * p["price_in_per_m"] + tout * p["price_out_per_m"]) / 1e6


def the_row(gw, rid: str) -> dict:
    rows = read_rows(gw["ledger"], "client_request_id = ?", (rid,))
    assert len(rows) == 1
    return rows[0]


def test_a_cascade_plan_consults_two_candidates_escalates_and_bills_every_call(gw):
    r = chat(gw, "cascade-1")
    assert r.status_code == 200, r.text
    body = r.json()
    rc = body["routecraft"]
    cons = rc["consultations"]
    # two consultations in the first stage (they disagree), then the escalation to the final candidate
    assert [(c["candidate"], c["stage"]) for c in cons] == [
        ("smollm2-135m", 0), ("smollm2-b|direct|default", 0), ("smollm2-135m|direct|default", 1)]
    assert all(c["error"] is None and c["output_tokens"] > 0 and c["latency_ms"] > 0 for c in cons)
    assert cons[0]["answer"] != cons[1]["answer"]
    assert rc["escalated"] is True and rc["answered_by"] == "smollm2-135m|direct|default"
    assert rc["plan"]["kind"] == "cascade" and "accept ≥2 agree" in rc["plan"]["plan"]
    assert (rc["model"], rc["strategy"]) == C and body["model"] == "smollm2-135m"
    assert body["choices"][0]["message"]["content"] == cons[2]["answer"]  # the final candidate's answer
    for c in cons:  # each call priced at its own model's prices
        assert c["cost_usd"] == pytest.approx(price(c["model"], c["input_tokens"], c["output_tokens"]))
    tin, tout = sum(c["input_tokens"] for c in cons), sum(c["output_tokens"] for c in cons)
    cost = sum(c["cost_usd"] for c in cons)
    assert body["usage"] == {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}
    assert rc["cost_usd"] == pytest.approx(cost) and float(r.headers["x-routecraft-cost"]) == pytest.approx(cost,
                                                                                                          rel=1e-5)
    assert r.headers["x-routecraft-consultations"] == "3" and r.headers["x-routecraft-fallbacks"] == "0"
    row = the_row(gw, "cascade-1")
    assert row["status"] == "ok" and row["attempts"] == 3
    assert (row["model"], row["strategy"]) == C
    assert row["cost_usd"] == pytest.approx(cost) and (row["input_tokens"], row["output_tokens"]) == (tin, tout)
    # streamed: the accepted answer as one content chunk once decided, the consultations on the last chunk
    with httpx.stream("POST", gw["root"] + "/v1/chat/completions", timeout=180, headers={"x-request-id": "cascade-2"},
                      json={"model": "routecraft/cascade", "messages": QUESTION, "max_tokens": 24, "task": "qa",
                            "stream": True}) as s:
        assert s.headers["x-routecraft-consultations"] == "3"
        events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert [x for x in contents if x] == [body["choices"][0]["message"]["content"]]  # greedy: the same answer
    assert len(chunks[-1]["routecraft"]["consultations"]) == 3
    srow = the_row(gw, "cascade-2")
    assert srow["stream"] == 1 and srow["attempts"] == 3
    assert srow["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in chunks[-1]["routecraft"]["consultations"]))
    m = httpx.get(gw["root"] + "/metrics").text
    assert 'routecraft_cost_usd_total{model="smollm2-b"}' in m  # B's call is counted under B's model


def test_open_chat_uses_the_upfront_decision_and_says_so(gw):
    """No task named and none recognised (free text: its answers could never agree): the plan of consultations is
    not run; the router's up-front decision answers (one call, billed) and the response says which and why."""
    body = {"model": "routecraft/cascade", "messages": QUESTION, "max_tokens": 24}  # no "task": auto-detected "qa"
    r = httpx.post(gw["root"] + "/v1/chat/completions", json=body, headers={"x-request-id": "open-1"}, timeout=180)
    assert r.status_code == 200, r.text
    rc = r.json()["routecraft"]
    assert rc["consultations"] == [] and rc["escalated"] is False
    assert rc["plan"]["kind"] == "upfront" and rc["plan"]["instead_of"] == "cascade"
    assert "open chat" in rc["plan"]["how"] and "up-front decision" in rc["plan"]["how"]
    # the best single candidate of the training table (C: right on every training query)
    assert (rc["model"], rc["strategy"]) == C and rc["decided"] == "smollm2-135m|direct|default"
    assert r.headers["x-routecraft-consultations"] == "0" and r.headers["x-routecraft-plan"].startswith("upfront")
    row = the_row(gw, "open-1")
    assert row["status"] == "ok" and row["attempts"] == 1 and rc["cost_usd"] > 0
    assert row["cost_usd"] == pytest.approx(rc["cost_usd"])


def test_a_consulted_backend_killed_is_an_observation_not_a_lost_request(gw):
    b = gw["server_b"]
    os.kill(b.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until its port refuses connections
        try:
            httpx.get(b.base_url.removesuffix("/v1") + "/health", timeout=1)
        except httpx.TransportError:
            break
        time.sleep(0.1)
    r = chat(gw, "cascade-kill")
    assert r.status_code == 200, r.text
    rc = r.json()["routecraft"]
    cons = rc["consultations"]
    assert [c["candidate"] for c in cons] == ["smollm2-135m", "smollm2-b|direct|default",
                                              "smollm2-135m|direct|default"]
    dead = cons[1]
    assert dead["error"] and "smollm2-b" in dead["error"]
    assert (dead["input_tokens"], dead["output_tokens"], dead["cost_usd"], dead["answer"]) == (0, 0, 0.0, None)
    # one answer observed is no agreement: the plan goes on to the final candidate, which answers
    assert rc["escalated"] is True and rc["answered_by"] == "smollm2-135m|direct|default"
    assert r.json()["choices"][0]["message"]["content"]
    assert r.headers["x-routecraft-consultations"] == "3" and r.headers["x-routecraft-fallbacks"] == "1"
    assert rc["fallbacks"][0]["model"] == "smollm2-b" and rc["fallbacks"][0]["kind"] == "backend"
    cost = cons[0]["cost_usd"] + cons[2]["cost_usd"]
    assert cost > 0 and rc["cost_usd"] == pytest.approx(cost)
    row = the_row(gw, "cascade-kill")
    assert row["status"] == "ok" and row["attempts"] == 3 and row["cost_usd"] == pytest.approx(cost)
    assert row["input_tokens"] == cons[0]["input_tokens"] + cons[2]["input_tokens"]
    assert row["output_tokens"] == cons[0]["output_tokens"] + cons[2]["output_tokens"]
    health = httpx.get(gw["root"] + "/health").json()
    assert health["models"]["smollm2-b"]["healthy"] is False
