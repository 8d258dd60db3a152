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
