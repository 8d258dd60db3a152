"""Router-R1 configuration and CLI plumbing: the shipped config, overrides, errors naming file and field, the pool
subset, the RouterR1 class without a policy, warm-start demonstrations, the --set parser."""

from __future__ import annotations

import pytest

from routecraft.routers.multistep import parse_sets
from routecraft.routers.router_r1 import RouterR1
from routecraft.routers.router_r1.config import ConfigError, RouterR1Config, load_config


def test_builtin_config_loads_with_paper_protocol_defaults():
    c = load_config(None)
    assert c.protocol.max_turns == 4 and c.reward.cost_window == 1000
    assert (c.reward.cost_lo_pct, c.reward.cost_hi_pct) == (5, 95)
    assert c.resolve_pool().names == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    d = RouterR1Config()  # the paper's numbers where it has them
    assert (d.protocol.max_turn_tokens, d.protocol.max_obs_tokens, d.call.max_tokens) == (1024, 600, 512)
    assert (d.train.learning_rate, d.train.beta, d.train.epsilon, d.reward.alpha) == (1e-6, 0.001, 0.2, 0.0)


def test_overrides_merge_nested():
    c = load_config(None, {"train": {"max_steps": 3}, "reward": {"alpha": 0.9}})
    assert c.train.max_steps == 3 and c.reward.alpha == 0.9 and c.train.num_generations == 4


def test_errors_name_file_and_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("reward:\n  alpha: 2\ntrain:\n  learning_rate: -1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "reward.alpha" in msg and "train.learning_rate" in msg
    p.write_text("protocol:\n  max_turn: 4\n")
    with pytest.raises(ConfigError, match="protocol.max_turn"):
        load_config(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(p)
    p.write_text("reward: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_models_must_be_in_the_pool():
    with pytest.raises(ValueError, match=r"models \['gpt-9'\] are not in pool 'local'"):
        RouterR1Config(models=["gpt-9"]).resolve_pool()
    assert RouterR1Config().resolve_pool().names == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    with pytest.raises(ValueError, match="duplicates"):
        RouterR1Config(models=["smollm2-135m", "smollm2-135m"])


def test_router_without_policy_explains_itself():
    r = RouterR1()
    with pytest.raises(ValueError, match="no policy"):
        _ = r.policy_path
    # a multi-step router is trained from its config and decides by running: no fit/predict on it
    from routecraft.routers import MultiStepRouter, TabularRouter

    assert isinstance(r, MultiStepRouter) and not isinstance(r, TabularRouter)
    assert not hasattr(r, "fit") and not hasattr(r, "predict")


def test_save_and_load_round_trip(tmp_path):
    from routecraft.routers import load_router

    r = RouterR1(policy="/somewhere/policy", config={"reward": {"alpha": 0.5}})
    r.save(tmp_path)
    back = load_router(tmp_path)
    assert isinstance(back, RouterR1) and back.policy_path == "/somewhere/policy"
    assert back.config.reward.alpha == 0.5
    assert [c.model for c in back.candidates] == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    with pytest.raises(ValueError, match="holds a 'knn' router"):
        from routecraft.routers import make_router

        make_router("knn").save(tmp_path / "k")
        RouterR1.from_artifact(tmp_path / "k")


def test_parse_sets():
    assert parse_sets(["train.max_steps=3", "reward.alpha=0.5", "protocol.response_prefix=<think>"]) == {
        "train": {"max_steps": 3}, "reward": {"alpha": 0.5}, "protocol": {"response_prefix": "<think>"}}
    with pytest.raises(SystemExit):
        parse_sets(["novalue"])


def test_gsm8k_rows_and_held_out_split():
    from routecraft.routers.multistep import gsm8k_rows
    from routecraft.routers.router_r1.training import eval_rows, train_rows

    tr = gsm8k_rows("train")
    assert len(tr) == 7473 and tr[0]["gold"] == "72" and "####" in tr[0]["solution"]
    c = load_config(None, {"data": {"train_limit": 50, "eval_limit": 20}})
    a, b = train_rows(c), eval_rows(c)
    assert len(a) == 50 and len(b) == 20
    assert not {r["query_id"] for r in a} & {r["query_id"] for r in b}  # test questions never train
    assert all(r["query_id"].startswith("gsm8k-main-test") for r in b)
    assert [r["query_id"] for r in eval_rows(c)] == [r["query_id"] for r in b]  # deterministic
    # default: the first questions of the test file, the ones `routecraft collect --limit N` covers
    assert [r["query_id"] for r in b] == [f"gsm8k-main-test-#{i}" for i in range(20)]
    s = load_config(None, {"data": {"eval_limit": 20, "eval_select": "sample"}})
    sampled = [r["query_id"] for r in eval_rows(s)]
    assert sampled == [r["query_id"] for r in eval_rows(s)] and sampled != [r["query_id"] for r in b]
    with pytest.raises(ConfigError):
        load_config(None, {"data": {"eval_select": "random"}})
