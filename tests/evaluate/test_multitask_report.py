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
