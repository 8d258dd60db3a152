"""benchmarks/reasoning_routers.py end to end on small synthetic tables (tests/_reasoning_tables.py): the report has
one section per item, the reference numbers are right by construction, and model-only data skips the items that
need strategies/budgets with a note instead of an error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _benchmarks import load_benchmark
from _reasoning_tables import budget_table, strategy_table


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("reasoning_routers", register=True)  # dataclasses look their module up


def fake_encoder(dim):
    def encode(texts):
        rng = np.random.default_rng(len(texts[0]))
        x = rng.normal(size=(len(texts), dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return encode


def test_all_items_on_a_model_strategy_budget_table(bench, tmp_path):
    data, X, _ = budget_table(90, d=8, seed=0, models=("ma", "mb", "mc"), strategies=("cot", "direct"))
    out = tmp_path / "out"
    rc = bench.main(["--data", "synthetic", "--seeds", "0,1", "--out", str(out), "--fast", "--cold-n", "5,20",
                     "--latency-n", "5", "--lambdas", "20"], features=X, encode=fake_encoder(X.shape[1]), data=data)
    assert rc == 0
    report = (out / "report.md").read_text()
    for i, title in bench.ITEM_TITLES.items():
        assert f"## {i}. {title}" in report
    assert "Skipped" not in report and "report failed" not in report
    assert "**Claim (RTR reaches the best pair's accuracy" in report
    assert "Against the pair chosen on each training split" in report
    assert "**Claim (same quality at 4–5× lower cost)" in report
    assert "**Requirement (joint at least matches" in report
    s = json.loads((out / "summary.json").read_text())
    assert s["info"]["mode"] == "model × strategy × budget" and s["items_run"] == [1, 2, 3, 4, 5, 6]
    for f in ("item1_accuracy_vs_tokens.png", "item1_accuracy_vs_cost.png", "item2_r2_cost_to_accuracy.png",
              "item5_cold_start.png"):
        assert (out / f).stat().st_size > 1000, f
    # by construction: the reference is the best candidate of each seed's test split, the oracle the per-query max
    for rec in s["items"]["1"]:
        test = data.split(seed=rec["seed"]).test.matrices()
        ms = test.score.mean(0)
        assert rec["ref"]["best_score"] == pytest.approx(ms.max())
        assert rec["ref"]["oracle_score"] == pytest.approx(test.score.max(1).mean())
        assert rec["routers"]["oracle"]["acc0"] == pytest.approx(test.score.max(1).mean())
        j = int(np.flatnonzero(ms == ms.max())[np.argmin(test.cost.mean(0)[ms == ms.max()])])
        assert rec["ref"]["best"] == test.candidates[j].id
        assert rec["pairs"][test.candidates[j].id]["tokens"] == pytest.approx(np.mean(test.output_tokens[:, j]))
        # the best single candidate reaches its own accuracy at its own cost: the oracle saves tokens
        assert rec["routers"]["oracle"]["saving_usd"] >= 0
        # the pair chosen on the training split, and the saving against it read off the oracle's own sweep
        assert rec["train_best"] in rec["pairs"]
        b = rec["routers"]["best-single (train-chosen)"]
        assert b["acc0"] == pytest.approx(rec["pairs"][rec["train_best"]]["acc"])
        sv = bench.saving_vs_train_best(rec, "oracle [tokens]")
        assert np.isnan(sv) or -1e-9 <= sv < 1
    # every item has numbers for every seed
    assert len(s["items"]["2"]) == 2 and "r2" in s["items"]["2"][0]["routers"]
    assert set(s["items"]["4"][0]["routers"]) == {"combined", "text", "learnable"}
    by_n = s["items"]["5"][0]["by_n"]
    assert set(by_n) == {"5", "20"} and {"rtr cold start", "r2 cold start", "rtr from scratch"} <= set(by_n["20"])
    lat = s["items"]["6"]["latency"]
    assert lat["n"] == 5 and lat["rtr"]["p99"] >= lat["rtr"]["p50"] > 0
    assert "rtr" in s["items"]["6"]["fit_s"]


def test_model_only_data_skips_what_needs_strategies_or_budgets(bench, tmp_path, capsys):
    data, X, _ = strategy_table(60, d=8, seed=0, strategies=("direct",))
    out = tmp_path / "mo"
    rc = bench.main(["--data", "mo", "--seeds", "0", "--out", str(out), "--fast", "--items", "1,2,3",
                     "--first-queries", "45"], features=X, data=data)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "item 2 (R2-Router vs budget-agnostic routers) skipped" in printed
    assert "item 3 (Joint router vs RTR and R2-Router) skipped" in printed
    s = json.loads((out / "summary.json").read_text())
    assert s["info"]["mode"] == "model-only" and s["items_run"] == [1]
    assert s["info"]["queries"] == 45 and s["settings"]["first_queries"] == 45  # the data's first 45 of 60
    routers = s["items"]["1"][0]["routers"]
    assert {"rtr", "r2", "knn", "mlp", "mf", "linear", "oracle"} <= set(routers)
    report = (out / "report.md").read_text()
    assert "## 2. R2-Router vs budget-agnostic routers\n\nSkipped" in report
