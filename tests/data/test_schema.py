import numpy as np
import pandas as pd
import pytest

from routecraft.data.schema import Candidate, DataValidationError, RoutingData, candidate_id


def _frames():
    q = pd.DataFrame({"query_id": ["a", "b", "c"], "text": ["1+1?", "2+2?", "3+3?"], "task": ["gsm8k"] * 3,
                      "gold": ["2", "4", None]})
    o = pd.DataFrame({
        "query_id": ["a", "a", "b", "b", "c", "c"],
        "model": ["m1", "m2"] * 3,
        "strategy": ["cot", None] * 3,
        "budget": [64, None] * 3,
        "score": [1, 0, 0.5, 1, 0, 1],
        "input_tokens": [10] * 6, "output_tokens": [5, 7, 5, 7, 5, 7],
        "cost_usd": [0.1, 0.2] * 3,
    })
    return q, o


def test_roundtrip_and_matrices(tmp_path):
    q, o = _frames()
    rd = RoutingData.from_frames(q, o)
    assert [c.id for c in rd.candidates] == ["m1|cot|64", "m2"]
    rd.save(tmp_path / "d")
    back = RoutingData.load(tmp_path / "d")
    m = back.matrices()
    assert m.score.shape == (3, 2)
    np.testing.assert_allclose(m.score[:, 0], [1, 0.5, 0])
    np.testing.assert_allclose(m.cost[:, 1], [0.2, 0.2, 0.2])
    assert back.outcomes["strategy"].tolist()[1] == "default"


@pytest.mark.parametrize("field,value,msg", [
    ("score", 1.5, "score must be in [0, 1]"),
    ("cost_usd", -1.0, "cost must be >= 0"),
    ("budget", 0, "budget must be"),
    ("output_tokens", "lots", "cannot read"),
])
def test_bad_outcome_names_file_row_field(field, value, msg):
    q, o = _frames()
    o[field] = o[field].astype(object)
    o.loc[3, field] = value
    with pytest.raises(DataValidationError) as e:
        RoutingData.from_frames(q, o, source="x.parquet")
    s = str(e.value)
    assert "x.parquet/outcomes" in s and "row 3" in s and f"field '{field}'" in s and msg in s


def test_missing_column_duplicate_key_unknown_query():
    q, o = _frames()
    with pytest.raises(DataValidationError, match="field 'score'"):
        RoutingData.from_frames(q, o.drop(columns=["score"]))
    with pytest.raises(DataValidationError, match="duplicate"):
        RoutingData.from_frames(q, pd.concat([o, o.iloc[[0]]], ignore_index=True))
    o2 = o.copy()
    o2.loc[0, "query_id"] = "zzz"
    with pytest.raises(DataValidationError, match="not in the queries table"):
        RoutingData.from_frames(q, o2)
    with pytest.raises(DataValidationError, match="duplicate query_id"):
        RoutingData.from_frames(pd.concat([q, q.iloc[[0]]]), o)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataValidationError, match="not a routecraft data folder"):
        RoutingData.load(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(DataValidationError, match="queries.parquet"):
        RoutingData.load(tmp_path / "d")


def test_incomplete_matrix_error_and_complete():
    q, o = _frames()
    rd = RoutingData.from_frames(q, o.drop(index=[5]))
    with pytest.raises(DataValidationError, match="no outcome for query 'c'"):
        rd.matrices()
    assert rd.complete().queries["query_id"].tolist() == ["a", "b"]


def test_split_is_seeded_and_disjoint():
    n = 50
    q = pd.DataFrame({"query_id": [f"q{i}" for i in range(n)], "text": ["t"] * n, "task": ["x"] * n})
    o = pd.DataFrame({"query_id": q["query_id"], "model": "m", "score": 1.0, "cost_usd": 0.0})
    rd = RoutingData.from_frames(q, o)
    a, b, c = rd.split(seed=1), rd.split(seed=1), rd.split(seed=2)
    ids = lambda d: set(d.queries["query_id"])  # noqa: E731
    assert ids(a.test) == ids(b.test) and ids(a.test) != ids(c.test)
    assert not (ids(a.train) & ids(a.test)) and not (ids(a.val) & ids(a.test))
    assert len(ids(a.train) | ids(a.val) | ids(a.test)) == n
    assert len(ids(a.train)) == 30 and len(ids(a.val)) == 10


def test_candidate_ids():
    assert candidate_id("m") == "m"
    assert candidate_id("m", "cot", 64) == "m|cot|64"
    assert Candidate.parse("m|cot|64") == Candidate("m", "cot", 64)
    assert Candidate.parse("m|default|default") == Candidate("m")
    assert Candidate.parse("m") == Candidate("m")


def test_fill_inapplicable_fills_only_cells_whose_strategy_cannot_run():
    """PAL has no cells on a multiple-choice question (never planned); a missing CoT cell is a real gap."""
    q = pd.DataFrame({"query_id": ["n1", "c1", "c2", "x1"], "text": ["1+1?", "pick", "pick", "hi"],
                      "task": ["gsm8k", "mmlu", "mmlu", "no-such-task"], "gold": ["2", "A", "B", None]})
    rows = [("n1", "m", "cot", 1.0, 0.3), ("n1", "m", "pal", 1.0, 0.1),
            ("c1", "m", "cot", 0.0, 0.5), ("c1", "m", "direct", 1.0, 0.05),
            ("c2", "m", "direct", 1.0, 0.07),  # c2 lacks cot: applicable, stays missing
            ("x1", "m", "cot", 1.0, 0.2), ("n1", "m", "direct", 0.0, 0.01), ("x1", "m", "direct", 1.0, 0.1)]
    o = pd.DataFrame(rows, columns=["query_id", "model", "strategy", "score", "cost_usd"])
    filled, n = RoutingData.from_frames(q, o).fill_inapplicable()
    f = filled.outcomes[filled.outcomes["filled"]]
    assert n == 2 and sorted(f["query_id"]) == ["c1", "c2"] and set(f["strategy"]) == {"pal"}
    c1 = f[f["query_id"] == "c1"].iloc[0]
    assert c1["score"] == 0 and c1["cost_usd"] == pytest.approx(0.5)  # the dearest collected cell of c1
    assert not filled.outcomes.loc[~filled.outcomes["filled"], "score"].isna().any()
    # the unknown task's missing PAL stays missing, and so does c2's cot: complete() keeps n1 and c1 only
    assert sorted(filled.complete().queries["query_id"]) == ["c1", "n1"]
    m = filled.complete().matrices()
    j = m.candidate_ids.index(Candidate("m", "pal").id)
    # a filled cell is never better than a real one: utility at any λ ≤ every collected cell of its query
    row = m.query_ids.index("c1")
    assert (m.score[row, j] - 3 * m.cost[row, j]) <= (m.score[row] - 3 * m.cost[row]).min() + 1e-12
    again, n2 = filled.fill_inapplicable()
    assert n2 == 0 and len(again.outcomes) == len(filled.outcomes)


def test_densest_keeps_the_candidates_that_leave_the_most_complete_cells():
    q = pd.DataFrame({"query_id": [f"q{i}" for i in range(10)], "text": ["t"] * 10, "task": ["gsm8k"] * 10})
    rows = [(f"q{i}", "small", 1.0) for i in range(10)]  # a collection in progress: small on all 10,
    rows += [(f"q{i}", m, 0.5) for i in range(6) for m in ("mid", "big")]  # the others on the first 6
    rows += [("q0", "rare", 0.0)]  # one stray candidate
    o = pd.DataFrame(rows, columns=["query_id", "model", "score"]).assign(cost_usd=0.1)
    rd = RoutingData.from_frames(q, o)
    d, dropped = rd.densest(0.9)
    assert dropped == ["rare"] and len(d.queries) == 6 and len(d.candidates) == 3  # 18 cells, not small's 10
    # the usual rule where it is the densest: 2 sparse candidates of 10 dropped, all queries kept
    o2 = pd.DataFrame([(f"q{i}", m, 1.0) for i in range(10) for m in ("a", "b", "c")]
                      + [(f"q{i}", "x", 0.0) for i in range(3)], columns=["query_id", "model", "score"])
    d2, dropped2 = RoutingData.from_frames(q, o2.assign(cost_usd=0.1)).densest(0.9)
    assert dropped2 == ["x"] and len(d2.queries) == 10


def test_fill_inapplicable_leaves_collected_strategies_and_absent_models_alone():
    q = pd.DataFrame({"query_id": ["n1", "n2", "t1", "t2"], "text": ["1+1?", "2+2?", "who?", "where?"],
                      "task": ["gsm8k", "gsm8k", "trivia_qa", "trivia_qa"], "gold": ["2", "4", "x", "y"]})
    rows = [("n1", "m", "direct", 1.0), ("n1", "m", "sc", 1.0), ("n2", "m", "direct", 0.0),  # sc named on purpose
            ("t1", "m", "direct", 1.0), ("t1", "m", "cod", 0.0), ("t2", "m", "direct", 1.0),  # cod collected on t1
            ("n1", "late", "direct", 1.0)]  # a model that has run on n1 only
    o = pd.DataFrame(rows, columns=["query_id", "model", "strategy", "score"]).assign(cost_usd=0.1, latency_s=2.0)
    filled, n = RoutingData.from_frames(q, o).fill_inapplicable()
    f = filled.outcomes[filled.outcomes["filled"]]
    # sc was collected on gsm8k (n1): n2's missing sc stays missing; cod was collected on trivia_qa (t1): t2's
    # missing cod stays missing; sc was never collected on trivia_qa and is not in its plan: filled there
    assert n == 2 and set(zip(f["query_id"], f["model"], f["strategy"])) == {("t1", "m", "sc"), ("t2", "m", "sc")}
    assert not ((f["query_id"] == "n2") & (f["strategy"] == "sc")).any()
    assert not ((f["query_id"] == "t2") & (f["strategy"] == "cod")).any()
    assert not ((f["model"] == "late") & (f["query_id"] != "n1")).any()
    assert f["tokens_estimated"].all() and (f["latency_s"] == 2.0).all()


def test_densest_never_drops_a_candidate_the_usual_rule_keeps():
    n = 100
    q = pd.DataFrame({"query_id": [f"q{i:03d}" for i in range(n)], "text": ["t"] * n, "task": ["gsm8k"] * n})
    rows = [(f"q{i:03d}", m) for i in range(n) for m in ("a", "b", "c")]
    for k in range(9):  # nine candidates at 91% coverage, each missing 9 different queries
        rows += [(f"q{i:03d}", f"x{k}") for i in range(n) if not (9 * k <= i < 9 * k + 9)]
    o = pd.DataFrame(rows, columns=["query_id", "model"]).assign(score=1.0, cost_usd=0.1)
    d, dropped = RoutingData.from_frames(q, o).densest(0.9)
    assert dropped == [] and len(d.candidates) == 12 and len(d.queries) == n - 81
    empty = RoutingData.from_frames(q, o.iloc[:0])
    assert len(empty.densest(0.9)[0].queries) == 0
