"""The bench's HTML report (``routecraft bench --html``): one self-contained file whose plot has the series the
bench computed — checked in the file itself against summary.json (a fast bench on a made-up table), and in a real
browser (headless Chromium, tests/browser_fixture.py) on a `routecraft bench --html` run over the packaged
ZeroEval GSM8K logs: the page makes no request, its series and legend match summary.json, hovering a router's point
shows its λ and routed shares, a legend entry hides its series. With ROUTECRAFT_SAVE_SCREENSHOTS=1 the page is saved
as docs/img/bench_report.png."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import browser_fixture
from browser_fixture import save_doc_screenshot
from routecraft.data.schema import RoutingData
from routecraft.evaluate.bench import run_bench, write_html_report, write_report

browser, page = browser_fixture.browser, browser_fixture.page  # the fixtures

MODELS = [("tiny", 0.0005), ("small", 0.002), ("mid", 0.01), ("big", 0.05), ("huge", 0.2)]


def three_clusters(n: int = 240, seed: int = 0):
    """Queries in three clusters; model k is better on cluster k, and dearer models are better overall."""
    rng = np.random.default_rng(seed)
    ids = [f"q{i}" for i in range(n)]
    cl = np.arange(n) % 3
    X = np.zeros((n, 8), dtype=np.float32)
    X[np.arange(n), cl] = 1.0
    X += rng.normal(0, 0.05, X.shape).astype(np.float32)
    rows = []
    for i, c in enumerate(cl):
        for k, (m, cost) in enumerate(MODELS):
            p = min(0.2 + 0.18 * k + (0.3 if k == c else 0.0), 0.98)
            rows.append((ids[i], m, float(rng.random() < p), cost * (0.8 + 0.4 * rng.random())))
    o = pd.DataFrame(rows, columns=["query_id", "model", "score", "cost_usd"])
    q = pd.DataFrame({"query_id": ids, "text": [f"query {i}" for i in range(n)], "task": "t"})
    return RoutingData.from_frames(q, o), X


def expected_points(summary: dict, router: str) -> list[tuple[float, float]]:
    """A router's plotted points worked out again from summary.json: its per-seed curves averaged at each λ index,
    consecutive repeats of one point dropped."""
    recs = [r for r in summary["per_seed"] if r["router"] == router]
    n = min(len(r["curve"]["cost"]) for r in recs)
    pts = []
    for i in range(n):
        p = (float(np.mean([r["curve"]["cost"][i] for r in recs])),
             float(np.mean([r["curve"]["score"][i] for r in recs])))
        if not pts or pts[-1] != p:
            pts.append(p)
    return pts


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    rd, X = three_clusters()
    res = run_bench(rd, ["random", "cheapest", "best-single", "knn:k=5", "linear", "oracle"], seeds=[0, 1],
                    features=X, n_lambdas=20)
    out = tmp_path_factory.mktemp("bench-html")
    paths = write_report(res, out, title="three clusters", html=True)
    return paths, json.loads(paths["json"].read_text())


def test_the_bench_records_where_each_lambda_routed(report):
    _, summary = report
    for rec in summary["per_seed"]:
        shares = rec["shares"]
        assert len(shares) == len(rec["curve"]["lambda"])
        for per_lambda in shares:
            assert sum(s for _, s in per_lambda) == pytest.approx(1.0, abs=1e-3)
            assert all(0 <= j < len(rec["candidates"]) for j, _ in per_lambda)
        if rec["router"] == "cheapest":  # always the cheapest candidate, whatever λ
            assert {tuple(map(tuple, s)) for s in shares} == {((rec["candidates"].index("tiny"), 1.0),)}
    counts = {r["router"]: np.array(r["curve"]["choice_counts"]) for r in summary["per_seed"] if r["seed"] == 0}
    for rec in (r for r in summary["per_seed"] if r["seed"] == 0):  # the shares are the sweep's decisions
        n_test = round(counts[rec["router"]].sum() / len(rec["shares"]))
        got = np.zeros(len(rec["candidates"]))
        for per_lambda in rec["shares"]:
            for j, s in per_lambda:
                got[j] += s * n_test
        assert np.allclose(got, counts[rec["router"]], atol=0.01 * len(rec["shares"]))


def test_the_html_report_is_self_contained_and_has_every_series(report):
    paths, summary = report
    text = paths["html"].read_text()
    assert paths["html"].name == "report.html" and paths["html"].parent == paths["json"].parent
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched from anywhere
    assert "<link" not in text and "@import" not in text and "url(" not in text
    routers = [r for r in summary["routers"] if r != "oracle"]
    series = re.findall(r'<g class="series" data-kind="(\w+)" data-name="([^"]*)" data-points="(\d+)">', text)
    assert [n for k, n, _ in series if k == "router"] == routers
    assert [k for k, _, _ in series].count("oracle") == 1
    for kind, name, n in series:
        if kind == "router":
            assert int(n) == len(expected_points(summary, name)), name
        if kind == "singles":
            assert int(n) == len(summary["singles"])
    legend = re.findall(r'<li data-kind="(\w+)" data-name="([^"]*)">', text)
    assert legend == [("singles", "single candidates")] + [("router", r) for r in routers] + [
        ("best", summary["reference"]["best"]), ("oracle", "oracle")]
    assert re.findall(r'<tr data-router="([^"]*)">', text) == summary["routers"]  # the metrics table
    # written again from summary.json alone, it is the same file
    again = write_html_report(paths["json"], paths["json"].parent / "again.html", title="three clusters")
    assert again.read_text() == text


@pytest.mark.slow
def test_bench_html_in_a_browser(tmp_path, page):
    out = tmp_path / "bench"
    cands = ("gpt-4o-2024-08-06,gpt-4o-mini-2024-07-18,claude-3-haiku-20240307,Meta-Llama-3.1-8B-Instruct,"
             "gemma-2-2b-it,Qwen2-72B-Instruct,deepseek-chat,Mistral-Nemo-Instruct-2407")
    r = subprocess.run([sys.executable, "-m", "routecraft.cli", "bench", "--data", "zeroeval-gsm8k", "--routers",
                        "random,cheapest,best-single,knn,linear,oracle", "--seeds", "0,1", "--candidates", cands,
                        "--html", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    html_path = out / "report.html"
    assert html_path.exists()
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.goto(html_path.as_uri())
    assert requests == [html_path.as_uri()]  # self-contained: not one other request
    routers = [x for x in summary["routers"] if x != "oracle"]
    svg = page.locator("svg#tradeoff")
    assert svg.locator('g.series[data-kind="router"]').count() == len(routers)
    for name in routers:
        g = svg.locator(f'g.series[data-kind="router"][data-name="{name}"]')
        assert g.locator(".pt").count() == len(expected_points(summary, name)) == int(g.get_attribute("data-points"))
        assert g.locator("path.curve").count() == 1
    assert svg.locator('g.series[data-kind="singles"] .pt').count() == len(summary["singles"]) == 8
    assert svg.locator('g.series[data-kind="oracle"]').count() == 1
    assert svg.locator('g.series[data-kind="best"] .pt').count() == 1
    legend = page.locator("#legend li")
    assert legend.count() == len(routers) + 3
    assert [legend.nth(i).get_attribute("data-name") for i in range(legend.count())] == (
        ["single candidates"] + routers + [summary["reference"]["best"], "oracle"])
    assert page.locator("#metrics tbody tr").count() == len(summary["routers"])
    # hover a point of knn's curve: its λ and where the queries went
    knn = svg.locator('g.series[data-kind="router"][data-name="knn"] .pt')
    tip = page.locator("#tip")
    assert tip.is_hidden()
    knn.nth(knn.count() // 2).hover(force=True)  # points overlap: whichever is on top shows its own numbers
    assert tip.is_visible()
    text = tip.inner_text()
    assert "λ" in text and "routed shares" in text and re.search(r"\d+\.\d%", text), text
    # a single candidate's point names the candidate
    single = svg.locator('g.series[data-kind="singles"] .pt[data-name="gemma-2-2b-it"]')
    single.hover(force=True)
    assert "accuracy" in tip.inner_text()
    # a legend entry hides its series, and shows it again
    entry = page.locator('#legend li[data-name="random"]')
    entry.click()
    assert svg.locator('g.series[data-name="random"]').is_hidden()
    entry.click()
    assert svg.locator('g.series[data-name="random"]').is_visible()
    assert page.errors == []
    knn.nth(knn.count() // 2).hover(force=True)
    save_doc_screenshot(page, "bench_report.png")
