"""R2-Router on tables whose right answers are known (tests/_reasoning_tables.py), the interpolation between anchor
budgets, the λ' form, the execution plan, artifacts, cold start, and a model-only run on ZeroEval GSM8K."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from _reasoning_tables import NEED, PRICE, budget_table
from routecraft.data.schema import Candidate
from routecraft.routers import choose, load_router, make_router
from routecraft.routers.r2_router import interpolate
from routecraft.routers.token_budget import r2_lambda


@pytest.fixture(scope="module")
def table():
    train, Xtr, _ = budget_table(400, seed=0, prefix="tr")
    test, Xte, cl = budget_table(200, seed=1, prefix="te")
    return train, Xtr, test, Xte, cl


@pytest.fixture(scope="module")
def ridge(table):
    train, Xtr, *_ = table
    return make_router("r2", head="ridge", pool=None, extra_budgets=[96, 512]).fit(train, Xtr)


def col(pred, cid):
    return [c.id for c in pred.candidates].index(cid)


def test_quality_follows_the_budget_threshold(ridge, table):
    _, _, test, Xte, cl = table
    pred = ridge.predict(test.queries, Xte)
    for m in ("ma", "mb", "mc"):
        for b in (32, 64, 128, 256):
            q = pred.score[:, col(pred, f"{m}|cot|{b}")]
            for c in (0, 1):
                want_low = b < NEED[c]
                mean = q[cl == c].mean()
                assert (mean < 0.2) if want_low else (mean > 0.45), (m, b, c, mean)


def test_routes_to_the_cheapest_sufficient_budget(ridge, table):
    _, _, test, Xte, cl = table
    pred = ridge.predict(test.queries, Xte)
    keep = [j for j, c in enumerate(pred.candidates) if c.model == "mc" and c.budget in (None, 32, 64, 128, 256)]
    from routecraft.routers.base import Prediction

    sub = Prediction([pred.candidates[j] for j in keep], pred.score[:, keep], pred.cost[:, keep], pred.tokens[:, keep])
    # 1 point of quality is worth $0.002: a 64-token answer on mc costs ~$0.0004, 256 tokens ~$0.0013
    idx = choose(sub, lam=300.0)
    chosen = np.array([sub.candidates[j].budget or 0 for j in idx])
    assert (chosen[cl == 0] == 64).mean() >= 0.9
    assert (chosen[cl == 1] == 256).mean() >= 0.9  # the default budget answers with ~450 tokens


def test_interpolation_midpoint_is_the_mean_of_its_anchors(ridge, table):
    _, _, test, Xte, _ = table
    pred = ridge.predict(test.queries, Xte)
    for m in ("ma", "mb", "mc"):
        mid = pred.score[:, col(pred, f"{m}|cot|96")]
        lo, hi = pred.score[:, col(pred, f"{m}|cot|64")], pred.score[:, col(pred, f"{m}|cot|128")]
        np.testing.assert_allclose(mid, (lo + hi) / 2)
        # the extra budget's cost is priced at the budget itself (released code): 96 output tokens
        pi, po = PRICE[m]
        np.testing.assert_allclose(pred.cost[:, col(pred, f"{m}|cot|96")], 60 * pi + 96 * po, rtol=1e-6)
        assert (pred.tokens[:, col(pred, f"{m}|cot|96")] == 96).all()
        # beyond the last anchor: linear extrapolation from 128 and 256, clipped to [0, 1]
        ext = pred.score[:, col(pred, f"{m}|cot|512")]
        s128, s256 = pred.score[:, col(pred, f"{m}|cot|128")], pred.score[:, col(pred, f"{m}|cot|256")]
        np.testing.assert_allclose(ext, np.clip(s256 + 2 * (s256 - s128), 0, 1))


def test_interpolate_function():
    v = np.array([[0.0, 1.0, 3.0]])
    out = interpolate(np.array([10, 20, 40]), v, np.array([10, 15, 30, 40, 50, 5]))
    np.testing.assert_allclose(out, [[0.0, 0.5, 2.0, 3.0, 4.0, -0.5]])
    out = interpolate(np.array([10, 20, 40]), v, np.array([50, 5]), extrapolate=False)
    np.testing.assert_allclose(out, [[3.0, 0.0]])


def test_fewer_anchors_interpolate_the_other_budgets(table):
    train, Xtr, test, Xte, _ = table
    r = make_router("r2", head="ridge", pool=None, anchors=2).fit(train, Xtr)
    assert r.groups_[("mc", "cot")]["budgets"] == [32, 256]
    pred = r.predict(test.queries, Xte)
    s32, s256 = pred.score[:, col(pred, "mc|cot|32")], pred.score[:, col(pred, "mc|cot|256")]
    np.testing.assert_allclose(pred.score[:, col(pred, "mc|cot|128")],
                               np.clip(s32 + (128 - 32) / (256 - 32) * (s256 - s32), 0, 1))


def test_token_predictor_and_budget_cost_modes(table, ridge):
    train, Xtr, test, Xte, cl = table
    pred = ridge.predict(test.queries, Xte)
    # unbounded: ~3 x the need (150 / 450 tokens)
    t = pred.tokens[:, col(pred, "mb|cot|default")]
    assert abs(t[cl == 0].mean() - 150) < 15 and abs(t[cl == 1].mean() - 450) < 30
    assert (pred.tokens[:, col(pred, "mb|cot|64")] == 64).all()
    r = make_router("r2", head="ridge", pool=None, budget_cost="predicted").fit(train, Xtr)
    p2 = r.predict(test.queries, Xte)
    t64 = p2.tokens[:, col(p2, "mb|cot|64")]
    assert abs(t64.mean() - 74) < 3  # min(64 + 10, natural length)
    t256 = p2.tokens[:, col(p2, "mb|cot|256")]
    assert abs(t256[cl == 0].mean() - 150) < 15 and abs(t256[cl == 1].mean() - 266) < 10
    pi, po = PRICE["mb"]
    np.testing.assert_allclose(p2.cost[:, col(p2, "mb|cot|64")], 60 * pi + t64 * po, rtol=1e-6)


def test_paper_mlp_head(table):
    train, Xtr, test, Xte, cl = table
    train = train.filter_candidates([c for c in train.candidates if c.model == "mc"])  # 5 heads: faster
    r = make_router("r2", pool=None, extra_budgets=[96]).fit(train, Xtr)  # defaults: the paper's MLP
    assert r.params["head"] == "mlp" and r.params["hidden"] == [256, 128, 64] and r.params["lr"] == 1e-4
    pred = r.predict(test.queries, Xte)
    assert ((pred.score >= 0) & (pred.score <= 1)).all()
    q64 = pred.score[:, col(pred, "mc|cot|64")]
    q256 = pred.score[:, col(pred, "mc|cot|256")]
    assert q64[cl == 0].mean() > q64[cl == 1].mean() + 0.3  # cluster 1 needs 150 tokens
    assert q256[cl == 1].mean() > q64[cl == 1].mean() + 0.3
    mid = pred.score[:, col(pred, "mc|cot|96")]
    np.testing.assert_allclose(mid, (q64 + pred.score[:, col(pred, "mc|cot|128")]) / 2)


def test_lambda_prime_form(ridge, table):
    _, _, test, Xte, _ = table
    q, X = test.queries.iloc[:30], Xte[:30]
    assert r2_lambda(0.5) == 1.0 and r2_lambda(0.0) == 0.0 and r2_lambda(1.0) == float("inf")
    with pytest.raises(ValueError, match="lambda'"):
        r2_lambda(1.5)
    a = [d.candidate for d in ridge.decide_r2(q, X, lam_prime=0.999)]
    b = [d.candidate for d in ridge.decide(q, X, lam=0.999 / 0.001)]
    assert a == b
    pred = ridge.predict(q, X)
    cheapest = [d.candidate for d in ridge.decide_r2(q, X, lam_prime=1.0)]
    assert cheapest == [pred.candidates[j] for j in pred.cost.argmin(axis=1)]
    best = [d.candidate for d in ridge.decide_r2(q, X, lam_prime=0.0)]
    assert best == [pred.candidates[j] for j in choose(pred, lam=0.0)]


def test_decision_plan_carries_the_length_instruction(ridge, table):
    _, _, test, Xte, _ = table
    d = ridge.decide(test.queries.iloc[:1], Xte[:1], lam=1e9, extra_budgets=[])[0]
    assert d.candidate.budget is not None
    assert d.plan["instruction"] == f"Use at most {d.candidate.budget} tokens."
    assert d.plan["max_tokens"] == d.candidate.budget + 10
    r = make_router("r2", head="ridge", pool=None, budget_template="r2_system")
    r.set_state(ridge.state())
    r.candidates = ridge.candidates
    assert r.plan_for(Candidate("mc", "cot", 64))["instruction"].startswith("You MUST respond in 64 tokens")
    # a "default" candidate runs the plain call (the question alone, as the gateway sends it), not a direct prompt
    plain = ridge.plan_for(Candidate("mc", "default", 32))
    assert plain["strategy"] == "default" and plain["instruction"] == "Use at most 32 tokens."
    assert plain["max_tokens"] == 42
    assert ridge.plan_for(Candidate("mc", "default"))["max_tokens"] is None  # the client's cap, as served


def test_save_load_round_trip(ridge, table, tmp_path):
    _, _, test, Xte, _ = table
    ridge.save(tmp_path / "r2")
    back = load_router(tmp_path / "r2")
    a, b = ridge.predict(test.queries, Xte), back.predict(test.queries, Xte)
    assert [c.id for c in a.candidates] == [c.id for c in b.candidates]
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.cost, b.cost)


def test_cold_start_adds_a_model_without_touching_the_others(table):
    train, Xtr, test, Xte, _ = table
    old = train.filter_candidates([c for c in train.candidates if c.model != "mc"])
    r = make_router("r2", head="ridge", pool=None).fit(old, Xtr)
    before = r.predict(test.queries, Xte)
    few = train.subset(train.queries["query_id"][:40]).filter_candidates(
        [c for c in train.candidates if c.model == "mc"])
    r.add_candidates(few, Xtr[:40])
    after = r.predict(test.queries, Xte)
    n_old = len(before.candidates)
    # same numbers up to float rounding (a wider matrix product may sum in another order)
    np.testing.assert_allclose(after.score[:, :n_old], before.score[:, :n_old], rtol=1e-12, atol=1e-12)
    assert {c.model for c in after.candidates[n_old:]} == {"mc"}
    assert after.score[:, col(after, "mc|cot|default")].mean() > 0.8
    with pytest.raises(ValueError, match="no candidate the router does not know"):
        r.add_candidates(few, Xtr[:40])


def test_bad_settings_and_inputs(table):
    train, Xtr, test, Xte, _ = table
    with pytest.raises(ValueError, match="head"):
        make_router("r2", head="forest")
    with pytest.raises(ValueError, match="bogus"):
        make_router("r2", bogus=1)
    with pytest.raises(ValueError, match="budgets must be positive"):
        make_router("r2", extra_budgets=[0])
    r = make_router("r2", head="ridge", pool=None)
    with pytest.raises(ValueError, match="one row per query"):
        r.fit(train, Xtr[:10])
    o = train.outcomes.copy()
    o.loc[o["model"] == "mb", "output_tokens"] = None
    from routecraft.data.schema import RoutingData

    bad = RoutingData.from_frames(train.queries, o)
    with pytest.raises(ValueError, match="'mb'.*output_tokens"):
        r.fit(bad, Xtr)
    with pytest.raises(RuntimeError, match="not fitted"):
        make_router("r2").predict(test.queries, Xte)


def test_model_only_on_zeroeval_gsm8k():
    """ZeroEval GSM8K has one strategy and no budgets: R2-Router is per-model quality + token predictors."""
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
    r = make_router("r2", head="ridge").fit(sp.train, Xtr)
    assert all(c.budget is None for c in r.candidates) and len(r.candidates) == 5
    pred = r.predict(sp.test.queries, Xte)
    truth = sp.test.matrices(candidates=pred.candidates)
    # the fitted prices reproduce the logged costs from tokens; predicted costs track the real ones
    assert max(r.prices_.fit_error_.values()) < 0.02
    assert np.corrcoef(pred.cost.mean(0), truth.cost.mean(0))[0, 1] > 0.95
    rows = np.arange(len(truth.score))
    best = truth.score.mean(0).max()
    cheapest = truth.score[:, truth.cost.mean(0).argmin()].mean()
    s0 = truth.score[rows, choose(pred, lam=0.0)].mean()
    assert s0 >= best - 0.03
    # a moderate λ buys most of the accuracy for far less money than the best single model
    lam = 0.5 / truth.cost.mean(0).max()
    idx = choose(pred, lam=lam)
    assert truth.score[rows, idx].mean() > cheapest
    assert truth.cost[rows, idx].mean() < truth.cost.mean(0).max()


@pytest.mark.slow
def test_execute_applies_the_length_instruction(ridge, pool):
    """A budgeted decision run on a real SmolLM2 server: the length instruction and the hard cap are applied."""
    import pandas as pd

    from routecraft.pool.client import ChatClient

    question = "Tom has 3 apples and buys 4 more. How many apples does he have now?"
    _, X, _ = budget_table(1, seed=5)
    q = pd.DataFrame({"query_id": ["x"], "text": [question]})
    d = ridge.decide_r2(q, X, lam_prime=0.9999, extra_budgets=[])[0]
    assert d.candidate.budget is not None
    model = pool.get(pool.names[0])
    run = asyncio.run(ridge.execute(d, ChatClient(model), question))
    assert run.budget == d.candidate.budget
    assert run.max_tokens == d.candidate.budget + 10
    assert 0 < run.output_tokens <= d.candidate.budget + 10


def test_query_chars_counts_what_the_gateway_sends():
    """Input tokens grow with the prompt: a multiple-choice question's options count (the gateway routes on the
    text with its options), and the conversation length the gateway passes (``input_chars``) wins over the text."""
    import pandas as pd

    from routecraft.routers.token_budget import query_chars

    q = pd.DataFrame({"query_id": ["a", "b"], "text": ["Which is a metal?", "hi"], "task": ["mmlu", "trivia_qa"],
                      "choices": [["iron", "wood"], None]})
    bare = len("Which is a metal?")
    a, b = query_chars(q)
    assert a > bare + len("iron") + len("wood") and b == 2
    q["input_chars"] = [1000, None]
    assert query_chars(q).tolist() == [1000.0, 2.0]


@pytest.mark.slow
def test_a_plain_call_candidate_runs_the_plain_call_offline_as_served(ridge, pool):
    """A ``default`` candidate executes the plain call (the question alone, not a direct prompt) — in a reasoning
    router's ``execute`` and in the consultation executor Router-R1 trains with — with a budget's length instruction
    and cap as the gateway sends them. A real SmolLM2 server."""
    from routecraft.pool.client import ChatClient
    from routecraft.routers.base import Decision, Prediction
    from routecraft.routers.consult import PoolExecutor

    model = pool.get(pool.names[0])
    budgeted = Candidate(model.name, "default", 8)
    pred = Prediction([budgeted], np.array([[0.5]]), np.array([[1e-6]]))
    question = "Tell me a long story about a dragon."

    async def go():
        client = ChatClient(model)
        try:
            run = await ridge.execute(Decision.from_prediction(pred, 0, lam=0.0), client, question, "qa")
            ex = PoolExecutor({model.name: client})
            msgs = [{"role": "user", "content": question}]
            short = await ex.run_candidate(budgeted, msgs, "qa")
            plain = await ex.run_candidate(Candidate(model.name, "default"), msgs, "qa")
        finally:
            await client.aclose()
        return run, short, plain

    run, short, plain = asyncio.run(go())
    assert run.strategy == "default" and run.max_tokens == 18 and 0 < run.output_tokens <= 18
    assert 0 < short.output_tokens <= 18 and short.input_tokens > plain.input_tokens  # the length instruction
    assert short.input_tokens == run.input_tokens  # the same messages either way
