"""The ensemble router: the mean of its members' predictions."""

import numpy as np
import pandas as pd
import pytest

from routecraft.data.schema import RoutingData
from routecraft.routers import load_router, make_router


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"q{i}" for i in range(n)]
    cl = np.arange(n) % 2
    X = np.zeros((n, 6), dtype=np.float32)
    X[np.arange(n), cl] = 1.0
    X += rng.normal(0, 0.05, X.shape).astype(np.float32)
    rows = []
    for i, c in enumerate(cl):
        rows += [(ids[i], "a", float(c == 0), 0.001), (ids[i], "b", float(c == 1), 0.002),
                 (ids[i], "c", 1.0, 0.05)]
    q = pd.DataFrame({"query_id": ids, "text": ids, "task": "t"})
    return RoutingData.from_frames(q, pd.DataFrame(rows, columns=["query_id", "model", "score", "cost_usd"])), X


def test_ensemble_is_the_mean_of_its_members(tmp_path):
    rd, X = _data()
    ens = make_router("ensemble", members="knn,linear").fit(rd, X)
    knn = make_router("knn").fit(rd, X)
    lin = make_router("linear").fit(rd, X)
    p, pk, pl = ens.predict(rd.queries, X), knn.predict(rd.queries, X), lin.predict(rd.queries, X)
    np.testing.assert_allclose(p.score, (pk.score + pl.score) / 2, atol=1e-9)
    # routes each cluster to its cheap model at a moderate trade-off, to the dear one at λ=0 (it dominates)
    d = ens.decide(rd.queries, X, lam=50)
    assert [x.candidate.model for x in d[:4]] == ["a", "b", "a", "b"]
    assert all(x.candidate.model == "c" for x in ens.decide(rd.queries, X, lam=0.0))
    back = load_router(ens.save(tmp_path / "ens"))
    np.testing.assert_allclose(back.predict(rd.queries, X).score, p.score)


def test_ensemble_weights_and_errors():
    rd, X = _data()
    w = make_router("ensemble", members="knn,linear", weights="3/1").fit(rd, X)
    pk = make_router("knn").fit(rd, X).predict(rd.queries, X)
    pl = make_router("linear").fit(rd, X).predict(rd.queries, X)
    np.testing.assert_allclose(w.predict(rd.queries, X).score, 0.75 * pk.score + 0.25 * pl.score, atol=1e-9)
    with pytest.raises(ValueError, match="weights"):
        make_router("ensemble", members="knn,linear", weights="1")
    with pytest.raises(ValueError, match="oracle"):
        make_router("ensemble", members="knn,oracle").fit(rd, X)


def test_ensemble_reuses_members_fitted_on_the_same_split_and_seed():
    rd, X = _data()
    mlp = make_router("mlp", seed=3, epochs=5).fit(rd, X)
    ens = make_router("ensemble", members="mlp,linear", seed=3)
    ens.reuse = {"mlp": mlp}
    ens.fit(rd, X)
    assert ens.members[0] is mlp and ens.reuse == {}
    assert ens.members[1] is not mlp and ens.members[1].name == "linear"
    other = make_router("ensemble", members="mlp", seed=4)  # another seed: the member is fitted afresh
    other.reuse = {"mlp": mlp}
    other.fit(rd, X)
    assert other.members[0] is not mlp and other.members[0].params["seed"] == 4


def test_bench_fits_ensemble_members_once(monkeypatch):
    from routecraft.evaluate.bench import run_bench
    from routecraft.routers.linear import LinearRouter

    rd, X = _data()
    calls = []
    orig = LinearRouter.fit
    monkeypatch.setattr(LinearRouter, "fit", lambda self, *a, **k: (calls.append(1), orig(self, *a, **k))[1])
    res = run_bench(rd, ["linear", "ensemble:members=linear"], seeds=[0], features=X, n_lambdas=5)
    assert len(calls) == 1  # the ensemble took the bench's fitted linear router
    assert len(res.routers) == 2 and res.routers[0] == "linear"
