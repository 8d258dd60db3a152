import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from routecraft.evaluate.cells import cell_table, cells_markdown, plot_cells, wilson


def _outcomes():
    rows = []
    for q in range(10):
        # m1 direct right on even queries, m1 cot always right, m2 cot@32 right on q<3; q9 lacks m2 cot@32
        rows.append(dict(query_id=f"q{q}", model="m1", strategy="direct", budget=None, score=float(q % 2 == 0),
                         output_tokens=10, cost_usd=1e-6, latency_s=0.1))
        rows.append(dict(query_id=f"q{q}", model="m1", strategy="cot", budget=None, score=1.0,
                         output_tokens=100 + q, cost_usd=1e-5, latency_s=1.0))
        if q < 9:
            rows.append(dict(query_id=f"q{q}", model="m2", strategy="cot", budget=32, score=float(q < 3),
                             output_tokens=30, cost_usd=2e-6, latency_s=0.3))
    df = pd.DataFrame(rows)
    df["budget"] = df["budget"].astype("Int64")
    return df


def test_wilson_matches_known_values():
    lo, hi = wilson(np.array([5, 0]), np.array([10, 10]))
    assert lo[0] == pytest.approx(0.2366, abs=1e-3) and hi[0] == pytest.approx(0.7634, abs=1e-3)
    assert lo[1] == 0.0 and hi[1] == pytest.approx(0.2775, abs=1e-3)


def test_cell_table_on_common_queries_and_all():
    t = cell_table(_outcomes())
    assert list(zip(t["model"], t["strategy"], t["budget"])) == [
        ("m1", "direct", "default"), ("m1", "cot", "default"), ("m2", "cot", "32")]
    assert (t["n"] == 9).all()  # q9 is not answered by every cell
    acc = dict(zip(t["strategy"] + t["budget"], t["accuracy"]))
    assert acc["directdefault"] == pytest.approx(5 / 9)
    assert acc["cot32"] == pytest.approx(3 / 9)
    assert t.loc[1, "out_tokens"] == pytest.approx(104.0)
    t_all = cell_table(_outcomes(), common=False)
    assert list(t_all["n"]) == [10, 10, 9]
    assert t_all.loc[0, "accuracy"] == pytest.approx(0.5)
    md = cells_markdown(t)
    assert "| m2 | cot | 32 | 9 | 0.333" in md


def test_cell_table_names_missing_columns():
    with pytest.raises(ValueError, match="output_tokens"):
        cell_table(_outcomes().drop(columns="output_tokens"))


def test_plot_and_cli(tmp_path):
    from routecraft.cli import app
    from routecraft.data.schema import RoutingData

    o = _outcomes()
    q = pd.DataFrame({"query_id": [f"q{i}" for i in range(10)], "text": [f"question {i}" for i in range(10)],
                      "task": "gsm8k", "gold": "1"})
    RoutingData.from_frames(q, o).save(tmp_path / "d")
    p = plot_cells(cell_table(o), tmp_path / "c.png")
    assert p.stat().st_size > 10_000
    res = CliRunner().invoke(app, ["data", "show", str(tmp_path / "d"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "9 queries answered by every cell" in res.output
    assert (tmp_path / "out" / "cells.png").exists()
    assert pd.read_csv(tmp_path / "out" / "cells.csv")["n"].tolist() == [9, 9, 9]


def test_plot_with_cells_at_exactly_0_and_1(tmp_path):
    o = _outcomes()
    o["score"] = (o["strategy"] == "cot").astype(float)  # cot always right (a rounded Wilson bound may dip below)
    t = cell_table(o)
    assert set(t["accuracy"]) == {0.0, 1.0}
    assert plot_cells(t, tmp_path / "c.png").stat().st_size > 10_000
