"""The dashboard without a browser: its numbers (``ledger.usage_stats``) against a direct computation over the
ledger's rows on both backends (SQLite and a real PostgreSQL server), that every one of its queries is served by an
index, the session cookie, and the access rules against `routecraft serve` with keys and a real SmolLM2 backend
(login, cookie attributes, no key secret in any page or in the gateway's log, ``?key=`` refused, cross-site login
refused). The page in a real browser: test_dashboard_browser.py."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import httpx
import pytest
from gateway_proc import PRICE, launch_gateway, stop_gateway

import pg_fixture
from routecraft.serve.auth import KeyStore
from routecraft.serve.config import KeySpec, hash_key
from routecraft.serve.dashboard import check_session, make_session, strongest_model
from routecraft.serve.ledger import BYPASS, INDEXES, LedgerReader, Prices, open_ledger, read_rows, usage_stats

postgres_server, pg_url = pg_fixture.postgres_server, pg_fixture.pg_url  # the fixtures

NOW = 1_796_000_000.0
CF = Prices("m3", 0.5, 2.5)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'usage.sqlite'}"
    return request.getfixturevalue("pg_url")


def random_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows covering what the gateway writes, NULLs included: bypass rows (no trade-off, no decision time), budgets,
    every status, missing tokens and latencies, fallbacks of one and two candidates, candidate tables."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        router = rng.choice(["auto", "auto", "rtr", BYPASS])
        status = rng.choices(["ok", "failed", "cancelled", "refused"], weights=[8, 1, 1, 1])[0]
        fb = [{"candidate": f"m{k}", "model": f"m{k}", "error": "boom", "kind": rng.choice(["backend", "context"])}
              for k in rng.sample([1, 2, 3], rng.choice([0, 0, 0, 1, 2]))]
        rows.append({
            "request_id": f"r{i:05d}", "ts": NOW - rng.uniform(0, 10 * 86400), "key": rng.choice(["a", "b", "c"]),
            "client_request_id": f"c{i}", "requested_model": "x", "router": router,
            "tradeoff": None if router == BYPASS else rng.choice(["quality", "cheap"]),
            "lam": None if router == BYPASS else 1.0, "model": rng.choice(["m1", "m2", "m3", None]),
            "strategy": rng.choice(["default", "cot"]), "budget": rng.choice([None, None, 256]),
            "input_tokens": rng.choice([None, rng.randint(0, 500)]), "output_tokens": rng.randint(0, 300),
            "cost_usd": rng.choice([None, rng.uniform(0, 1e-4)]),
            "latency_s": rng.choice([None, rng.uniform(0.01, 5)]),
            "decision_ms": None if router == BYPASS or rng.random() < 0.1 else rng.uniform(0.05, 3),
            "status": status, "http_status": 200, "fallbacks": fb, "attempts": 1 + len(fb),
            "candidates": None if router == BYPASS else [["m1", 0.5, 1e-5], ["m2|cot|default", 0.7, 3e-5]]})
    return rows


def pct(values: list[float], q: float):
    """The nearest-rank quantile, written out again: sorted, index round(q·(n − 1))."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))]


def direct(rows: list[dict], since, last: int, failures: int) -> dict:
    rs = [r for r in rows if since is None or r["ts"] >= since]
    c = lambda r: r["cost_usd"] or 0.0  # noqa: E731
    i = lambda r: r["input_tokens"] or 0  # noqa: E731

    def group(key, subset=None):
        out = {}
        for r in (rs if subset is None else subset):
            k = key(r)
            d = out.setdefault(k, {"requests": 0, "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0,
                                   "ok": 0, "failed": 0, "cancelled": 0, "refused": 0})
            d["requests"] += 1
            d["cost_usd"] += c(r)
            d["input_tokens"] += i(r)
            d["output_tokens"] += r["output_tokens"] or 0
            d[r["status"]] += 1
        return out

    routed = [r for r in rs if r["router"] != BYPASS]
    fb_router = Counter()
    fb_n = Counter()
    fb_model = Counter()
    for r in rs:
        if r["fallbacks"]:
            fb_router[(r["router"], r["tradeoff"])] += 1
            fb_n[(r["router"], r["tradeoff"])] += len(r["fallbacks"])
            for f in r["fallbacks"]:
                fb_model[(f["model"], f["kind"])] += 1
    newest = sorted(rs, key=lambda r: -r["ts"])
    lat = [r["latency_s"] for r in rs if r["status"] == "ok" and r["latency_s"] is not None]
    dec = [r["decision_ms"] for r in routed if r["decision_ms"] is not None]
    key_all = Counter()
    for r in rows:
        key_all[r["key"]] += c(r)
    return {
        "totals": group(lambda r: ())[()] if rs else None,
        "by_router": group(lambda r: (r["router"], r["tradeoff"])),
        "by_candidate": group(lambda r: (r["model"], r["strategy"], r["budget"]), routed),
        "by_model": group(lambda r: r["model"]), "by_key": group(lambda r: r["key"]),
        "by_status": group(lambda r: r["status"]),
        "fb_router": fb_router, "fb_n": fb_n, "fb_model": fb_model,
        "latency": (len(lat), pct(lat, 0.5), pct(lat, 0.99)), "decision": (len(dec), pct(dec, 0.5), pct(dec, 0.99)),
        "recent": [r["request_id"] for r in newest[:last]],
        "failures": [r["request_id"] for r in newest if r["status"] != "ok"][:failures],
        "counterfactual": sum(i(r) * CF.price_in_per_m + (r["output_tokens"] or 0) * CF.price_out_per_m
                              for r in rs) / 1e6,
        "key_all": key_all, "n_routed": len(routed),
    }


def check_group(got: list[dict], want: dict, keys: tuple[str, ...]) -> None:
    assert len(got) == len(want)
    for d in got:
        w = want[tuple(d[k] for k in keys) if len(keys) != 1 else d[keys[0]]]
        assert (d["requests"], d["input_tokens"], d["output_tokens"], d["ok"], d["failed"], d["cancelled"],
                d["refused"]) == (w["requests"], w["input_tokens"], w["output_tokens"], w["ok"], w["failed"],
                                  w["cancelled"], w["refused"])
        assert d["cost_usd"] == pytest.approx(w["cost_usd"], rel=1e-9, abs=1e-15)


def test_usage_stats_equal_a_direct_computation_over_the_rows(ledger_url):
    rows = random_rows(400)
    led = open_ledger(ledger_url)
    for r in rows:
        led.record(r)
    stored = {r["request_id"]: r for r in read_rows(ledger_url)}
    assert len(stored) == len(rows)
    with led, LedgerReader(led) as reader:  # as the gateway opens it: from its ledger, a connection of its own
        for since in (None, NOW - 3 * 86400, NOW - 3600, NOW + 1):
            got = usage_stats(reader, since, last=15, failures=7, counterfactual=CF)
            want = direct(rows, since, 15, 7)
            t = got["totals"]
            if want["totals"] is None:
                assert t["requests"] == 0 and got["by_router"] == [] and got["recent"] == []
                assert got["latency_s"] == {"n": 0, "p50": None, "p99": None}
                continue
            check_group([t], {(): want["totals"]}, ())
            check_group(got["by_router"], want["by_router"], ("router", "tradeoff"))
            check_group(got["by_candidate"], want["by_candidate"], ("model", "strategy", "budget"))
            check_group(got["by_model"], want["by_model"], ("model",))
            check_group(got["by_key"], want["by_key"], ("key",))
            check_group(got["by_status"], want["by_status"], ("status",))
            assert got["routed_requests"] == want["n_routed"]
            assert sum(d["share"] for d in got["by_candidate"]) == pytest.approx(1.0)
            for d in got["by_candidate"]:
                assert d["share"] == pytest.approx(d["requests"] / want["n_routed"])
            for d in got["by_router"]:
                k = (d["router"], d["tradeoff"])
                assert (d["fallback_requests"], d["fallbacks"]) == (want["fb_router"][k], want["fb_n"][k])
            assert t["fallback_requests"] == sum(want["fb_router"].values())
            assert t["fallbacks"] == sum(want["fb_n"].values())
            assert {(d["model"], d["kind"]): d["count"] for d in got["fallbacks_by_model"]} == dict(want["fb_model"])
            assert (got["latency_s"]["n"], got["latency_s"]["p50"], got["latency_s"]["p99"]) == want["latency"]
            assert (got["decision_ms"]["n"], got["decision_ms"]["p50"], got["decision_ms"]["p99"]) == \
                want["decision"]
            assert [r["request_id"] for r in got["recent"]] == want["recent"]
            assert [r["request_id"] for r in got["failures"]] == want["failures"]
            # the rows listed are the stored rows, their JSON columns decoded
            for r in got["recent"]:
                s = stored[r["request_id"]]
                assert r["cost_usd"] == s["cost_usd"] and r["model"] == s["model"]
                assert r["fallbacks"] == json.loads(s["fallbacks"])
                assert r["candidates"] == (json.loads(s["candidates"]) if s["candidates"] else None)
            cf = got["counterfactual"]
            assert cf["counterfactual_usd"] == pytest.approx(want["counterfactual"], rel=1e-12)
            assert cf["actual_usd"] == pytest.approx(want["totals"]["cost_usd"], rel=1e-12)
            assert cf["saving_usd"] == pytest.approx(want["counterfactual"] - want["totals"]["cost_usd"], rel=1e-9)
            for k, v in want["key_all"].items():
                assert got["key_spend"][k] == pytest.approx(v, rel=1e-9)


def test_every_dashboard_query_is_served_by_an_index(tmp_path):
    """What keeps the page fast on a large ledger: no query of usage_stats reads the requests table end to end
    (SQLite's plan names an index for every access to it)."""
    url = tmp_path / "usage.sqlite"
    led = open_ledger(str(url))
    for r in random_rows(300, seed=3):
        led.record(r)
    led.close()
    reader = LedgerReader(str(url)).open()
    seen: list[tuple[str, tuple]] = []
    real = reader._conn

    class Recording:  # the reader's own connection, recording each statement it runs
        def execute(self, sql, params=()):
            seen.append((sql, tuple(params)))
            return real.execute(sql, params)

    reader._conn = Recording()
    for since in (None, NOW - 86400, NOW - 3 * 3600):  # the last: under 5% of the rows (read through ts)
        usage_stats(reader, since, counterfactual=CF)
    reader._conn = real
    queries = [(q, p) for q, p in seen if q.startswith("SELECT") and "FROM requests" in q]
    assert len(queries) >= 3 * 11 and any("INDEXED BY requests_ts" in q for q, _ in queries)
    names = {name for name, _, _ in INDEXES}
    for sql, params in queries:
        plan = [row[3] for row in real.execute("EXPLAIN QUERY PLAN " + sql, params)]
        on_table = [p for p in plan if re.search(r"\brequests\b", p)]
        assert on_table, (sql, plan)
        for p in on_table:
            assert "USING" in p and "INDEX" in p, f"{sql}\n  reads the table without an index: {plan}"
            used = re.search(r"INDEX (\w+)", p).group(1)
            assert used in names, (sql, plan)
    reader.close()


def test_session_tokens_name_their_key_expire_and_cannot_be_forged():
    keys = KeyStore([KeySpec(name="alice", sha256=hash_key("s1")), KeySpec(name="bob", sha256=hash_key("s2"))])
    tok = make_session(keys, "alice", now=1000.0)
    assert "s1" not in tok and check_session(keys, tok, now=1001.0) == "alice"
    assert check_session(keys, tok, now=1000.0 + 9 * 3600) is None  # expired
    n64, exp, sig = tok.split(".")
    assert check_session(keys, f"{n64}.{int(exp) + 3600}.{sig}", now=1001.0) is None  # a later expiry
    bob64 = make_session(keys, "bob", now=1000.0).split(".")[0]
    assert check_session(keys, f"{bob64}.{exp}.{sig}", now=1001.0) is None  # another key's name
    for junk in ("", "x", "a.b.c", "..", tok + "x"):
        assert check_session(keys, junk, now=1001.0) is None
    rotated = KeyStore([KeySpec(name="alice", sha256=hash_key("new secret"))])
    assert check_session(rotated, tok, now=1001.0) is None  # a new secret for the key ends its sessions
    assert check_session(KeyStore([]), tok, now=1001.0) is None
    assert check_session(keys, f"{n64}.{int(exp) + 10 ** 9}.{sig}", now=1001.0) is None  # a far expiry


def test_a_session_cannot_be_forged_from_the_config_alone(monkeypatch):
    """The config holds each key's digest; a session signed from the digest alone (without the gateway's session
    secret: ROUTECRAFT_DASHBOARD_SECRET, or one drawn per process) is refused, and one secret's sessions do not hold
    under another."""
    import hashlib
    import hmac

    from routecraft.serve import dashboard as dash

    keys = KeyStore([KeySpec(name="alice", sha256=hash_key("s1"))])
    body = f"{dash._b64(b'alice')}.{int(1000 + dash.SESSION_S)}"
    k = hmac.new(bytes.fromhex(hash_key("s1")), b"routecraft-dashboard-session-v1", hashlib.sha256).digest()
    forged = f"{body}.{dash._b64(hmac.new(k, body.encode(), hashlib.sha256).digest())}"
    monkeypatch.delenv(dash.SECRET_ENV, raising=False)
    assert check_session(keys, forged, now=1001.0) is None
    assert check_session(keys, make_session(keys, "alice", now=1000.0), now=1001.0) == "alice"
    monkeypatch.setenv(dash.SECRET_ENV, "operator-secret")
    tok = make_session(keys, "alice", now=1000.0)
    assert check_session(keys, tok, now=1001.0) == "alice"
    monkeypatch.setenv(dash.SECRET_ENV, "another-secret")
    assert check_session(keys, tok, now=1001.0) is None


def test_the_strongest_model_is_the_largest_then_the_dearest():
    from routecraft.pool.config import PoolModel

    def m(name, size, pout):
        return PoolModel(name=name, endpoint="http://127.0.0.1:9/v1", description="d", size_b=size,
                         price_in_per_m=0.1, price_out_per_m=pout)
    assert strongest_model([m("a", 0.1, 9.0), m("b", 1.5, 0.2), m("c", 0.5, 1.0)]).name == "b"
    assert strongest_model([m("a", None, 9.0), m("b", 1.5, 0.2)]).name == "a"  # a size unknown: by price
    assert strongest_model([]) is None


# ---- the access rules, against `routecraft serve` with keys ------------------------------------------------------
SECRET = "dash-Zk3-secret-never-shown"
OTHER = "dash-other-secret-never-shown"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, smollm_server):
    d = tmp_path_factory.mktemp("dashboard")
    base = {"endpoint": smollm_server.base_url, "model_id": smollm_server.model_id, "description": "SmolLM2",
            "context": 2048}
    cfg = {"port": 0, "log_level": "info",  # info: uvicorn's access log is on, so its lines can be checked
           "pool": {"name": "dash", "models": [{"name": "small", "size_b": 0.135, **base, **PRICE},
                                               {"name": "big", "size_b": 1.7, **base, "price_in_per_m": 0.03,
                                                "price_out_per_m": 0.25}]},
           "routers": {"auto": "heuristic"}, "heuristic": {"strategies": ["default"]},
           "keys": [{"name": "alice", "sha256": hash_key(SECRET)}, {"name": "bob", "sha256": hash_key(OTHER)}],
           "limits": {"auth_failures_per_min": 50}, "ledger": str(d / "usage.sqlite"), "default_temperature": 0.0}
    proc, info = launch_gateway(d, cfg)
    g = {"root": f"http://127.0.0.1:{info['port']}", "ledger": d / "usage.sqlite", "proc": proc}
    try:
        yield g
    finally:
        stop_gateway(proc)


def gateway_log(gw) -> str:
    stop_gateway(gw["proc"])
    return gw["proc"].stdout.read().decode(errors="replace")


@pytest.mark.slow
def test_the_dashboard_needs_a_key_and_never_shows_or_logs_one(gw):
    root = gw["root"]
    r = httpx.post(root + "/v1/chat/completions", timeout=120, headers={"authorization": f"Bearer {SECRET}",
                                                                       "x-request-id": "dash-1"},
                   json={"model": "routecraft/auto", "max_tokens": 8,
                         "messages": [{"role": "user", "content": "Say hi."}]})
    assert r.status_code == 200, r.text
    # no key: the login page, no numbers
    for path in ("/dashboard", "/dashboard?window=all", "/dashboard?part=content"):
        r = httpx.get(root + path)
        assert r.status_code == 401 and 'id="summary"' not in r.text and "dash-1" not in r.text
    assert httpx.get(root + "/dashboard/stats.json").status_code == 401
    assert httpx.get(root + "/dashboard", headers={"authorization": "Bearer wrong"}).status_code == 401
    # a key in the URL is refused (it would be logged), and not echoed
    r = httpx.get(root + "/dashboard", params={"key": SECRET})
    assert r.status_code == 400 and SECRET not in r.text and 'id="summary"' not in r.text
    # the bearer header works, for the page and the JSON
    h = {"authorization": f"Bearer {SECRET}"}
    r = httpx.get(root + "/dashboard", headers=h)
    assert r.status_code == 200 and 'id="summary"' in r.text and "dash-1" in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"] and r.headers["cache-control"] == "no-store"
    assert r.headers["x-frame-options"] == "DENY" and "ledger;dur=" in r.headers["server-timing"]
    assert SECRET not in r.text and OTHER not in r.text and hash_key(SECRET) not in r.text
    stats = httpx.get(root + "/dashboard/stats.json", params={"window": "all"}, headers=h).json()
    rows = read_rows(gw["ledger"])
    assert stats["totals"]["requests"] == len(rows) == 1
    assert stats["totals"]["cost_usd"] == pytest.approx(rows[0]["cost_usd"])
    assert stats["recent"][0]["client_request_id"] == "dash-1"
    assert stats["counterfactual"]["model"] == "big"  # the largest served model
    # the login form: a wrong key is refused, the right one answers with a session cookie holding no secret
    r = httpx.post(root + "/dashboard/login", data={"key": "nope", "next": "/dashboard"})
    assert r.status_code == 401 and "Incorrect key" in r.text and "nope" not in r.text
    r = httpx.post(root + "/dashboard/login", data={"key": SECRET, "next": "https://evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"  # never sent to another site
    cookie = r.headers["set-cookie"]
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attrs and "samesite=strict" in cookie.lower()
    assert "path=/dashboard" in cookie.lower() and SECRET not in cookie and hash_key(SECRET) not in cookie
    token = r.cookies["routecraft_dashboard"]
    jar = {"routecraft_dashboard": token}
    r = httpx.get(root + "/dashboard", cookies=jar)
    assert r.status_code == 200 and "dash-1" in r.text and SECRET not in r.text
    assert '<span class="who">alice</span>' in r.text
    n64, exp, sig = token.split(".")
    forged = f"{n64}.{exp}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}"
    assert httpx.get(root + "/dashboard", cookies={"routecraft_dashboard": forged}).status_code == 401
    # a login posted from another site is refused
    r = httpx.post(root + "/dashboard/login", data={"key": SECRET}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    r = httpx.post(root + "/dashboard/login", data={"key": SECRET}, headers={"origin": "null"})  # a sandboxed frame
    assert r.status_code == 403 and "set-cookie" not in r.headers
    r = httpx.post(root + "/dashboard/logout", cookies=jar, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    r = httpx.post(root + "/dashboard/logout", cookies=jar)
    assert r.status_code == 303 and "max-age=0" in r.headers["set-cookie"].lower()
    # the static assets hold no data and need no key
    assert httpx.get(root + "/dashboard/static/dashboard.js").status_code == 200
    assert httpx.get(root + "/dashboard/static/../app.py").status_code == 404
    # nothing above wrote a key secret to the gateway's log (uvicorn's access log is on)
    log = gateway_log(gw)
    assert "GET /dashboard" in log and "POST /dashboard/login" in log  # the access log was on
    assert SECRET not in log and OTHER not in log and "nope" not in log


@pytest.mark.slow
def test_only_the_listed_viewers_open_the_dashboard(tmp_path, smollm_server):
    """``dashboard_viewers``: on a gateway shared by tenants, a tenant's key is refused (403, by header and at the
    login form) and an operator's key is served."""
    base = {"endpoint": smollm_server.base_url, "model_id": smollm_server.model_id, "description": "SmolLM2",
            "context": 2048}
    cfg = {"port": 0, "pool": {"name": "dash", "models": [{"name": "small", "size_b": 0.135, **base, **PRICE}]},
           "routers": {"auto": "heuristic"}, "heuristic": {"strategies": ["default"]},
           "keys": [{"name": "alice", "sha256": hash_key(SECRET)}, {"name": "bob", "sha256": hash_key(OTHER)}],
           "dashboard_viewers": ["alice"], "ledger": str(tmp_path / "usage.sqlite")}
    proc, info = launch_gateway(tmp_path, cfg)
    root = f"http://127.0.0.1:{info['port']}"
    try:
        r = httpx.get(root + "/dashboard", headers={"authorization": f"Bearer {OTHER}"})
        assert r.status_code == 403 and "dashboard_viewers" in r.text and 'id="summary"' not in r.text
        assert httpx.get(root + "/dashboard/stats.json",
                         headers={"authorization": f"Bearer {OTHER}"}).status_code == 403
        r = httpx.post(root + "/dashboard/login", data={"key": OTHER})
        assert r.status_code == 403 and "set-cookie" not in r.headers
        r = httpx.get(root + "/dashboard", headers={"authorization": f"Bearer {SECRET}"})
        assert r.status_code == 200 and 'id="summary"' in r.text
    finally:
        stop_gateway(proc)
