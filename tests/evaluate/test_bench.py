"""The bench orchestration on a table whose answers are known, and the calibration."""

import numpy as np
import pandas as pd
import pytest

from routecraft.core.sweep import lambda_grid, sweep
from routecraft.data.schema import RoutingData
from routecraft.evaluate.bench import parse_router_spec, run_bench
from routecraft.evaluate.calibrate import calibrate
from routecraft.routers.base import Prediction


def _two_cluster(n=200, seed=0):
    """Queries in two clusters; 'cheap' is right on cluster 0, 'mid' on cluster 1, 'dear' always right."""
    rng = np.random.default_rng(seed)
    ids = [f"q{i}" for i in range(n)]
    cl = np.arange(n) % 2
    X = np.zeros((n, 8), dtype=np.float32)
    X[np.arange(n), cl] = 1.0
    X += rng.normal(0, 0.05, X.shape).astype(np.float32)
    rows = []
    for i, c in enumerate(cl):
        rows += [(ids[i], "cheap", float(c == 0), 0.001), (ids[i], "mid", float(c == 1), 0.01),
                 (ids[i], "dear", 1.0, 0.1)]
    o = pd.DataFrame(rows, columns=["query_id", "model", "score", "cost_usd"])
    q = pd.DataFrame({"query_id": ids, "text": [f"query {i}" for i in range(n)], "task": "t"})
    return RoutingData.from_frames(q, o), X


def test_parse_router_spec():
    assert parse_router_spec("knn") == ("knn", "knn", {})
    assert parse_router_spec("knn:k=5,metric=cosine") == ("knn(k=5,metric=cosine)", "knn", {"k": 5, "metric": "cosine"})
    assert parse_router_spec("big=mlp:lr=0.01")[0] == "big"
    with pytest.raises(ValueError, match="key=value"):
        parse_router_spec("knn:5")


def test_lambda_grid_spans_tradeoffs():
    g = lambda_grid(np.array([0.001, 0.01, 0.1]))
    assert g[0] == 0 and g[-1] * 0.001 >= 100 and g[1] * 0.1 <= 1e-2


def test_sweep_with_true_predictions_traces_the_oracle():
    rd, _ = _two_cluster()
    m = rd.matrices()
    pred = Prediction(m.candidates, m.score, m.cost)
    sw = sweep(pred, m, lambda_grid(m.cost.mean(0)))
    # λ=0: every query answered right at the cheapest right model -> score 1, cost 0.0055
    assert sw["score"][0] == 1.0
    assert sw["cost"][0] == pytest.approx(0.0055)
    # λ huge: always the cheapest model -> score 0.5, cost 0.001
    assert sw["score"][-1] == 0.5 and sw["cost"][-1] == pytest.approx(0.001)


def test_run_bench_ranks_routers_sensibly():
    rd, X = _two_cluster()
    res = run_bench(rd, ["cheapest", "best-single", "knn:k=5", "oracle"], seeds=[0, 1, 2], features=X,
                    n_lambdas=30)
    s = res.summary.set_index("router")
    assert res.reference["best"] == "dear" and res.reference["cheapest"] == "cheap"
    # the oracle reaches 1.0 at the smallest cost; KNN learns the clusters and gets there too
    assert s.loc["oracle", "peak"] == 1.0
    assert s.loc["knn(k=5)", "peak"] == 1.0
    assert s.loc["knn(k=5)", "saving_vs_best"] > 0.9  # 0.0055 vs 0.1 per query
    assert s.loc["best-single", "saving_vs_best"] == pytest.approx(0.0)
    assert s.loc["cheapest", "peak"] == pytest.approx(res.reference["cheapest_score"])
    assert s.loc["oracle", "aiq"] >= s.loc["knn(k=5)", "aiq"] - 1e-9 >= s.loc["cheapest", "aiq"]
    assert set(res.singles["candidate"]) == {"cheap", "mid", "dear"}


def test_calibrate_to_cost_and_share():
    rd, _ = _two_cluster()
    m = rd.matrices()
    pred = Prediction(m.candidates, m.score, m.cost)
    cal = calibrate(pred, m, target_cost=0.006)
    assert cal.cal_cost <= 0.006 and cal.cal_score == 1.0
    cal = calibrate(pred, m, target_cost=0.0001)  # below what is reachable: the cheapest decisions
    assert cal.cal_cost == pytest.approx(0.001)
    noisy = Prediction(m.candidates, np.clip(m.score + 0.2, 0, 1) * [1, 1, 1.05], m.cost)
    cal = calibrate(noisy, m, model="dear", share=0.3)
    assert cal.cal_share <= 0.3
    with pytest.raises(ValueError, match="exactly one target"):
        calibrate(pred, m)
    with pytest.raises(ValueError, match="not among"):
        calibrate(pred, m, model="nope", share=0.5)
