"""The ``kind`` router on a table whose right answer per kind of query is known.

Four kinds of question, as the gateway detects them from the text (``query_kind``): multiple choice (options
kept apart in the ``choices`` column, as a collection stores them), a program to write, arithmetic, and trivia.
Candidate ``a`` is right on the choice questions only, ``b`` on arithmetic, ``c`` on code, ``d`` on trivia; ``e``
is dear and right on everything but trivia.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from routecraft.data.query_text import query_texts
from routecraft.data.schema import RoutingData
from routecraft.routers import load_router, make_router
from routecraft.routers.heuristic import query_kind

QUESTIONS = {
    "choice": ("Which planet is known as the red planet {i}?", ["Venus", "Mars", "Jupiter", "Saturn"]),
    "code": ("Write a Python function that returns the {i}th Fibonacci number.", None),
    "numeric": ("Tom has {i} apples and buys 3 more. How many apples does he have in total?", None),
    "qa": ("who wrote the novel number {i} of the series", None),
}
RIGHT = {"choice": "a", "numeric": "b", "code": "c", "qa": "d"}
COST = {"a": 0.001, "b": 0.002, "c": 0.003, "d": 0.0005, "e": 0.05}


def table(n_per_kind: int = 6, kinds=tuple(QUESTIONS)) -> RoutingData:
    q, o = [], []
    for kind in kinds:
        text, choices = QUESTIONS[kind]
        for i in range(n_per_kind):
            qid = f"{kind}-{i}"
            q.append({"query_id": qid, "text": text.format(i=i + 2), "task": "t", "choices": choices})
            for m, cost in COST.items():
                right = m == RIGHT[kind] or (m == "e" and kind != "qa")
                o.append({"query_id": qid, "model": m, "score": float(right), "cost_usd": cost})
    return RoutingData.from_frames(pd.DataFrame(q), pd.DataFrame(o))


def test_the_routing_text_carries_the_options_so_the_kind_is_detected_as_the_gateway_would():
    data = table(1)
    texts = query_texts(data.queries)
    assert [query_kind(t) for t in texts] == ["choice", "code", "numeric", "qa"]
    assert query_kind(data.queries["text"].iloc[0]) != "choice"  # the bare question alone is not seen as one
    assert texts[0].endswith("(A) Venus\n(B) Mars\n(C) Jupiter\n(D) Saturn")
    assert query_texts(data.queries.drop(columns=["choices"])) == data.queries["text"].tolist()


def test_options_as_published_logs_store_them_and_only_where_the_task_takes_options():
    # LLMRouter's logs keep a dict of labels and texts as Python-literal text, and mbpp's "choices" are its tests
    q = pd.DataFrame({"query_id": ["c", "m", "u"], "text": ["Where is a bus?", "Write a function f.", "Pick one"],
                      "task": ["commonsense_qa", "mbpp", "my-own-task"],
                      "choices": ["{'label': ['A', 'B'], 'text': ['depot', 'beach']}", "['assert f(1) == 2']",
                                  '["red", "blue"]']})
    texts = query_texts(q)
    assert texts == ["Where is a bus?\n(A) depot\n(B) beach", "Write a function f.", "Pick one\n(A) red\n(B) blue"]
    assert [query_kind(t) for t in texts] == ["choice", "code", "choice"]


def test_bad_choices_are_an_error_naming_the_query():
    q = pd.DataFrame({"query_id": ["x1", "x2"], "text": ["a", "b"], "choices": [None, "not a [list"]})
    with pytest.raises(ValueError, match="query 'x2'.*not a list"):
        query_texts(q)
    q = pd.DataFrame({"query_id": ["y1"], "text": ["a"], "choices": [[str(i) for i in range(12)]]})
    with pytest.raises(ValueError, match="query 'y1'.*2..10 options, got 12"):
        query_texts(q)
    q = pd.DataFrame({"query_id": ["z1"], "text": ["a"], "choices": ["{'label': ['A']}"]})
    with pytest.raises(ValueError, match="query 'z1'.*'text' list"):
        query_texts(q)
    q = pd.DataFrame({"query_id": ["w1"], "text": ["a"], "choices": ["[" * 100_000]})  # too deep to parse
    with pytest.raises(ValueError, match="query 'w1'.*not a list"):
        query_texts(q)
    with pytest.raises(ValueError, match=r"min_coverage.*\(0, 1\], got nan"):
        table().for_routers(float("nan"))


def test_it_learns_the_best_candidate_of_each_kind():
    r = make_router("kind", prior=0).fit(table())
    assert r.kind_counts() == {"choice": 6, "code": 6, "numeric": 6, "qa": 6}
    test = table(2)
    picks = [d.candidate.model for d in r.decide(test.queries, lam=100.0)]
    assert picks == [RIGHT[k] for k in QUESTIONS for _ in range(2)]
    # at λ = 0 the dear all-rounder is as good on every kind but trivia: ties go to the cheaper, so still the same
    assert [d.candidate.model for d in r.decide(test.queries, lam=0.0)] == picks
    # with a huge λ the cheapest candidate everywhere
    assert {d.candidate.model for d in r.decide(test.queries, lam=1e6)} == {"d"}
    # one query as a server sees it: the routing text with its options inline
    one = r.decide_one("Which gas do plants absorb?\n(A) Oxygen\n(B) Carbon dioxide", lam=100.0)
    assert one.candidate.model == "a"
    # decide_one (no queries table: the gateway's fast path) decides as decide does on the same texts
    for text, want in zip(query_texts(test.queries), picks):
        fast = r.decide_one(text, lam=100.0, task="ignored")
        assert fast.candidate.model == want
        assert fast.table == r.decide(pd.DataFrame({"query_id": ["x"], "text": [text]}), lam=100.0)[0].table


def test_the_prior_shrinks_a_kind_toward_the_overall_mean_and_an_unseen_kind_gets_it():
    data = table(4, kinds=("choice", "numeric", "code"))
    r = make_router("kind", prior=2).fit(data)
    j = [c.model for c in r.candidates].index("a")
    i = r.kinds_.index("choice")
    overall = 4 / 12  # a is right on the 4 choice questions of 12
    assert r.score_[i, j] == pytest.approx((4 + 2 * overall) / (4 + 2))
    unseen = r.predict(table(1, kinds=("qa",)).queries)
    assert np.allclose(unseen.score[0], r.score_[r.kinds_.index("qa")])
    assert unseen.score[0, j] == pytest.approx(overall)
    assert r.kind_counts()["qa"] == 0


def test_round_trip_and_bad_settings(tmp_path):
    r = make_router("kind").fit(table())
    back = load_router(r.save(tmp_path / "kind"))
    test = table(1)
    a, b = r.predict(test.queries), back.predict(test.queries)
    assert np.array_equal(a.score, b.score) and np.array_equal(a.cost, b.cost)
    assert back.kind_counts() == r.kind_counts() and back.light and not back.uses_features
    for bad in (-1, float("nan"), float("inf"), "abc", None):
        with pytest.raises(ValueError, match="prior"):
            make_router("kind", prior=bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        make_router("kind").predict(test.queries)


@pytest.mark.parametrize("edit, says", [
    (lambda st: st.update(kinds_="qa"), "kinds_"),
    (lambda st: st.update(kinds_=["choice", "choice", "numeric", "qa"]), "kinds_"),
    (lambda st: st.update(kinds_=5), "kinds_"),
    (lambda st: st.pop("score_"), "score_"),
    (lambda st: st["cost_"].update(shape=[5, 3]), "cost_"),
    (lambda st: st["counts_"].update(shape=[3]), "counts_"),
])
def test_an_edited_artifact_fails_on_load_naming_the_field(tmp_path, edit, says):
    """Hand-edited state (a wrong kind list, a missing or misshapen table) is one clear error on load, before any
    request is routed on it."""
    import json

    from routecraft.routers.artifact import ArtifactError

    path = make_router("kind").fit(table()).save(tmp_path / "kind")
    meta = json.loads((path / "router.json").read_text())
    edit(meta["state"])
    (path / "router.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=says):
        load_router(path)
