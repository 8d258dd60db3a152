"""The dashboard in a real browser (headless Chromium driven by Playwright, tests/browser_fixture.py) against
`routecraft serve` on loopback with API keys and a real SmolLM2 backend served as two pool models ("small", and
"big" priced as a larger model): after a few requests the page shows each of them with its ledger cost, the totals,
the per-model spend and the candidate tables; its auto-refresh brings in a request sent after the page loaded without
reloading it; and without a key it shows only the login form. With ROUTECRAFT_SAVE_SCREENSHOTS=1 the page is saved as
docs/img/dashboard.png."""

from __future__ import annotations

import json

import httpx
import pytest
from gateway_proc import PRICE, start_gateway, stop_gateway

import browser_fixture
from browser_fixture import save_doc_screenshot
from routecraft.serve.config import hash_key
from routecraft.serve.dashboard import usd
from routecraft.serve.ledger import read_rows

pytestmark = pytest.mark.slow
browser, page = browser_fixture.browser, browser_fixture.page  # the fixtures

SECRET = "browser-dash-secret-Qm7"
BIG = {"price_in_per_m": 0.3, "price_out_per_m": 2.5}  # dear enough for "cheap" to pick small
ASKS = [("dash-quality", "routecraft/auto:quality", "What is 2 + 3?", False),
        ("dash-cheap", "routecraft/auto:cheap", "Name a colour.", False),
        ("dash-bypass", "small", "Say hello.", False),
        ("dash-stream", "routecraft/auto:balanced", "Count to three.", True)]


@pytest.fixture(scope="module")
def gw(tmp_path_factory, smollm_server):
    d = tmp_path_factory.mktemp("dashboard-browser")
    base = {"endpoint": smollm_server.base_url, "model_id": smollm_server.model_id, "description": "SmolLM2",
            "context": 2048}
    cfg = {"port": 0,
           "pool": {"name": "dash", "models": [{"name": "small", "size_b": 0.135, **base, **PRICE},
                                               {"name": "big", "size_b": 1.7, **base, **BIG}]},
           "routers": {"auto": "heuristic"}, "heuristic": {"strategies": ["default", "direct"]},
           "keys": [{"name": "alice", "sha256": hash_key(SECRET)}],
           "ledger": str(d / "usage.sqlite"), "default_temperature": 0.0}
    proc, root = start_gateway(d, cfg)
    g = {"root": root, "ledger": d / "usage.sqlite"}
    for rid, model, text, stream in ASKS:
        ask(g, rid, model, text, stream)
    yield g
    stop_gateway(proc)


def ask(gw, rid: str, model: str, text: str, stream: bool = False) -> None:
    body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": text}], "stream": stream}
    h = {"authorization": f"Bearer {SECRET}", "x-request-id": rid}
    with httpx.stream("POST", gw["root"] + "/v1/chat/completions", json=body, headers=h, timeout=180) as r:
        r.read()
        assert r.status_code == 200, r.text


def log_in(page, root: str, path: str = "/dashboard") -> None:
    resp = page.goto(root + path)
    assert resp.status == 401
    page.fill("#login input[name=key]", SECRET)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#summary")


def test_the_dashboard_shows_the_requests_and_their_costs_and_refreshes(gw, page):
    root = gw["root"]
    resp = page.goto(root + "/dashboard?window=1h&refresh=5")
    assert resp.status == 401 and page.locator("#summary").count() == 0
    page.fill("#login input[name=key]", "not-the-key")
    page.click("#login button[type=submit]")
    assert "Incorrect key" in page.locator("#login-error").inner_text()
    assert page.locator("#summary").count() == 0
    page.fill("#login input[name=key]", SECRET)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#summary")
    assert page.url.endswith("/dashboard?window=1h&refresh=5")  # back to the view asked for
    assert page.locator("#window").input_value() == "1h" and page.locator("#refresh").input_value() == "5"
    assert SECRET not in page.content()
    rows = {r["client_request_id"]: r for r in read_rows(gw["ledger"])}
    assert set(rows) == {a[0] for a in ASKS}
    # every request, with its model, its cost and its status as the ledger has them
    for rid, _, _, _ in ASKS:
        tr = page.locator(f'#recent-table tr[data-client-request-id="{rid}"]')
        assert tr.count() == 1, rid
        cells = tr.locator(":scope > td")
        row = rows[rid]
        assert row["status"] == "ok" and row["cost_usd"] > 0
        assert cells.nth(7).inner_text() == usd(row["cost_usd"])
        assert cells.nth(4).inner_text().startswith(f"{row['model']} · {row['strategy']}")
        assert cells.nth(6).inner_text() == f"{row['input_tokens']:,} / {row['output_tokens']:,}"
        assert cells.nth(10).inner_text() == "ok"
    card = page.locator('[data-stat="requests"] .value')
    assert card.inner_text() == str(len(rows))
    total = sum(r["cost_usd"] for r in rows.values())
    assert page.locator('[data-stat="spend"] .value').inner_text() == usd(total)
    # the saving against "everything to big" is labelled an estimate, and adds up
    tin, tout = sum(r["input_tokens"] for r in rows.values()), sum(r["output_tokens"] for r in rows.values())
    would = (tin * BIG["price_in_per_m"] + tout * BIG["price_out_per_m"]) / 1e6
    saving = page.locator('[data-stat="saving"]')
    assert saving.locator(".value").inner_text() == usd(would - total) and "estimate" in saving.inner_text()
    assert "big" in page.locator("#saving").inner_text()
    # spend per model: one row per model used, the sum of its requests' costs
    for m in {r["model"] for r in rows.values()}:
        mrow = page.locator(f'#models-table tr[data-model="{m}"] td')
        assert mrow.nth(4).inner_text() == usd(sum(r["cost_usd"] for r in rows.values() if r["model"] == m))
    assert page.locator('#keys-table tr[data-key="alice"] td').nth(1).inner_text() == str(len(rows))
    # routers × trade-offs: the three routed trade-offs and the bypass
    for router, tradeoff in [("auto", "quality"), ("auto", "cheap"), ("auto", "balanced"), ("bypass", None)]:
        sel = f'#routers-table tr[data-router="{router}"][data-tradeoff="{tradeoff if tradeoff else "—"}"]'
        assert page.locator(sel).count() == 1, sel
    # a decision's candidate table, chosen candidate marked, as the ledger keeps it
    q = rows["dash-quality"]
    details = page.locator('#recent-table tr[data-client-request-id="dash-quality"] details')
    details.locator("summary").click()
    cand_rows = details.locator("table.cands tbody tr")
    table = json.loads(q["candidates"])
    assert cand_rows.count() == len(table) == 4  # 2 models × (plain chat, direct)
    assert [cand_rows.nth(i).locator("td").first.inner_text() for i in range(len(table))] == [c[0] for c in table]
    assert details.locator("tr.chosen td").first.inner_text() == table[0][0]
    assert page.locator('#recent-table tr[data-client-request-id="dash-bypass"] details').count() == 0
    # the auto-refresh: a request sent now appears without the page being reloaded, the open table stays open
    page.evaluate("window.__loaded_once = 42")
    ask(gw, "dash-after", "routecraft/auto:quality", "What is 7 + 1?")
    page.wait_for_selector('#recent-table tr[data-client-request-id="dash-after"]', timeout=30_000)
    assert page.evaluate("window.__loaded_once") == 42
    assert card.inner_text() == str(len(rows) + 1)
    assert page.locator('#recent-table tr[data-client-request-id="dash-quality"] details').get_attribute(
        "open") is not None
    assert "updated" in page.locator("#updated").inner_text()
    # the window selector reloads the page with that window
    page.select_option("#window", "all")
    page.wait_for_url("**window=all**")
    page.wait_for_selector("#summary")
    assert page.locator("#window-note").inner_text().startswith("Window all")
    details = page.locator('#recent-table tr[data-client-request-id="dash-quality"] details')
    details.locator("summary").click()
    assert page.errors == []
    save_doc_screenshot(page, "dashboard.png")


def test_without_a_key_the_dashboard_is_refused(gw, page):
    root = gw["root"]
    for path in ("/dashboard", "/dashboard?window=all", "/dashboard?part=content"):
        resp = page.goto(root + path)
        assert resp.status == 401, path
        assert page.locator("#summary").count() == 0 and "dash-quality" not in page.content()
    assert page.goto(root + "/dashboard/stats.json").status == 401
    assert page.goto(root + f"/dashboard?key={SECRET}").status == 400  # never in a URL
    assert SECRET not in page.content()
    log_in(page, root)
    assert page.locator('#recent-table tr[data-client-request-id="dash-quality"]').count() == 1
    cookie = next(c for c in page.context.cookies() if c["name"] == "routecraft_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert SECRET not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the page's scripts cannot read it
    page.click("header form[action='/dashboard/logout'] button")
    page.wait_for_selector("#login")
    assert page.goto(root + "/dashboard").status == 401
    assert page.locator("#summary").count() == 0
