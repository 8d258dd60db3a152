"""Collection against a real llama.cpp server (SmolLM2): grading, resumption after a real kill, Ray executor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from routecraft.data.collect import Cell, CollectionStore, load_queries, parse_budgets, plan_cells
from routecraft.data.schema import RoutingData


def test_parse_budgets_and_plan():
    assert parse_budgets("default,32, 64") == [None, 32, 64]
    with pytest.raises(ValueError, match="positive integer"):
        parse_budgets("lots")
    with pytest.raises(ValueError, match="must be positive"):
        parse_budgets("0")
    cells = plan_cells(["a", "b"], ["m1", "m2"], ["cot"], [None, 32])
    assert len(cells) == 8 and cells[0] == Cell("a", "m1", "cot", None) and cells[-1].model == "m2"


def test_load_queries_gsm8k_and_file_errors(tmp_path):
    q = load_queries("gsm8k-test", limit=3, offset=1)
    assert q["query_id"].tolist() == ["gsm8k-main-test-#1", "gsm8k-main-test-#2", "gsm8k-main-test-#3"]
    assert q["gold"].tolist()[0] == "3"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_queries(str(tmp_path / "nope.jsonl"))
    bad = tmp_path / "q.csv"
    pd.DataFrame({"query_id": ["a", "a"], "text": ["x", "y"]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="duplicate query_id"):
        load_queries(str(bad))


def test_store_refuses_changed_query_text(tmp_path):
    st = CollectionStore(tmp_path)
    st.init_queries(pd.DataFrame({"query_id": ["a"], "text": ["x"], "task": ["t"]}))
    with pytest.raises(ValueError, match="another text"):
        st.init_queries(pd.DataFrame({"query_id": ["a"], "text": ["CHANGED"], "task": ["t"]}))


def _collect_cmd(pool_yaml: Path, out: Path, limit: int, budgets: str, executor: str = "local") -> list[str]:
    return [sys.executable, "-m", "routecraft.cli", "collect", "--pool", str(pool_yaml), "--data", "gsm8k-test",
            "--limit", str(limit), "--strategies", "direct", "--budgets", budgets, "--flush-every", "2",
            "--concurrency", "2", "--out", str(out), "--executor", executor]


@pytest.mark.slow
def test_collect_kill_and_resume_loses_and_duplicates_nothing(pool, tmp_path):
    pool_yaml = tmp_path / "pool.yaml"
    pool_yaml.write_text(pool.to_yaml())
    out = tmp_path / "col"
    cmd = _collect_cmd(pool_yaml, out, limit=8, budgets="16,24")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = CollectionStore(out)
    deadline = time.time() + 240
    while time.time() < deadline and len(store.shard_files()) < 2:
        time.sleep(0.2)
    assert len(store.shard_files()) >= 2, "collection wrote no checkpoint in time"
    os.killpg(proc.pid, signal.SIGKILL)  # a real kill mid-run, no chance to clean up
    proc.wait()
    before = store.rows()
    assert 4 <= len(before) < 16, len(before)
    assert not (out / "outcomes.parquet").exists()  # killed before the final compaction

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rd = RoutingData.load(out)  # validates: no duplicate (query, model, strategy, budget)
    o = rd.outcomes
    assert len(o) == 16 and o.duplicated(["query_id", "model", "strategy", "budget"]).sum() == 0
    assert sorted(o["budget"].unique().tolist()) == [16, 24]
    # every row written before the kill is still there, unchanged
    merged = before.merge(o, on=["query_id", "model", "strategy", "budget"], suffixes=("_a", "_b"))
    assert len(merged) == len(before)
    assert (merged["response_a"] == merged["response_b"]).all()
    assert not store.shard_files()  # folded into outcomes.parquet
    # real token counts and prices, budgets honoured by the hard cap (budget + slack)
    assert (o["output_tokens"] > 0).all() and (o["output_tokens"] <= o["budget"] + 10).all()
    assert (o["cost_usd"] > 0).all() and set(o["score"].unique()) <= {0.0, 1.0}
    # what an observing router sees after a call: token log-probabilities (llama.cpp returns them when asked)
    assert o["logprob_mean"].notna().all() and (o["logprob_min"] <= o["logprob_mean"]).all()
    assert (o["logprob_mean"] <= 0).all()
    # a third run has nothing left to do
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and '"ran": 0' in again.stdout


@pytest.mark.slow
def test_collect_with_ray_executor(pool, tmp_path):
    from routecraft.data.collect import collect

    q = load_queries("gsm8k-test", limit=3)
    res = collect(pool, q, pool.names, ["direct"], [16], tmp_path / "ray", executor="ray", chunk_size=2,
                  concurrency=2)
    assert res["ran"] == 3 and res["outcomes"] == 3
    o = RoutingData.load(tmp_path / "ray").outcomes
    assert (o["output_tokens"] > 0).all() and o["hardware"].notna().all()


def test_collect_runs_one_backend_at_a_time(pool, tmp_path):
    """Two pool entries on the same real server: every cell of the second starts after the last of the first ends
    (local servers share the CPU; two decoding at once oversubscribe it)."""
    from routecraft.data.collect import collect
    from routecraft.pool.config import Pool

    a = pool.models[0]
    b = a.model_copy(update={"name": "second"})
    two = Pool(name="two", description="one server under two names", models=[a, b])
    q = load_queries("gsm8k-test", limit=3)
    res = collect(two, q, [a.name, "second"], ["direct"], [24], tmp_path / "two", concurrency=2)
    assert res["ran"] == 6, res
    o = RoutingData.load(tmp_path / "two").outcomes
    end = pd.to_datetime(o["collected_at"])
    start = end - pd.to_timedelta(o["latency_s"], unit="s")
    first, second = o["model"] == a.name, o["model"] == "second"
    assert start[second].min() >= end[first].max() - pd.Timedelta(milliseconds=50), (o[["model", "latency_s"]])


def test_a_run_plans_only_the_queries_it_is_asked_for(pool, tmp_path):
    """The folder keeps every query it has collected; a later run with fewer queries (``--limit``) plans and runs
    only those, and a run with more adds the new ones."""
    from routecraft.data.collect import collect

    m = pool.models[0].name
    first = collect(pool, load_queries("gsm8k-test", limit=2), [m], ["direct"], [16], tmp_path / "c")
    assert (first["cells"], first["ran"]) == (2, 2)
    fewer = collect(pool, load_queries("gsm8k-test", limit=1), [m], ["direct"], [16], tmp_path / "c")
    assert (fewer["cells"], fewer["ran"], fewer["outcomes"]) == (1, 0, 2)  # nothing lost, nothing re-run
    more = collect(pool, load_queries("gsm8k-test", limit=3), [m], ["direct"], [16], tmp_path / "c")
    assert (more["cells"], more["ran"], more["outcomes"]) == (3, 1, 3)
    assert len(CollectionStore(tmp_path / "c").queries()) == 3
