"""Route-To-Reason (RTR) on tables whose right answers are known (tests/_reasoning_tables.py): it must find which
strategy helps which model on which cluster, predict output tokens and cost, respect token/cost caps, switch its
input blocks for the ablations, round-trip through an artifact, cold-start a new model from few queries, and run as a
model-only router on ZeroEval GSM8K."""

from __future__ import annotations

import numpy as np
import pytest

from _reasoning_tables import PRICE, budget_table, strategy_table
from routecraft.data.schema import RoutingData
from routecraft.routers import choose, load_router, make_router
from routecraft.routers.networks import project
from routecraft.routers.token_budget import DEFAULT_STRATEGY_TEXT, choose_max_tokens, strategy_description

#: pool=None: the synthetic models are described by their names. Early stopping on the validation loss: the code's
#: accuracy criterion stops as soon as every cell is on the right side of 0.5 (epoch 9 here), before P(correct) is
#: calibrated enough to route (see test_paper_defaults).
FAST = {"pool": None, "seed": 0, "cls_val_metric": "loss"}


@pytest.fixture(scope="module")
def table():
    train, Xtr, _ = strategy_table(300, seed=0, prefix="tr")
    test, Xte, cl = strategy_table(200, seed=1, prefix="te")
    return train, Xtr, test, Xte, cl


@pytest.fixture(scope="module")
def rtr(table):
    train, Xtr, *_ = table
    return make_router("rtr", **FAST).fit(train, Xtr)


def col(pred, cid):
    return [c.id for c in pred.candidates].index(cid)


def test_recovers_which_strategy_helps_which_model(rtr, table):
    _, _, test, Xte, cl = table
    pred = rtr.predict(test.queries, Xte)
    a_cot, b_pal = pred.score[:, col(pred, "ma|cot|default")], pred.score[:, col(pred, "mb|pal|default")]
    assert a_cot[cl == 1].mean() > 0.75 and a_cot[cl == 0].mean() < 0.3
    assert b_pal[cl == 0].mean() > 0.75 and b_pal[cl == 1].mean() < 0.3
    assert pred.score[:, col(pred, "ma|direct|default")].mean() < 0.3
    # λ = 0: the 95% cheap experts and the 90% dear mc are close, so check a moderate λ (mc costs ~10x more):
    idx = choose(pred, lam=300.0)
    ids = np.array([pred.candidates[j].id for j in idx])
    assert (ids[cl == 1] == "ma|cot|default").mean() >= 0.85
    assert (ids[cl == 0] == "mb|pal|default").mean() >= 0.85
    # a huge λ: the cheapest candidate (ma or mb direct: ~20 output tokens)
    idx = choose(pred, lam=1e9)
    assert all(pred.candidates[j].strategy == "direct" for j in idx)


def test_paper_defaults():
    p = make_router("rtr").params
    assert (p["hidden"], p["lr"], p["epochs"], p["val_every"], p["patience"]) == (768, 1e-3, 100, 3, 5)
    assert p["cls_val_metric"] == "accuracy" and p["token_target"] == "raw" and p["features"] == "combined"
    assert p["emb_dim"] is None  # = the query encoder's dimension


def test_predicts_tokens_and_prices(rtr, table):
    _, _, test, Xte, cl = table
    pred = rtr.predict(test.queries, Xte)
    truth = test.matrices(candidates=pred.candidates)
    rel = np.abs(pred.tokens - truth.output_tokens).mean() / truth.output_tokens.mean()
    assert rel < 0.15, rel
    for m, (pi, po) in PRICE.items():
        if m in rtr.prices_.price_out_:
            assert rtr.prices_.price_in_[m] == pytest.approx(pi, rel=1e-6)
            assert rtr.prices_.price_out_[m] == pytest.approx(po, rel=1e-6)
    j = col(pred, "mc|cot|default")
    np.testing.assert_allclose(pred.cost[:, j], 50 * PRICE["mc"][0] + pred.tokens[:, j] * PRICE["mc"][1], rtol=1e-3)
    assert rtr.train_info_["n_val_queries"] == 30


def test_token_cap_and_cost_cap(rtr, table):
    _, _, test, Xte, _ = table
    q, X = test.queries.iloc[:40], Xte[:40]
    pred = rtr.predict(q, X)
    for cap in (30, 150, 400):
        decisions = rtr.decide(q, X, max_tokens=cap)
        for i, d in enumerate(decisions):
            j = col(pred, d.candidate.id)
            fits = pred.tokens[i] <= cap
            if fits.any():
                assert pred.tokens[i, j] <= cap
                assert pred.score[i, j] == pytest.approx(pred.score[i][fits].max())
            else:
                assert j == pred.tokens[i].argmin()
    idx = choose_max_tokens(pred, 1.0)  # nothing fits: the fewest predicted tokens
    np.testing.assert_array_equal(idx, pred.tokens.argmin(axis=1))
    cap = float(np.median(pred.cost))
    for i, d in enumerate(rtr.decide(q, X, max_cost=cap)):
        assert d.predicted_cost <= cap or d.predicted_cost == pred.cost[i].min()
    with pytest.raises(ValueError, match="at most one"):
        rtr.decide(q, X, max_cost=1.0, max_tokens=10)
    d = rtr.decide(q.iloc[:1], X[:1])[0]
    assert {"predicted_tokens", "predicted_score", "predicted_cost"} <= set(d.table[0])
    assert len(d.table) == len(rtr.candidates)


@pytest.mark.parametrize("features", ["text", "learnable"])
def test_ablation_switches_change_the_input(table, rtr, features):
    train, Xtr, test, Xte, cl = table
    d, t = Xtr.shape[1], rtr.Tm_.shape[1]
    assert rtr.input_dim == d + 2 * t + 2 * d  # combined: learnable dims = the query encoder's (16 here)
    r = make_router("rtr", features=features, **FAST).fit(train, Xtr)
    assert r.input_dim == (d + 2 * t if features == "text" else d + 2 * d)
    assert ("em" in r.net_["cls"]) == (features == "learnable")
    # learnable tables alone still separate the candidates
    if features == "learnable":
        pred = r.predict(test.queries, Xte)
        a_cot = pred.score[:, col(pred, "ma|cot|default")]
        assert a_cot[cl == 1].mean() > a_cot[cl == 0].mean() + 0.4


def test_save_load_round_trip(rtr, table, tmp_path):
    _, _, test, Xte, _ = table
    rtr.save(tmp_path / "rtr")
    back = load_router(tmp_path / "rtr")
    assert back.params == rtr.params
    a, b = rtr.predict(test.queries, Xte), back.predict(test.queries, Xte)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.cost, b.cost)


def test_cold_start_a_new_model_from_few_queries():
    """A new model 'me' that behaves like the known 'mb' (pal right on cluster 0), added from 40 labelled queries:
    only its embedding rows move, the known candidates' predictions are unchanged, and it learns its structure."""
    models = ("ma", "mb", "mc", "me")
    train, Xtr, _ = strategy_table(300, seed=0, prefix="tr", models=models)
    test, Xte, cl = strategy_table(200, seed=1, prefix="te", models=models)
    old = train.filter_candidates([c for c in train.candidates if c.model != "me"])
    r = make_router("rtr", **FAST).fit(old, Xtr)
    frozen = {h: {k: v.copy() for k, v in r.net_[h].items()} for h in r.net_}
    before = r.predict(test.queries, Xte)  # fills the candidate-part cache, which add_candidates must refresh
    k = 40
    few = train.subset(train.queries["query_id"][:k]).filter_candidates(
        [c for c in train.candidates if c.model == "me"])
    r.add_candidates(few, Xtr[:k])
    assert r.cold_info_["new_models"] == ["me"] and r.cold_info_["new_units"] == []
    for h in r.net_:  # only the new model's embedding rows moved
        for key, v in frozen[h].items():
            if key == "em":
                np.testing.assert_array_equal(r.net_[h][key][: len(v)], v)
                assert r.net_[h][key].shape[0] == len(v) + 1
            else:
                np.testing.assert_array_equal(r.net_[h][key], v)
    after = r.predict(test.queries, Xte)
    n_old = len(before.candidates)
    np.testing.assert_allclose(after.score[:, :n_old], before.score[:, :n_old])
    e_pal = after.score[:, col(after, "me|pal|default")]
    assert e_pal[cl == 0].mean() > e_pal[cl == 1].mean() + 0.3, (e_pal[cl == 0].mean(), e_pal[cl == 1].mean())
    assert after.score[:, col(after, "me|direct|default")].mean() < 0.35
    assert r.prices_.price_out_["me"] == pytest.approx(PRICE["me"][1], rel=1e-6)
    with pytest.raises(ValueError, match="does not know"):
        r.add_candidates(few, Xtr[:k])
    # the per-candidate part of the first layer is cached between predictions: what it gives equals a forward
    # pass that computes it afresh, also after the cold start moved the new model's embedding
    from routecraft.routers.networks import net_forward_np

    fresh = net_forward_np(r.net_, r.layout_, Xte, r.cm_, r.cs_, r.cb_, r.Tm_, r.Ts_, "cls",
                           r.params["token_target"])
    np.testing.assert_allclose(r.predict(test.queries, Xte).score, fresh)
    assert "_cand_part" in r.__dict__ and "_cand_part" not in r.state()


def test_description_projection():
    T = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    E = np.array([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [2.0, 2.0, 1.0]])
    # E = 2 T (+ 1 in the last column) exactly: a weak ridge recovers it for a new description
    np.testing.assert_allclose(project(T, E, np.array([[0.5, 0.5]]), 1e-9), [[1.0, 1.0, 1.0]], atol=1e-6)
    # a strong ridge shrinks to the mean of the known embeddings
    np.testing.assert_allclose(project(T, E, np.array([[5.0, -3.0]]), 1e9), [E.mean(0)], atol=1e-6)


def test_fits_incomplete_tables_and_budget_units(table):
    """Rows, not a full matrix: a candidate logged on few queries is still learnt (the cold-start baseline);
    a limited budget is its own strategy unit with the length instruction in its description."""
    train, Xtr, _, _, _ = table
    keep = set(train.queries["query_id"][:50])
    o = train.outcomes[(train.outcomes["model"] != "mc") | train.outcomes["query_id"].isin(keep)]
    r = make_router("rtr", epochs=3, **FAST).fit(RoutingData(train.queries, o), Xtr)
    assert len(r.candidates) == 9
    b, Xb, _ = budget_table(60, seed=3)
    r = make_router("rtr", epochs=3, **FAST).fit(b, Xb)
    assert "cot@64" in r.units_ and "cot" in r.units_
    assert r.unit_texts_[r.units_.index("cot@64")] == strategy_description("cot", 64)
    assert "Use at most 64 tokens." in strategy_description("cot", 64)
    assert strategy_description("default") == DEFAULT_STRATEGY_TEXT


def test_paper_token_objective(table, rtr):
    train, Xtr, test, Xte, _ = table
    r = make_router("rtr", cost_unit="tokens", token_scale=100.0, **FAST)
    r.set_state(rtr.state())
    r.candidates = rtr.candidates
    p = r.predict(test.queries, Xte)
    np.testing.assert_allclose(p.cost, p.tokens / 100.0)


def test_bad_settings_and_inputs(table, rtr):
    train, Xtr, test, Xte, _ = table
    with pytest.raises(ValueError, match="features"):
        make_router("rtr", features="both")
    with pytest.raises(ValueError, match="hiddn"):
        make_router("rtr", hiddn=3)
    with pytest.raises(ValueError, match="dimension"):
        rtr.predict(test.queries, Xte[:, :8])
    with pytest.raises(RuntimeError, match="not fitted"):
        make_router("rtr").predict(test.queries, Xte)
    o = train.outcomes.copy()
    o["output_tokens"] = None
    with pytest.raises(ValueError, match="output_tokens"):
        make_router("rtr", **FAST).fit(RoutingData.from_frames(train.queries, o), Xtr)


def test_descriptions_come_from_the_pool(table):
    from routecraft.pool.config import load_pool
    from routecraft.routers.token_budget import model_descriptions

    pool = load_pool("local")
    d = model_descriptions(["qwen2.5-coder-1.5b", "not-in-pool"], "local")
    assert d["qwen2.5-coder-1.5b"] == pool.get("qwen2.5-coder-1.5b").description
    assert d["not-in-pool"] == "not-in-pool"


def test_model_only_on_zeroeval_gsm8k():
    """ZeroEval GSM8K has one strategy: RTR is a model-only router there."""
    from routecraft.data.features import EmbeddingCache, features_for
    from routecraft.data.importers import load_builtin

    data = load_builtin("zeroeval-gsm8k")
    models = ["gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "Meta-Llama-3-8B-Instruct", "gemma-2-2b-it",
              "claude-3-haiku-20240307"]
    data = data.filter_candidates(models).complete()
    data = data.subset(sorted(data.queries["query_id"])[:600])
    X = EmbeddingCache().embed(data.queries["text"].tolist())
    sp = data.split(seed=0, fractions=(0.7, 0.0, 0.3))
    feats = features_for(data, X)
    Xtr, Xte = feats(sp.train), feats(sp.test)
    r = make_router("rtr").fit(sp.train, Xtr)
    assert r.units_ == ["default"] and len(r.models_) == 5
    pred = r.predict(sp.test.queries, Xte)
    truth = sp.test.matrices(candidates=pred.candidates)
    rows = np.arange(len(truth.score))
    best = truth.score.mean(0).max()
    assert truth.score[rows, choose(pred, lam=0.0)].mean() >= best - 0.03
    # predicted mean tokens per model track the real ones
    assert np.corrcoef(pred.tokens.mean(0), truth.output_tokens.mean(0))[0, 1] > 0.9
    lam = 0.5 / truth.cost.mean(0).max()
    idx = choose(pred, lam=lam)
    assert truth.cost[rows, idx].mean() < truth.cost.mean(0).max()
    assert truth.score[rows, idx].mean() > truth.score[:, truth.cost.mean(0).argmin()].mean()
