"""The CLI end to end, as a user runs it (subprocesses, real packaged data, real encoder)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest


def rc(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "routecraft.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_and_data_list():
    r = rc("--help")
    assert r.returncode == 0 and "bench" in r.stdout and "collect" in r.stdout and "pool" in r.stdout
    r = rc("data", "list")
    assert r.returncode == 0
    assert set(r.stdout.split()) >= {"zeroeval-gsm8k", "llmrouter-dcrouter", "routellm-gsm8k", "routellm-mmlu",
                                     "routellm-mtbench"}


def test_bench_end_to_end(tmp_path):
    out = tmp_path / "bench"
    r = rc("bench", "--data", "routellm-mtbench", "--routers", "random,cheapest,best-single,knn:k=5,linear,oracle",
           "--seeds", "0,1,2", "--out", str(out), "--n-lambdas", "20")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| knn(k=5) |" in r.stdout and "AIQ" in r.stdout and "APGR" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    rows = {s["router"]: s for s in summary["summary"]}
    assert set(rows) == {"random", "cheapest", "best-single", "knn(k=5)", "linear", "oracle"}
    # the oracle is at least as good as every router at its peak, and cheaper to reach the best model's score
    assert all(rows["oracle"]["peak"] >= r_["peak"] - 1e-12 for r_ in rows.values())
    assert summary["reference"]["best"] == "gpt-4-1106-preview"
    assert (out / "table.md").read_text().startswith("# routecraft bench")
    assert (out / "tradeoff.png").stat().st_size > 20_000


def test_bench_bad_input_is_a_clear_error(tmp_path):
    r = rc("bench", "--data", "no-such-data", "--out", str(tmp_path))
    assert r.returncode == 2 and "neither a built-in dataset" in r.stderr and "Traceback" not in r.stderr
    r = rc("bench", "--data", "routellm-mtbench", "--routers", "knn:oops", "--out", str(tmp_path))
    assert r.returncode == 2 and "key=value" in r.stderr
    r = rc("bench", "--data", "routellm-mtbench", "--routers", "nope", "--out", str(tmp_path))
    assert r.returncode == 2 and "unknown router" in r.stderr


def test_import_generic_train_route_calibrate(tmp_path):
    # a user's own wide CSV: one score column per model, a cost column per model
    n = 60
    df = pd.DataFrame({"question": [f"What is {i} plus {i}?" if i % 2 else f"Name a colour number {i}."
                                    for i in range(n)],
                       "small": [float(i % 2 == 0) for i in range(n)], "big": [1.0] * n,
                       "small_cost": [0.001] * n, "big_cost": [0.01] * n})
    csv = tmp_path / "mine.csv"
    df.to_csv(csv, index=False)
    data = tmp_path / "data"
    r = rc("data", "import", str(csv), "--out", str(data), "--format", "wide", "--text-col", "question",
           "--model-columns", "small,big", "--cost-col", "{model}_cost")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (data / "outcomes.parquet").exists()
    r = rc("data", "show", str(data))
    assert r.returncode == 0 and "small" in r.stdout and "big" in r.stdout

    art = tmp_path / "knn"
    r = rc("train", "--router", "knn:k=5", "--data", str(data), "--out", str(art))
    assert r.returncode == 0, r.stderr[-2000:]
    r = rc("route", "--router", str(art), "--lambda", "50", "--json", "What is 7 plus 7?")
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert d["model"] in ("small", "big") and len(d["table"]) == 2
    assert {row["candidate"] for row in d["table"]} == {"small", "big"}

    r = rc("calibrate", "--data", str(data), "--router", "knn:k=5", "--target-cost", "0.006")
    assert r.returncode == 0, r.stderr[-2000:]
    cal = json.loads(r.stdout)
    assert cal["cal_cost"] <= 0.006 and 0.0 <= cal["test_score"] <= 1.0

    # a malformed row names file, row and column
    bad = df.astype({"small": object})
    bad.loc[7, "small"] = "maybe"
    bad.to_csv(csv, index=False)
    r = rc("data", "import", str(csv), "--out", str(tmp_path / "bad"), "--format", "wide", "--text-col",
           "question", "--model-columns", "small,big", "--cost-col", "{model}_cost")
    assert r.returncode == 2 and "mine.csv" in r.stderr and "Traceback" not in r.stderr
    assert "small" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (("route", "--router", "/nonexistent", "hi"), "not a router artifact"),
    (("calibrate", "--data", "routellm-mtbench"), "exactly one target"),
])
def test_more_clear_errors(args, needle):
    r = rc(*args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_train_on_a_multi_task_collection_keeps_every_question(tmp_path):
    """PAL was never collected on the multiple-choice and open questions of the multi-task collection: train fills
    those cells (score 0 at the dearest cost, as the bench does) instead of fitting on the arithmetic questions only,
    says so, and the kind router learns from every kind."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "data" / "routecraft-multitask-test"
    n = len(pd.read_parquet(data / "queries.parquet"))
    o = pd.read_parquet(data / "outcomes.parquet", columns=["model", "strategy"])
    c = len(o.drop_duplicates())  # every (model, strategy) collected on some question: 4 x 5, the plain call too
    art = tmp_path / "kind"
    r = rc("train", "--router", "kind", "--data", str(data), "--out", str(art))
    assert r.returncode == 0, r.stderr[-2000:]
    text = " ".join(r.stderr.split())
    assert c == 20 and f"({n} queries, {c} candidates)" in text and "note: filled" in text
    meta = json.loads((art / "router.json").read_text())
    assert meta["router"] == "kind"
    from routecraft.routers import load_router

    question = "Which is a mammal?\n(A) shark\n(B) whale"
    r = rc("route", "--router", str(art), "--json", question)
    assert r.returncode == 0, r.stderr[-2000:]
    want = load_router(art).decide_one(question)  # the choice row of the table the artifact holds
    assert json.loads(r.stdout)["candidate"] == want.candidate.id
    r = rc("train", "--router", "kind", "--data", str(data), "--out", str(art), "--min-coverage", "1.5")
    assert r.returncode == 2 and "--min-coverage must be in (0, 1]" in r.stderr and "Traceback" not in r.stderr

