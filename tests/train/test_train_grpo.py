"""The real trainer, end to end: GRPO through TRL with the SmolLM2-135M policy (converted from the local GGUF) calling
the SmolLM2 fixture server, tiny lengths — one step, a checkpoint, a resume to step 2 — then the artifact as a router
(load_router, run, decide, route_router_r1). This is where the real (sampling) policy drives the rollout engine."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def tiny_overrides(pool_yaml: str, steps: int) -> dict:
    return {
        "pool": pool_yaml, "models": ["smollm2-135m"],
        "protocol": {"max_turns": 1, "max_turn_tokens": 12, "max_obs_tokens": 24, "max_response_tokens": 64,
                     "prompt": "compact", "response_prefix": "<think>", "answer_example": "42"},
        "call": {"max_tokens": 8, "max_retries": 0},
        "reward": {"alpha": 0.5, "outcome": "grader"},
        "data": {"train_limit": 4, "eval_limit": 2},
        "backends": {"mode": "running"},
        "warmup": {"steps": 1, "demos": 2, "batch_size": 2, "learning_rate": 1e-4},
        "train": {"policy": "smollm2-135m", "max_steps": steps, "questions_per_step": 1, "num_generations": 2,
                  "micro_batch": 2, "learning_rate": 1e-5, "beta": 0.0, "save_steps": 1, "save_total_limit": 3,
                  "threads": 1},
    }


@pytest.fixture(scope="module")
def trained(pool, tmp_path_factory):
    from routecraft.routers.router_r1 import train_router_r1

    d = tmp_path_factory.mktemp("rr1")
    pool_yaml = d / "pool.yaml"
    pool_yaml.write_text(pool.to_yaml())
    out = d / "run"
    train_router_r1(None, out, resume=True, overrides=tiny_overrides(str(pool_yaml), 1))
    first = {"metrics": (out / "metrics.jsonl").read_text(), "ckpts": checkpoints(out)}
    state1 = json.loads((out / "checkpoints" / "checkpoint-1" / "routecraft_state.json").read_text())
    # the second, resumed run goes through the CLI: routecraft train --router router-r1 --set ...
    from typer.testing import CliRunner

    from routecraft.cli import app

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}={json.dumps(v)}"

    args = ["train", "--router", "router-r1", "--out", str(out)]
    for item in flat(tiny_overrides(str(pool_yaml), 2)):
        args += ["--set", item]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "trained router-r1" in res.output
    return out, first, state1


def checkpoints(out) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))


def records(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_one_step_logs_every_curve_metric(trained):
    out, first, _ = trained
    recs = [json.loads(x) for x in first["metrics"].splitlines()]
    warm = [r for r in recs if r.get("stage") == "warm_start"]
    rl = [r for r in recs if "stage" not in r and "reward" in r]
    assert len(warm) == 1 and warm[0]["loss"] > 0
    assert [r["step"] for r in rl] == [1]
    r = rl[0]
    for key in ("reward", "router_r1/format_error", "router_r1/outcome", "router_r1/calls", "router_r1/cost_usd",
                "router_r1/cost_raw", "router_r1/turns", "router_r1/policy_tokens"):
        assert key in r, key
    assert -1.0 <= r["reward"] <= 1.0 and 0.0 <= r["router_r1/format_error"] <= 1.0
    # TRL counts only unmasked completion tokens (its tool mask = our env_mask): equal to the policy's own tokens,
    # which excludes the <information> blocks and the forced prefix
    assert r["completions/mean_length"] == pytest.approx(r["router_r1/policy_tokens"])
    assert first["ckpts"] == ["checkpoint-1"]


def test_resume_continues_from_the_checkpoint(trained):
    out, _, state1 = trained
    rl = [r for r in records(out) if "stage" not in r and "reward" in r]
    assert [r["step"] for r in rl] == [1, 2]  # step 1 not repeated
    assert checkpoints(out) == ["checkpoint-1", "checkpoint-2"]
    state2 = json.loads((out / "checkpoints" / "checkpoint-2" / "routecraft_state.json").read_text())
    v1, v2 = state1["cost_normalizer"]["values"], state2["cost_normalizer"]["values"]
    assert len(v1) == 2 and len(v2) == 4 and v2[:2] == v1  # the cost window was restored, then extended
    trainer_state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == 2
    rollouts = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 4 and all("reward" in x and "response" in x for x in rollouts)
    assert [x["step"] for x in rollouts] == [1, 1, 2, 2]  # numbered as metrics.jsonl; none repeated by the resume
    assert (out / "curves.png").stat().st_size > 10_000


def test_rerun_of_a_finished_run_trains_nothing(trained, smollm_server):
    """Running the finished command again (or with max_steps lowered to an existing checkpoint) takes the
    checkpoint's weights: no new step, no new rollout, and the saved policy is the checkpoint's."""
    import torch
    from safetensors.torch import load_file

    from routecraft.routers.router_r1 import train_router_r1

    out, _, _ = trained
    before = {"metrics": (out / "metrics.jsonl").read_text(), "rollouts": (out / "rollouts.jsonl").read_text()}
    pool_yaml = out.parent / "pool.yaml"
    train_router_r1(None, out, resume=True, overrides=tiny_overrides(str(pool_yaml), 2))
    assert (out / "rollouts.jsonl").read_text() == before["rollouts"]
    rl = [r for r in records(out) if "stage" not in r and "reward" in r]
    assert [r["step"] for r in rl] == [1, 2]
    ck = load_file(str(out / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    pol = load_file(str(out / "policy" / "model.safetensors"))
    assert ck.keys() == pol.keys() and all(torch.equal(ck[k], pol[k]) for k in ck)
    # max_steps lowered to the first checkpoint: the policy is checkpoint-1's weights, and the log stays whole
    train_router_r1(None, out, resume=True, overrides=tiny_overrides(str(pool_yaml), 1))
    ck1 = load_file(str(out / "checkpoints" / "checkpoint-1" / "model.safetensors"))
    pol1 = load_file(str(out / "policy" / "model.safetensors"))
    assert all(torch.equal(ck1[k], pol1[k]) for k in ck1)
    assert [r["step"] for r in records(out) if "stage" not in r and "reward" in r] == [1, 2]
    train_router_r1(None, out, resume=True, overrides=tiny_overrides(str(pool_yaml), 2))  # back to the final state


def test_artifact_routes_and_round_trips(trained, smollm_server):
    from routecraft.routers import load_router
    from routecraft.routers.router_r1 import RouterR1, route_router_r1
    from routecraft.routers.router_r1.runtime import format_trajectory

    out, _, _ = trained
    meta = json.loads((out / "router.json").read_text())
    assert meta["router"] == "router-r1" and meta["params"]["policy"].endswith("policy")
    assert meta["candidates"] == ["smollm2-135m"]
    r = load_router(out)
    assert isinstance(r, RouterR1) and (out / "policy" / "config.json").is_file()
    summary = route_router_r1(out, QUESTION)
    assert summary["question"] == QUESTION and summary["turns"]
    assert summary["stop_reason"] in ("answer", "max_turns", "max_tokens")
    for c in summary["calls"]:
        assert {"model", "query", "response", "output_tokens", "cost_usd", "raw_cost"} <= set(c)
    text = format_trajectory(summary)
    assert text.startswith("question: ") and "answer:" in text
    from typer.testing import CliRunner

    from routecraft.cli import app

    res = CliRunner().invoke(app, ["route", "--router", str(out), QUESTION])
    assert res.exit_code == 0, res.output
    assert f"question: {QUESTION}" in res.output and "answer:" in res.output  # (stderr's progress bars mix in)
    import pandas as pd

    try:
        d = r.decide(pd.DataFrame({"query_id": ["q"], "text": [QUESTION]}))[0]
    finally:
        r.close()
    assert d.plan["router"] == "router-r1" and d.candidate.model == "smollm2-135m"
    assert d.predicted_cost == pytest.approx(d.plan["cost_usd"])
    json.dumps(d.to_dict())  # the gateway can serialise it
    assert not hasattr(r, "fit")  # trained from its config (train_from_config), never fit on a table


def test_held_out_evaluation_of_the_artifact(trained, smollm_server, tmp_path):
    """`python -m routecraft.routers.router_r1 eval ARTIFACT` on 2 held-out questions: per-question JSONL written,
    summary numbers are the means of its rows, questions are the first of the test file (the collected ones)."""
    from routecraft.routers.router_r1.__main__ import main

    out, _, _ = trained
    jsonl = tmp_path / "eval.jsonl"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["eval", str(out), "--limit", "2", "--out", str(jsonl)]) == 0
    res = json.loads(buf.getvalue())
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [r["query_id"] for r in rows] == ["gsm8k-main-test-#0", "gsm8k-main-test-#1"]
    assert res["n"] == 2 and res["exact_match"] == pytest.approx(sum(r["score"] for r in rows) / 2)
    assert res["cost_usd_per_question"] == pytest.approx(sum(r["cost_usd"] for r in rows) / 2)
    assert res["format_error"] == pytest.approx(sum(not r["format_ok"] for r in rows) / 2)
    assert all(set(r) >= {"score", "cost_usd", "n_calls", "calls", "response"} for r in rows)
    # a wrong artifact path is a clear error, not a traceback
    assert main(["eval", str(tmp_path / "nope")]) == 2
