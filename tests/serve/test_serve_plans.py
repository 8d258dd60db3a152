"""Plans of consultations in the gateway, in-process, against the stub backend (benchmarks/openai_stub.py: every
call answers "Paris."; a model id ``status-500`` fails): agreement accepted after the first stage, a failing
consultation as an observation, billing summed over the calls, the stream as one content chunk. The real-model
tests (disagreement, escalation, a killed backend) are in test_serve_consult.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

from _benchmarks import load_benchmark
from routecraft.serve.app import create_app
from routecraft.serve.config import config_from_dict
from routecraft.serve.gateway import Gateway
from routecraft.serve.ledger import read_rows

A, B, C = ("small", "default"), ("cheap", "direct"), ("big", "default")


@pytest.fixture(scope="module")
def stub():
    stub, thread, loop = load_benchmark("openai_stub").start_stub()
    yield stub
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _cascade(path: Path) -> Path:
    from routecraft.data.schema import RoutingData
    from routecraft.routers import make_router

    cost = {A: 1e-6, B: 2e-6, C: 1e-4}
    qs = pd.DataFrame({"query_id": [f"q{i}" for i in range(8)], "text": [f"q {i}" for i in range(8)],
                       "task": ["qa"] * 8, "gold": ["x"] * 8})
    rows = [{"query_id": f"q{i}", "model": m, "strategy": s, "score": float(right), "cost_usd": cost[(m, s)],
             "prediction": f"g{i}" if right else f"wrong-{m}"}
            for i in range(8) for (m, s) in (A, B, C) for right in [(m, s) == C or i % 2 == 0]]
    return make_router("cascade").fit(RoutingData.from_frames(qs, pd.DataFrame(rows))).save(path)


def _run(tmp_path, stub, calls, cheap_id="stub"):
    models = [{"name": n, "endpoint": stub.base_url, "model_id": mid, "price_in_per_m": pi, "price_out_per_m": po,
               "description": n, "context": 2048}
              for n, mid, pi, po in (("small", "stub", 0.01, 0.02), ("cheap", cheap_id, 0.03, 0.04),
                                     ("big", "stub", 1.0, 2.0))]
    cfg = config_from_dict({"pool": {"name": "t", "models": models}, "ledger": str(tmp_path / "u.sqlite"),
                            "routers": {"cascade": str(_cascade(tmp_path / "cascade"))},
                            "limits": {"unhealthy_cooldown_s": 0}})
    gw = Gateway(cfg)

    async def main():
        await gw.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(gw)),
                                         base_url="http://gw") as c:
                out = [await c.post("/v1/chat/completions", json={
                    "model": "routecraft/cascade", "messages": [{"role": "user", "content": "Capital of France?"}],
                    "task": "qa", **kw}) for kw in calls]
                return out, (await c.get("/metrics")).text
        finally:
            await gw.close()

    res, metrics = asyncio.run(main())
    return res, metrics, read_rows(tmp_path / "u.sqlite")


def test_agreement_is_accepted_after_the_first_stage_and_every_call_is_billed(tmp_path, stub):
    (r, s), metrics, rows = _run(tmp_path, stub, [{}, {"stream": True}])
    assert r.status_code == 200 and r.headers["x-routecraft-consultations"] == "2"
    body = r.json()
    rc = body["routecraft"]
    assert [c["candidate"] for c in rc["consultations"]] == ["small", "cheap|direct|default"]
    assert rc["escalated"] is False and rc["plan"]["how"] == "stage 1: 2 agree"
    assert body["choices"][0]["message"]["content"] == "Paris"  # the answer both gave (extracted)
    cost = sum(c["cost_usd"] for c in rc["consultations"])
    tin = sum(c["input_tokens"] for c in rc["consultations"])
    assert cost > 0 and rc["cost_usd"] == pytest.approx(cost) and body["usage"]["prompt_tokens"] == tin
    assert rows[0]["cost_usd"] == pytest.approx(cost) and rows[0]["attempts"] == 2 and rows[0]["input_tokens"] == tin
    for model in ("small", "cheap"):  # each call's cost under its own model
        assert f'routecraft_cost_usd_total{{model="{model}"}}' in metrics
    events = [json.loads(x[6:]) for x in s.text.split("\n\n") if x.startswith("data: {")]
    assert [e["choices"][0]["delta"]["content"] for e in events if e["choices"] and e["choices"][0]["delta"].get(
        "content")] == ["Paris"]
    assert s.headers["x-routecraft-consultations"] == "2" and rows[1]["stream"] == 1
    assert rows[1]["cost_usd"] == pytest.approx(cost)


def test_a_failing_consultation_is_an_observation_and_the_plan_escalates(tmp_path, stub):
    (r,), _, rows = _run(tmp_path, stub, [{}], cheap_id="status-500")
    assert r.status_code == 200, r.text
    rc = r.json()["routecraft"]
    cons = rc["consultations"]
    assert [c["candidate"] for c in cons] == ["small", "cheap|direct|default", "big"]
    assert cons[1]["error"] and cons[1]["cost_usd"] == 0.0 and rc["escalated"] is True and rc["answered_by"] == "big"
    assert r.headers["x-routecraft-fallbacks"] == "1" and rc["fallbacks"][0]["model"] == "cheap"
    assert rows[0]["status"] == "ok" and rows[0]["cost_usd"] == pytest.approx(cons[0]["cost_usd"] + cons[2]["cost_usd"])
