"""The joint router over (model, strategy, budget) on tables whose right answers are known
(tests/_reasoning_tables.py): it must find the budget threshold per cluster, predict budgets it never saw, choose
its blend with RTR and R2-Router by validation (and so at least match the better of them), round-trip through an
artifact and cold-start a new model."""

from __future__ import annotations

import numpy as np
import pytest

from _reasoning_tables import NEED, budget_table
from routecraft.routers import choose, load_router, make_router
from routecraft.routers.joint import BLENDS, MEMBERS, blend, budget_encoding
from routecraft.routers.token_budget import routing_area

MODELS = ("ma", "mb", "mc")
STRATS = ("cot", "direct")
#: smaller networks than the default (hidden 768) keep this file fast on a shared CPU; the members: RTR with
#: loss-based early stopping, R2-Router with the released code's Ridge
NET = {"hidden": 256, "epochs": 60, "pool": None}
MEMBER_KW = {"rtr": {"cls_val_metric": "loss", "hidden": 256, "epochs": 60}, "r2": {"head": "ridge"}}


@pytest.fixture(scope="module")
def table():
    train, Xtr, _ = budget_table(300, seed=0, prefix="tr", models=MODELS, strategies=STRATS)
    test, Xte, cl = budget_table(200, seed=1, prefix="te", models=MODELS, strategies=STRATS)
    return train, Xtr, test, Xte, cl


@pytest.fixture(scope="module")
def alone(table):
    train, Xtr, *_ = table
    return make_router("joint", ensemble="none", extra_budgets=[96], **NET).fit(train, Xtr)


@pytest.fixture(scope="module")
def auto(table):
    train, Xtr, *_ = table
    return make_router("joint", **NET, **MEMBER_KW).fit(train, Xtr)


def col(pred, cid):
    return [c.id for c in pred.candidates].index(cid)


def test_one_network_over_model_strategy_and_budget(alone, table):
    _, Xtr, test, Xte, cl = table
    d, t = Xtr.shape[1], alone.Tm_.shape[1]
    # + (log budget, is_default) + interpolation weights over the 4 data budgets
    assert alone.input_dim == d + 2 * t + 2 * d + 2 + 4
    assert alone.units_ == ["cot", "direct"]  # a strategy is one entity whatever its budget
    np.testing.assert_array_equal(budget_encoding(64), [np.log(64), 0.0])
    np.testing.assert_array_equal(budget_encoding(None), [0.0, 1.0])
    grid = [32, 64, 128, 256]
    np.testing.assert_allclose(budget_encoding(96, grid), [np.log(96), 0, 0, 0.5, 0.5, 0])
    np.testing.assert_allclose(budget_encoding(64, grid), [np.log(64), 0, 0, 1, 0, 0])
    np.testing.assert_allclose(budget_encoding(1000, grid), [np.log(1000), 0, 0, 0, 0, 1])
    np.testing.assert_allclose(budget_encoding(None, grid), [0, 1, 0, 0, 0, 0])
    r = make_router("joint", ensemble="none", budget_grid=False, pool=None, epochs=3).fit(*table[:2])
    assert r.input_dim == d + 2 * t + 2 * d + 2
    pred = alone.predict(test.queries, Xte)
    for m in MODELS:
        for b in (32, 64, 128, 256):
            q = pred.score[:, col(pred, f"{m}|cot|{b}")]
            for c in (0, 1):
                mean = q[cl == c].mean()
                assert (mean < 0.25) if b < NEED[c] else (mean > 0.4), (m, b, c, mean)
        assert pred.score[:, col(pred, f"{m}|direct|default")].mean() < 0.35
    # a budget it never saw: 96 tokens suffice for cluster 0 (needs 50), not for cluster 1 (needs 150)
    q96 = pred.score[:, col(pred, "mc|cot|96")]
    assert q96[cl == 0].mean() > 0.6 and q96[cl == 1].mean() < 0.3
    assert pred.tokens[:, col(pred, "mc|cot|96")].mean() < pred.tokens[:, col(pred, "mc|cot|256")].mean()
    # routing among mc's budgets at λ = 500 (1 point of quality = $0.002): the cheapest sufficient budget
    from routecraft.routers.base import Prediction

    keep = [j for j, c in enumerate(pred.candidates) if c.model == "mc" and c.strategy == "cot"]
    sub = Prediction([pred.candidates[j] for j in keep], pred.score[:, keep], pred.cost[:, keep])
    chosen = np.array([sub.candidates[j].budget or 0 for j in choose(sub, lam=500.0)])
    assert np.isin(chosen[cl == 0], (64, 96)).mean() >= 0.9
    assert (chosen[cl == 1] == 256).mean() >= 0.9


def test_blend_is_chosen_by_validation(auto, table):
    _, _, test, Xte, _ = table
    sel = auto.selection_
    assert set(sel["areas"]) == {"joint", "rtr", "r2", "mean(joint+rtr)", "mean(joint+r2)", "mean(rtr+r2)",
                                 "mean(joint+rtr+r2)"}
    assert sel["areas"][sel["chosen"]] == max(sel["areas"].values())
    assert sel["n_select_queries"] == 60
    assert auto.members_["rtr"].params["cls_val_metric"] == "loss"
    assert auto.members_["r2"].params["head"] == "ridge"
    preds = auto._member_predictions(test.queries, Xte)
    want = blend(preds, auto.weights_)
    got = auto.predict(test.queries, Xte)
    np.testing.assert_allclose(got.score, want.score)
    np.testing.assert_allclose(got.cost, want.cost)
    # every blend is the weighted mean of its members
    w = (0.5, 0.0, 0.5)
    b = blend(preds, w)
    r2cols = [col(preds["r2"], c.id) for c in b.candidates]
    np.testing.assert_allclose(b.score, (preds["joint"].score + preds["r2"].score[:, r2cols]) / 2)
    assert len(BLENDS) == 7 and MEMBERS == ("joint", "rtr", "r2")


def test_at_least_matches_the_better_of_rtr_and_r2(auto, table):
    train, Xtr, test, Xte, _ = table
    truth = test.matrices()
    rtr = make_router("rtr", pool=None, **MEMBER_KW["rtr"]).fit(train, Xtr)
    r2 = make_router("r2", pool=None, **MEMBER_KW["r2"]).fit(train, Xtr)
    areas = {}
    for name, r in (("joint", auto), ("rtr", rtr), ("r2", r2)):
        p = r.predict(test.queries, Xte)
        j = [col(p, c.id) for c in truth.candidates]
        areas[name] = routing_area(p.score[:, j], p.cost[:, j], truth.score, truth.cost)
    assert areas["joint"] >= max(areas["rtr"], areas["r2"]) - 0.01, areas


def test_save_load_round_trip(auto, alone, table, tmp_path):
    _, _, test, Xte, _ = table
    for name, r in (("auto", auto), ("alone", alone)):
        r.save(tmp_path / name)
        back = load_router(tmp_path / name)
        a, b = r.predict(test.queries, Xte), back.predict(test.queries, Xte)
        assert [c.id for c in a.candidates] == [c.id for c in b.candidates]
        np.testing.assert_array_equal(a.score, b.score)
        np.testing.assert_array_equal(a.cost, b.cost)


def test_cold_start_a_new_model(table):
    train, Xtr, test, Xte, cl = table
    old = train.filter_candidates([c for c in train.candidates if c.model != "mb"])
    r = make_router("joint", ensemble="none", **NET).fit(old, Xtr)
    before = r.predict(test.queries, Xte)
    few = train.subset(train.queries["query_id"][:40]).filter_candidates(
        [c for c in train.candidates if c.model == "mb"])
    r.add_candidates(few, Xtr[:40])
    after = r.predict(test.queries, Xte)
    n_old = len(before.candidates)
    np.testing.assert_allclose(after.score[:, :n_old], before.score[:, :n_old])
    q64 = after.score[:, col(after, "mb|cot|64")]
    assert q64[cl == 0].mean() > q64[cl == 1].mean() + 0.3  # the budget structure carries over to the new model


def test_bad_settings():
    with pytest.raises(ValueError, match="ensemble"):
        make_router("joint", ensemble="max")
    with pytest.raises(ValueError, match="budgets must be positive"):
        make_router("joint", extra_budgets=[-5])
    assert make_router("joint").params["cls_val_metric"] == "loss"


def test_chosen_members_are_refitted_on_all_training_queries(auto, table):
    """The blend is chosen on held-out training queries; its members are then fitted again on all of them, so a
    member in the blend predicts exactly as the same router fitted alone on the whole training split."""
    train, Xtr, test, Xte, _ = table
    assert auto.selection_["refit"] is True
    used = [m for m, w in zip(MEMBERS, auto.weights_) if w > 0 and m != "joint"]
    assert used, f"this table's chosen blend ({auto.chosen_blend}) has no RTR/R2 member to check"
    for m in used:
        fresh = make_router(m, pool=None, **MEMBER_KW[m]).fit(train, Xtr)
        np.testing.assert_allclose(auto.members_[m].predict(test.queries, Xte).score,
                                   fresh.predict(test.queries, Xte).score, rtol=1e-5, atol=1e-6)
    held_out_only = make_router("joint", **NET, **MEMBER_KW, refit=False).fit(train, Xtr)
    assert held_out_only.selection_["refit"] is False
    m = used[0]
    # without the refit the member saw 80% of the queries and predicts differently
    assert not np.allclose(held_out_only.members_[m].predict(test.queries, Xte).score,
                           auto.members_[m].predict(test.queries, Xte).score, atol=1e-4)


def test_blend_chosen_on_k_folds_holds_out_every_training_query(table):
    train, Xtr, test, Xte, _ = table
    small = {"hidden": 64, "epochs": 8, "pool": None}
    r = make_router("joint", **small, rtr={"hidden": 64, "epochs": 8}, r2={"head": "ridge"},
                    select_folds=3).fit(train, Xtr)
    sel = r.selection_
    assert sel["folds"] == 3 and sel["n_select_queries"] == len(train.queries) and sel["refit"] is True
    assert sel["areas"][sel["chosen"]] == max(sel["areas"].values())
    # the chosen members were fitted again on the whole training split
    used = [m for m, w in zip(MEMBERS, r.weights_) if w > 0 and m != "joint"]
    for m in used:
        kw = {"hidden": 64, "epochs": 8} if m == "rtr" else {"head": "ridge"}
        fresh = make_router(m, pool=None, **kw).fit(train, Xtr)
        np.testing.assert_allclose(r.members_[m].predict(test.queries, Xte).score,
                                   fresh.predict(test.queries, Xte).score, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        make_router("joint", select_folds=0)
