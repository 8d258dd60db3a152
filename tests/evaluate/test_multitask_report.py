"""benchmarks/multitask_report.py: the collection rate counts only the time a model was being collected."""

from __future__ import annotations

import pandas as pd
import pytest

from _benchmarks import load_benchmark


@pytest.fixture(scope="module")
def rep():
    return load_benchmark("multitask_report")


def _rows(times: list[str], model: str = "m") -> pd.DataFrame:
    return pd.DataFrame({"model": model, "collected_at": times, "output_tokens": 10, "hardware": "cpu:2:x86_64"})


def test_rate_leaves_out_pauses_and_can_start_at_a_time(rep):
    # 4 rows a minute apart, a 2-hour pause (another sitting), then 3 rows 30 s apart
    t = ["2026-12-01T10:00:00Z", "2026-12-01T10:01:00Z", "2026-12-01T10:02:00Z", "2026-12-01T10:03:00Z",
         "2026-12-01T12:03:00Z", "2026-12-01T12:03:30Z", "2026-12-01T12:04:00Z"]
    (r,) = rep.rate(_rows(t))
    assert r["cells"] == 7 and r["minutes"] == pytest.approx(4.0) and r["sittings"] == 2
    assert r["cells_per_min"] == pytest.approx(7 / 4.0)
    (late,) = rep.rate(_rows(t), since="2026-12-01T12:00:00Z")
    assert late["cells"] == 3 and late["minutes"] == pytest.approx(1.0) and late["sittings"] == 1
    assert rep.rate(_rows(t), since="2026-12-02T00:00:00") == []


@pytest.mark.parametrize("since", ["", "nat", "yesterday"])
def test_since_that_is_no_time_is_an_error_naming_the_flag(rep, tmp_path, since):
    with pytest.raises(SystemExit, match="--since: .* is not an ISO 8601 time"):
        rep.main([str(tmp_path), "--since", since])


def test_per_task_snapshot_of_the_real_collection_reads_back_as_a_collection(rep, tmp_path):
    from pathlib import Path

    from routecraft.data.collect.store import CollectionStore
    from routecraft.data.schema import RoutingData

    folder = Path(__file__).resolve().parents[2] / "data" / "routecraft-multitask"
    q_all = pd.read_parquet(folder / "queries.parquet")
    snap, out = tmp_path / "snap", tmp_path / "report"
    assert rep.main([str(folder), "--per-task", "2", "--snapshot", str(snap), "--out", str(out)]) == 0
    store = CollectionStore(snap)
    q, o = store.queries(), store.rows()
    assert q["task"].value_counts().eq(2).all() and q["task"].nunique() == q_all["task"].nunique()
    # each task's first two questions of the collection's own order, and every row of theirs, nothing else
    assert list(q["query_id"]) == list(q_all[q_all.groupby("task", sort=False).cumcount() < 2]["query_id"])
    assert set(o["query_id"]) == set(q["query_id"]) and "task" not in o.columns
    every = CollectionStore(folder).rows()
    assert len(o) == int(every["query_id"].isin(q["query_id"]).sum())
    RoutingData.from_frames(q, o)  # validates as the bench loads it
    assert (out / "cost.png").stat().st_size > 10_000 and (out / "accuracy.png").is_file()
    with pytest.raises(SystemExit, match="--per-task: 0 is not a positive number"):
        rep.main([str(folder), "--per-task", "0", "--out", str(out)])
    with pytest.raises(SystemExit, match="no queries.parquet"):
        rep.main([str(tmp_path / "nowhere"), "--out", str(out)])
