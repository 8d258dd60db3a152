"""Several gateways, one ledger: two `routecraft serve` replicas (subprocesses) on one real PostgreSQL ledger
(tests/pg_fixture.py starts the server) and a real SmolLM2 backend. A key's budget spent through one replica is
refused by the other, and every request of both is in the one ledger."""

from __future__ import annotations

import time

import httpx
import pytest
from gateway_proc import PRICE, STORY, start_gateway, stop_gateway

import pg_fixture
from routecraft.serve.config import hash_key
from routecraft.serve.ledger import read_rows

pytestmark = pytest.mark.slow
postgres_server, pg_url = pg_fixture.postgres_server, pg_fixture.pg_url  # the fixtures

KEY = "erin-secret"


def test_two_replicas_share_one_postgres_ledger_and_its_budgets(tmp_path, smollm_server, pg_url):
    model = {"name": "small", "endpoint": smollm_server.base_url, "model_id": smollm_server.model_id,
             "description": "SmolLM2", "size_b": 0.135, "context": 2048, **PRICE}
    cfg = {"port": 0, "pool": {"name": "replicas", "models": [model]}, "ledger": pg_url,
           "keys": [{"name": "erin", "sha256": hash_key(KEY), "budget_usd": 5e-7}], "default_temperature": 0.0}
    procs, roots = [], []
    try:
        for i in range(2):
            d = tmp_path / f"replica{i}"
            d.mkdir()
            p, root = start_gateway(d, cfg)
            procs.append(p)
            roots.append(root)
        auth = {"authorization": f"Bearer {KEY}"}
        ask = {"model": "small", "messages": STORY, "max_tokens": 48}
        r = httpx.post(roots[0] + "/v1/chat/completions", json=ask, headers={**auth, "x-request-id": "rep-a"},
                       timeout=60)
        assert r.status_code == 200
        cost = r.json()["routecraft"]["cost_usd"]
        assert cost > 5e-7  # the budget is used up by this one request, made through replica A
        time.sleep(1.0)  # replica B re-reads the shared spend at most every 0.5 s
        r = httpx.post(roots[1] + "/v1/chat/completions", json=ask, headers={**auth, "x-request-id": "rep-b"},
                       timeout=60)
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota", r.text
        rows = read_rows(pg_url)
        assert [row["client_request_id"] for row in rows] == ["rep-a"]
        assert rows[0]["key"] == "erin" and rows[0]["cost_usd"] == pytest.approx(cost)
    finally:
        for p in procs:
            stop_gateway(p)
