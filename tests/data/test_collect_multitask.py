"""LLMRouter's 14-task queries for collection: the queries table (stable ids, golds, choices, held-out test
questions, seeded per-task samples), per-task strategies in the plan, and a real collection on SmolLM2 whose rows
record the extracted answer and its grade."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pandas as pd
import pytest

from routecraft.data.collect import (
    CollectionStore,
    check_strategies,
    llmrouter_queries,
    load_queries,
    plan_cells,
    strategies_per_task,
)
from routecraft.data.importers.common import dataset_root, find, read_jsonl
from routecraft.data.query_text import query_choices
from routecraft.data.schema import RoutingData, validate_queries
from routecraft.strategies import get_strategy, strategies_for
from routecraft.strategies.graders import grade

TEST_TEXTS = {r["query"] for r in read_jsonl(find(dataset_root("llmrouter"), "query_data/default_query_test.jsonl"))}


def test_train_queries_table():
    q = load_queries("llmrouter-train")
    assert validate_queries(q).equals(q)
    assert q["task"].nunique() == 14 and q["query_id"].is_unique
    # the 121 train rows that repeat a test question are held out (all of gpqa's and human_eval's test questions)
    assert len(q) == 5616 - 121 and not (set(q["text"]) & TEST_TEXTS)
    full = llmrouter_queries("train", exclude_test=False)
    assert len(full) == 5616
    counts = q["task"].value_counts()
    assert counts["gpqa"] == 448 - 50 and counts["human_eval"] == 164 - 50 and counts["math"] == 504
    # ids are positions among the task's rows in the file: stable whatever is left out
    assert set(q["query_id"]) <= set(full["query_id"])
    first = full.iloc[0]
    assert first["query_id"] == "llmrouter-train-agentverse-logicgrid-0" and first["gold"] == "C"
    assert first["choices"] == ["1", "2", "3"] and first["metric"] == "em_mc" and first["source_row"] == 0
    mbpp = full[full["source_task_id"] == "617"].iloc[0]
    assert mbpp["query_id"] == "llmrouter-train-mbpp-0" and "assert min_Jumps(3,4,11)==3.5" in mbpp["text"]
    assert json.loads(mbpp["gold"])["tests"].count("assert") == 3 and mbpp["choices"] is None
    he = full[full["source_task_id"] == "HumanEval/0"].iloc[0]
    assert json.loads(he["gold"])["entry_point"] == "has_close_elements"
    assert full.loc[full["task"] == "gsm8k", "gold"].iloc[0] == "20000"


def test_test_queries_and_seeded_samples():
    t = load_queries("llmrouter-test")
    assert len(t) == 706 and t["query_id"].str.startswith("llmrouter-test-").all()
    s50 = load_queries("llmrouter-train:50")
    assert len(s50) == 700 and (s50["task"].value_counts() == 50).all()
    assert s50["task"].iloc[:14].nunique() == 14  # interleaved: the first 14 rows are one per task
    assert s50.equals(load_queries("llmrouter-train", per_task=50, seed=0))  # reproducible
    assert set(s50["query_id"]) <= set(load_queries("llmrouter-train:100")["query_id"])  # a sample can grow
    other = load_queries("llmrouter-train:50", seed=1)
    assert set(other["query_id"]) != set(s50["query_id"]) and len(other) == 700
    small = load_queries("llmrouter-train:200", tasks=["human_eval", "gsm8k"])
    assert small["task"].value_counts().to_dict() == {"gsm8k": 200, "human_eval": 114}  # all of a smaller task
    assert load_queries("llmrouter-train:2", limit=3, offset=1)["query_id"].tolist() == \
        load_queries("llmrouter-train:2")["query_id"].tolist()[1:4]
    with pytest.raises(ValueError, match="unknown task"):
        load_queries("llmrouter-train:5", tasks=["nope"])
    with pytest.raises(ValueError, match="per task"):
        load_queries("llmrouter-train:x")
    with pytest.raises(ValueError, match="llmrouter-train/-test only"):
        load_queries("gsm8k-test", per_task=5)


def test_per_task_strategies_in_the_plan():
    q = load_queries("llmrouter-train:2")
    cells = plan_cells(q["query_id"].tolist(), ["m1", "m2"], "auto", [None, 64], tasks=q["task"].tolist())
    task_of = dict(zip(q["query_id"], q["task"]))
    per_task: dict[str, set] = {}
    for c in cells:
        per_task.setdefault(task_of[c.query_id], set()).add(c.strategy)
    for task, strats in per_task.items():
        assert strats == set(strategies_for(task)), task
    assert "pal" not in per_task["trivia_qa"] | per_task["mbpp"] | per_task["mmlu"] | per_task["commongen"]
    assert per_task["gsm8k"] == {"direct", "cot", "cod", "pal"}
    assert len(cells) == 2 * 2 * 2 * sum(len(strategies_for(t)) for t in per_task)
    assert cells[0].model == "m1" and cells[-1].model == "m2"  # still model by model
    only = plan_cells(q["query_id"].tolist(), ["m"], "auto:pal,direct", [None], tasks=q["task"].tolist())
    assert Counter(c.strategy for c in only) == Counter({"direct": 28, "pal": 6})  # pal on gsm8k, mgsm, math only
    assert strategies_per_task({"gsm8k": ["cot"]}, "gsm8k") == ["cot"]
    # the old form: the same strategies for every query
    assert len(plan_cells(["a", "b"], ["m"], ["cot", "direct"], [None])) == 4
    with pytest.raises(ValueError, match="need the task"):
        plan_cells(["a"], ["m"], "auto", [None])
    # a strategy that cannot run on a task is refused before anything runs
    mb = q[q["task"] == "mbpp"]
    with pytest.raises(ValueError, match="pal on mbpp"):
        check_strategies(plan_cells(mb["query_id"].tolist(), ["m"], ["direct", "pal"], [None],
                                    tasks=mb["task"].tolist()), dict(zip(mb["query_id"], mb["task"])))


def test_queries_with_choices_survive_the_store(tmp_path):
    q = load_queries("llmrouter-train:1")
    store = CollectionStore(tmp_path)
    store.init_queries(q)
    back = store.init_queries(q)  # the second run reads them back from Parquet
    mmlu = q[q["task"] == "mmlu"].iloc[0]
    stored = back.set_index("query_id").loc[mmlu["query_id"], "choices"]
    assert not isinstance(stored, list)  # Parquet gives an array back ...
    assert query_choices(stored) == mmlu["choices"] and len(mmlu["choices"]) == 4  # ... the strategies get a list
    assert query_choices(None) is None and query_choices(float("nan")) is None
    assert query_choices('["a", "b"]') == ["a", "b"] and query_choices("['a', 'b']") == ["a", "b"]


def test_cli_refuses_pal_on_code_before_starting_anything(tmp_path):
    r = subprocess.run([sys.executable, "-m", "routecraft.cli", "collect", "--data", "llmrouter-train:1",
                        "--tasks", "mbpp,gsm8k", "--strategies", "direct,pal", "--out", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "pal on mbpp" in (r.stderr + r.stdout), r.stderr[-2000:]
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_collect_multitask_on_a_real_model(pool, tmp_path):
    from routecraft.data.collect import collect

    q = load_queries("llmrouter-train:1", tasks=["gsm8k", "mmlu", "mbpp", "commongen", "trivia_qa"])
    res = collect(pool, q, pool.names, "auto", [16], tmp_path / "mt", concurrency=2)
    n = sum(len(strategies_for(t)) for t in q["task"])
    assert res["ran"] == n == 16 and res["failed"] == 0, res  # the plain call on commongen and trivia_qa too
    rd = RoutingData.load(tmp_path / "mt")
    o = rd.outcomes.merge(rd.queries, on="query_id")
    assert len(o) == n and o["error"].isna().all()
    for task, g in o.groupby("task"):
        assert set(g["strategy"]) == set(strategies_for(task)), task
    assert (o["output_tokens"] > 0).all() and (o["output_tokens"] <= 26).all()
    # every row records the extracted answer, and its score is the grade of that answer
    for r in o.to_dict("records"):
        choices = query_choices(r["choices"])
        if r["strategy"] != "pal":
            want = get_strategy(r["strategy"]).extract(r["response"], r["task"], choices).answer
            assert (None if pd.isna(r["prediction"]) else r["prediction"]) == want, r
        pred = None if pd.isna(r["prediction"]) else r["prediction"]
        assert r["score"] == grade(r["task"], pred, r["gold"], metric=r["metric"], choices=choices), r
    meta = json.loads((tmp_path / "mt" / "meta.json").read_text())["last_run"]
    assert meta["strategies_spec"] == "auto"
    assert meta["strategies_per_task"]["trivia_qa"] == ["direct", "default", "cot"]


@pytest.mark.slow
def test_cli_collects_per_task_strategies(pool, tmp_path):
    pool_yaml = tmp_path / "pool.yaml"
    pool_yaml.write_text(pool.to_yaml())
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "routecraft.cli", "collect", "--pool", str(pool_yaml),
                        "--data", "llmrouter-train:1", "--tasks", "trivia_qa,gsm8k", "--strategies", "auto",
                        "--budgets", "8", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rd = RoutingData.load(out)
    o = rd.outcomes.merge(rd.queries[["query_id", "task"]], on="query_id")
    got = {t: sorted(g["strategy"]) for t, g in o.groupby("task")}
    assert got == {"gsm8k": ["cod", "cot", "direct", "pal"], "trivia_qa": ["cot", "default", "direct"]}
