"""The router contract (routers/base.py): the kinds, one query through ``decide_one``, and the one builder of a
decision's candidate table and its order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from routecraft.data.schema import Candidate, RoutingData
from routecraft.routers import REGISTRY, MultiStepRouter, ObservingRouter, Router, TabularRouter, get_router_class
from routecraft.routers.base import Decision, Prediction, candidate_order


def _pred(score, cost) -> Prediction:
    cands = [Candidate(f"m{j}") for j in range(len(score))]
    return Prediction(cands, np.array([score], dtype=float), np.array([cost], dtype=float))


def test_every_registered_router_is_of_one_kind():
    kinds = (TabularRouter, ObservingRouter, MultiStepRouter)
    for name in REGISTRY:
        cls = get_router_class(name)
        assert issubclass(cls, Router)
        assert sum(issubclass(cls, k) for k in kinds) == (0 if name == "heuristic" else 1), name
    for name in ("router-r1", "r2-reasoner"):  # trained from their config, decide by running: no fit/predict
        assert not hasattr(get_router_class(name), "fit") and not hasattr(get_router_class(name), "predict")
    for name in ("cascade", "sequential"):  # a plan of consultations: no per-candidate prediction
        assert not hasattr(get_router_class(name), "predict")
    assert get_router_class("mlp").takes_seed and not get_router_class("knn").takes_seed


def test_the_order_under_lambda_is_utility_then_cost_then_candidate_order():
    # m0 and m1 tie on utility, m1 is cheaper; m2 and m3 tie on utility and cost
    p = _pred([0.9, 0.8, 0.5, 0.5], [0.2, 0.1, 0.1, 0.1])
    d = Decision.from_prediction(p, 0, lam=1.0)
    assert [r["candidate"] for r in d.table] == ["m1", "m0", "m2", "m3"]
    assert d.candidate.id == "m1" and d.predicted_score == 0.8 and d.prediction is not None
    assert [c.id for c in d.order()] == ["m1", "m0", "m2", "m3"]


def test_the_order_under_a_cost_cap_is_what_fits_by_score_then_the_rest_by_cost():
    p = _pred([0.9, 0.6, 0.7, 0.95, 0.2], [0.5, 0.01, 0.02, 0.9, 0.6])
    d = Decision.from_prediction(p, 0, max_cost=0.05)
    assert [r["candidate"] for r in d.table] == ["m2", "m1", "m0", "m4", "m3"]
    none_fit = Decision.from_prediction(p, 0, max_cost=1e-9)  # the cheapest, then the rest by cost
    assert [r["candidate"] for r in none_fit.table] == ["m1", "m2", "m0", "m4", "m3"]
    assert candidate_order(np.array([0.5, 0.9]), np.array([1.0, 2.0]), lam=float("inf")) == [0, 1]


def test_restricted_chooses_again_among_the_candidates_kept():
    p = _pred([0.9, 0.8, 0.5], [0.3, 0.1, 0.05])
    d = Decision.from_prediction(p, 0, lam=0.0, plan={"kind": "x"})
    assert d.candidate.id == "m0"
    r = d.restricted([1, 2], lam=0.0)
    assert r.candidate.id == "m1" and [x["candidate"] for x in r.table] == ["m1", "m2"] and r.plan == {"kind": "x"}
    bare = Decision(Candidate("solo"), 0.5, 0.01)  # no per-candidate prediction: the decided candidate alone
    assert [c.id for c in bare.order()] == ["solo"] and bare.restricted([0]).candidate.id == "solo"


def _table() -> RoutingData:
    qs = pd.DataFrame({"query_id": ["q1", "q2", "q3"], "text": ["a", "b", "c"], "task": ["qa"] * 3,
                       "gold": ["1", "2", "3"]})
    rows = [{"query_id": q, "model": m, "score": s, "cost_usd": c}
            for q in qs.query_id for m, s, c in (("big", 0.9, 1e-3), ("small", 0.6, 1e-5))]
    return RoutingData.from_frames(qs, pd.DataFrame(rows))


def test_decide_one_is_decide_on_a_one_row_table():
    r = get_router_class("best-single")().fit(_table())
    one = r.decide_one("a question", lam=100.0, task="qa")
    many = r.decide(pd.DataFrame({"query_id": ["x"], "text": ["a question"], "task": ["qa"], "gold": [None]}),
                    lam=100.0)[0]
    assert one.candidate == many.candidate and one.table == many.table


def test_the_heuristic_router_answers_one_query_without_a_table():
    from routecraft.pool.config import PoolModel

    models = [PoolModel(name=n, endpoint="http://127.0.0.1:9/v1", price_in_per_m=pi, price_out_per_m=po,
                        description=n, size_b=b) for n, pi, po, b in (("small", 0.003, 0.02, 0.135),
                                                                      ("big", 0.03, 0.25, 1.5))]
    r = get_router_class("heuristic")(strategies=["default", "cot"]).fit_pool(models)
    text = "Tom has 3 apples and buys 5 more bags with 4 apples each. How many apples does he have in total?"
    one = r.decide_one(text, lam=0.0, task="numeric", input_chars=len(text), max_tokens=None)
    many = r.decide(pd.DataFrame({"query_id": ["x"], "text": [text], "kind": ["numeric"]}), lam=0.0)[0]
    assert one.candidate == many.candidate and one.table == many.table and r.light


def test_the_bench_refuses_routers_it_cannot_replay():
    from routecraft.evaluate.bench import check_benchable

    with pytest.raises(ValueError, match="trained from its config.*python -m routecraft.routers.router_r1 eval"):
        check_benchable("router-r1")
    with pytest.raises(ValueError, match="not fit on an outcomes table"):
        check_benchable("heuristic")
    check_benchable("cascade")
    check_benchable("knn")


def test_an_artifact_from_another_version_fails_with_a_clear_error(tmp_path):
    """A format-1 artifact (state.joblib) — here one whose pickle names a class this routecraft does not have, as
    artifacts saved before a module moved do — is refused without being unpickled, with a message saying to re-train
    or convert it; converting it (``--trust``) then says the code it refers to is gone (tests/routers/
    test_artifact_safety.py has the rest)."""
    import json
    import pickle

    import pytest

    from routecraft.routers import load_router
    from routecraft.routers.convert import convert_artifact

    d = tmp_path / "old"
    d.mkdir()
    (d / "router.json").write_text(json.dumps({"router": "mlp", "format_version": 1, "params": {},
                                               "candidates": ["a"], "encoder": None}))
    # the pickle of an object of a class from a module that no longer exists (the old routers/_reasoning.py)
    payload = (b"\x80\x04\x95+\x00\x00\x00\x00\x00\x00\x00\x8c\x1droutecraft.routers._reasoning\x94\x8c\x06Layout"
               b"\x94\x93\x94.")
    (d / "state.joblib").write_bytes(payload)
    with pytest.raises(ValueError, match="format-1 router artifact.*Train it again.*artifact convert"):
        load_router(d)
    with pytest.raises(ValueError, match="refers to code this routecraft no longer has.*train it again"):
        convert_artifact(d, trust=True)
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(payload)  # what it would have been without the check
