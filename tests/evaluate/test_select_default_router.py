"""benchmarks/select_default_router.py: held-out replay as the gateway serves — an inapplicable strategy is never
the pick, a pick is scored by its collected cell, filled cells never help, the rule selects only a router that beats
the heuristic at every trade-off."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _benchmarks import load_benchmark
from routecraft.data.query_text import query_texts
from routecraft.data.schema import Candidate, RoutingData
from routecraft.routers.base import Decision, Prediction


@pytest.fixture(scope="module")
def sel():
    return load_benchmark("select_default_router", register=True)


def test_gateway_pick_drops_an_inapplicable_strategy(sel):
    cands = [Candidate("m", "pal"), Candidate("m", "cot"), Candidate("m", "direct")]
    pred = Prediction(cands, np.array([[0.9, 0.6, 0.5]]), np.array([[1e-5, 2e-5, 1e-6]]))
    d = Decision.from_prediction(pred, 0, lam=0.0)
    assert d.candidate.strategy == "pal"
    assert sel.gateway_pick(d, "code", 0.0).strategy == "cot"  # a program is the answer: PAL dropped
    assert sel.gateway_pick(d, "numeric", 0.0).strategy == "pal"
    assert sel.gateway_pick(d, "generation", 1e6).strategy == "direct"  # the same rule on what is left
    # PAL applies to a multiple-choice question, but without a collected cell there the next choice is scored
    assert sel.gateway_pick(d, "choice", 0.0).strategy == "pal"
    collected = {Candidate("m", "cot").id, Candidate("m", "direct").id}
    assert sel.gateway_pick(d, "choice", 0.0, collected).strategy == "cot"
    # the served heuristic's plain call is scored on the model's direct cell where it was not collected, on its
    # own cell where it was (an open question); a filled plain-call cell is not its own
    idx = {Candidate("m", "direct").id: 4}
    assert sel.cell_of(idx, Candidate("m", "default")) == 4
    with pytest.raises(KeyError, match="no collected cell"):
        sel.cell_of(idx, Candidate("m", "cot"))
    idx[Candidate("m", "default").id] = 7
    plain, direct = Candidate("m", "default"), Candidate("m", "direct")
    assert sel.cell_of(idx, plain, {plain.id, direct.id}) == 7
    assert sel.cell_of(idx, plain, {direct.id}) == 4


def _collection(n_per=6, seed=0, plain=False):
    """Arithmetic questions that only PAL of the big model solves, multiple-choice questions that only the small
    model's direct answer gets right (PAL never collected on them)."""
    rng = np.random.default_rng(seed)
    q, o = [], []
    for i in range(n_per):
        q.append({"query_id": f"n{i}", "text": f"How many apples in total if Tom has {i + 2} and buys {i + 3}?",
                  "task": "gsm8k", "gold": str(2 * i + 5)})
        q.append({"query_id": f"c{i}", "text": f"Which is a fruit? {i}\n(A) apple\n(B) stone\n(C) car",
                  "task": "mmlu", "gold": "A"})
    for row in q:
        num = row["task"] == "gsm8k"
        for m, price in (("small", 1e-7), ("big", 1e-6)):
            for s in ("direct", "cot") + (("pal",) if num else ()) + (("default",) if plain else ()):
                win = (num and m == "big" and s == "pal") or (not num and m == "small" and s == "direct")
                o.append({"query_id": row["query_id"], "model": m, "strategy": s, "score": float(win),
                          "cost_usd": price * (50 + rng.integers(0, 20)), "prediction": "x"})
    return RoutingData.from_frames(pd.DataFrame(q), pd.DataFrame(o))


def test_replay_scores_the_collected_cell_and_fills_never_help(sel):
    rd = _collection()
    sub, cands, filled = sel.prepared(rd, ["small", "big"])
    assert filled == 12 and len(sub.queries) == 12  # PAL of both models on the 6 multiple-choice questions
    assert {c.id for c in cands} == {Candidate(m, s).id for m in ("small", "big") for s in ("direct", "cot", "pal")}
    texts = query_texts(sub.queries)
    seen = [sel.query_kind(t) for t in texts]
    assert seen.count("choice") == 6 and seen.count("numeric") == 6
    ref = sel.reference(sub, sub, cands, {"quality": 0.0})
    assert ref["oracle"]["quality"]["accuracy"] == 1.0
    # no single candidate is right on both tasks (big PAL's multiple-choice cells are fills: 0)
    best = ref["best single"]["quality"]
    assert best["accuracy"] == 0.5
    assert sorted(v["accuracy"] for v in best["per_task"].values()) == [0.0, 1.0]
    X = np.eye(12)[:, :12]
    r = sel.make_router("linear")
    r.fit(sub, X)
    res = sel.replay(r, sub, X, cands, {"quality": 0.0}, texts, seen)["quality"]
    # a learned router that knows both tasks: PAL on arithmetic, never PAL on the letters (the gateway drops it)
    assert res["per_task"]["gsm8k"]["top_pick"] == Candidate("big", "pal").id
    assert res["per_task"]["mmlu"]["top_pick"] != Candidate("big", "pal").id
    truth = sub.matrices(candidates=cands)
    assert res["accuracy"] <= truth.score.max(1).mean() + 1e-12
    # an open question (detected qa) is routed by the open router instead, as routecraft/auto does
    plain = sel.make_router("fixed", candidate="small|cot|default").fit(sub)
    as_open = ["qa" if k == "numeric" else k for k in seen]
    res = sel.replay(r, sub, X, cands, {"quality": 0.0}, texts, as_open, open_router=plain)["quality"]
    assert res["per_task"]["gsm8k"]["top_pick"] == Candidate("small", "cot").id
    assert res["per_task"]["gsm8k"]["top_share"] == 1.0 and res["per_task"]["gsm8k"]["accuracy"] == 0.0
    assert res["per_task"]["mmlu"]["top_pick"] != Candidate("small", "cot").id
    # a router that has a plain-call candidate routes open questions itself (the gateway leaves them to it)
    sub2, cands2, _ = sel.prepared(_collection(plain=True), ["small", "big"])
    assert Candidate("small", "default").id in {c.id for c in cands2}
    r2 = sel.make_router("linear")
    r2.fit(sub2, X)
    mine = sel.replay(r2, sub2, X, cands2, {"quality": 0.0}, texts, as_open, open_router=plain)["quality"]
    assert mine["per_task"]["gsm8k"]["top_pick"] == Candidate("big", "pal").id
    assert mine["substituted"] == 0.0


def test_a_heldout_collection_missing_cells_is_refused(sel):
    rd = _collection()
    _, cands, _ = sel.prepared(rd, ["small", "big"])
    sub, filled = sel.heldout_prepared(rd, ["small", "big"], cands, "gate")
    assert len(sub.queries) == len(rd.queries) == 12 and filled == 12
    # one question's cell of one candidate is not collected yet (a gate still being collected)
    q0 = rd.queries["query_id"].iloc[0]
    drop = (rd.outcomes["query_id"] == q0) & (rd.outcomes["model"] == "big") & (rd.outcomes["strategy"] == "cot")
    part = RoutingData.from_frames(rd.queries, rd.outcomes[~drop])
    with pytest.raises(SystemExit, match=rf"gate: 1 of 12 held-out questions lack a collected cell .*{q0}"):
        sel.heldout_prepared(part, ["small", "big"], cands, "gate")
    # a model outside the routed ones is not needed (the gate's gemma3 cells, say)
    only_small = [c for c in cands if c.model == "small"]
    assert len(sel.heldout_prepared(part, ["small"], only_small, "gate")[0].queries) == 12


def test_an_uncollected_plain_call_is_proxied_for_the_heuristic_only(sel):
    """The plain call was collected on the arithmetic questions only: on the multiple-choice ones a learned
    router's pick of it is dropped for its next collected choice (as PAL there), the heuristic's is scored on the
    direct cell (its proxy); with nothing else to take, the learned router's pick scores its filled cell."""
    rd = _collection(plain=True)
    o = rd.outcomes
    rd = RoutingData.from_frames(rd.queries, o[~((o["strategy"] == "default") & o["query_id"].str.startswith("c"))])
    sub, cands, filled = sel.prepared(rd, ["small", "big"])
    assert filled == 24  # PAL and the plain call of both models on the 6 multiple-choice questions
    texts = query_texts(sub.queries)
    seen = [sel.query_kind(t) for t in texts]
    always = sel.make_router("fixed", candidate="small|default|default").fit(sub)
    lam = {"quality": 0.0}
    learned = sel.replay(always, sub, None, cands, lam, texts, seen)["quality"]
    heur = sel.replay(always, sub, None, cands, lam, texts, seen, proxy_plain=True)["quality"]
    # small's direct answer is right on every multiple-choice question, its filled plain call never
    assert heur["per_task"]["mmlu"]["accuracy"] == 1.0 and learned["per_task"]["mmlu"]["accuracy"] == 0.0
    assert heur["per_task"]["mmlu"]["top_pick"] == Candidate("small", "direct").id
    assert learned["per_task"]["mmlu"]["top_pick"] == Candidate("small", "cot").id  # its next choice, wrong here
    assert heur["substituted"] == learned["substituted"] == 0.5  # the 6 multiple-choice picks of 12
    assert heur["per_task"]["gsm8k"] == learned["per_task"]["gsm8k"]  # collected there: its own cell for both
    # nothing collected to fall back to: the pick's own cell, filled (score 0)
    one = sel.Candidate("small", "default")
    idx = {one.id: 3, sel.Candidate("small", "direct").id: 5}
    assert sel.cell_of(idx, one, {"other"}, proxy_plain=False) == 3 and sel.cell_of(idx, one, {"other"}) == 5


def test_observing_router_consults_only_where_answers_compare(sel):
    rd = _collection()
    sub, cands, _ = sel.prepared(rd, ["small", "big"])
    texts = query_texts(sub.queries)
    seen = [sel.query_kind(t) for t in texts]
    seen = ["qa" if s == "choice" else s for s in seen]  # pretend the letters were not recognised: open chat
    r = sel.make_router("cascade")
    r.fit(sub, None)
    res = sel.replay(r, sub, None, cands, {"quality": 0.0}, texts, seen)["quality"]
    assert res["per_task"]["mmlu"]["top_pick"].startswith(("small", "big"))  # an up-front pick, no plan
    assert not res["per_task"]["mmlu"]["top_pick"].startswith("plan")


def test_paired_interval_of_a_utility_difference(sel):
    rng = np.random.default_rng(0)
    a = rng.random(200)
    same = sel.paired_ci(a, a)
    assert same == {"diff": 0.0, "lo": 0.0, "hi": 0.0}
    m = sel.paired_ci(a + 0.1, a)  # a sure margin: the interval is the margin itself
    assert m["diff"] == pytest.approx(0.1) and m["lo"] == pytest.approx(0.1) and m["hi"] == pytest.approx(0.1)
    noisy = sel.paired_ci(a, rng.random(200))
    assert noisy["lo"] < noisy["diff"] < noisy["hi"] and noisy["lo"] < 0 < noisy["hi"]
    # within strata (a fixed number of questions per task): a difference that is constant within each task has no
    # spread left, where resampling across tasks mixes them
    tasks = np.repeat(["t1", "t2"], 100)
    d = np.where(tasks == "t1", 0.2, -0.1)
    flat, strat = sel.paired_ci(d, np.zeros(200)), sel.paired_ci(d, np.zeros(200), strata=tasks)
    assert strat["diff"] == flat["diff"] == pytest.approx(0.05)
    assert strat["lo"] == pytest.approx(0.05) and strat["hi"] == pytest.approx(0.05) and flat["lo"] < 0.04
    with pytest.raises(ValueError, match="strata: 3 labels for 200"):
        sel.paired_ci(a, a, strata=["t1", "t2", "t1"])


def test_a_heldout_question_seen_in_training_is_refused(sel):
    tr = pd.DataFrame({"query_id": ["a", "b"], "text": ["What is  2+2?", "Name a colour."], "task": ["gsm8k", "qa"]})
    te = pd.DataFrame({"query_id": ["c", "b", "d"], "text": ["what is 2+2?\n", "Other text", "A new one"],
                       "task": ["gsm8k", "qa", "qa"]})
    assert sel.leaked(tr, te) == ["c", "b"]  # the same text (case and spaces aside), the same id
    assert sel.leaked(tr, te.iloc[[2]]) == []


def test_routes_between_the_models_a_plain_gateway_serves(sel):
    from routecraft.pool.config import load_pool
    from routecraft.serve.config import config_from_dict
    from routecraft.serve.gateway import Gateway

    pool = load_pool("local")
    got = sel.routed_models(None, pool)
    # the gateway's own rule for `models: null`, on the same pool: a router over these can be the shipped default
    gw = Gateway(config_from_dict({"pool": "local"}))
    gw.pool = gw.load_served_pool()
    served = gw.served_models()
    assert got == list(served) and "gemma3-270m" in pool.names and "gemma3-270m" not in got
    assert sel.routed_models("gemma3-270m, smollm2-135m", pool) == ["gemma3-270m", "smollm2-135m"]
    with pytest.raises(SystemExit, match="--models: gpt-9 not in pool 'local'"):
        sel.routed_models("smollm2-135m,gpt-9", pool)
