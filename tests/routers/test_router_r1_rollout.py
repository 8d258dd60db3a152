"""The Router-R1 rollout engine against a real SmolLM2 llama.cpp server (the ``pool`` fixture), driven by a scripted
policy that emits fixed text per turn — so every protocol path (valid call, unknown model, invalid search, failed
backend, no answer, over-long turns and replies) is exercised deterministically. The real (sampling) policy is
tested in the trainer smoke test (tests/train/test_train_grpo.py).

Also: the loss mask zeroes exactly the inserted ``<information>`` spans (and a forced response prefix), nothing else.
"""

from __future__ import annotations

import pytest

from routecraft.pool.config import Pool, PoolModel
from routecraft.routers.router_r1.backends import Call, PoolCaller
from routecraft.routers.router_r1.protocol import check_format
from routecraft.routers.router_r1.rollout import RolloutEngine, RolloutSettings, ScriptedPolicy
from routecraft.train.masking import flatten, masked_spans

pytestmark = pytest.mark.slow

ASK = "<think> I need help. </think>\n<search> smollm2-135m: What is the capital of France? </search>"
ANSWER = "<think> The reply helps. </think>\n<answer> Paris </answer>"


@pytest.fixture(scope="module")
def tok():
    from routecraft.train.policy import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def pool2(pool):
    """The fixture's SmolLM2 plus a model whose endpoint refuses connections (a real failing backend)."""
    m = pool.models[0]
    dead = PoolModel(name="dead-model", endpoint="http://127.0.0.1:9/v1", price_in_per_m=1.0, price_out_per_m=2.0,
                     description="an endpoint nothing listens on")
    return Pool(name="test", models=[m, dead])


def engine(tok, pool, script, **settings) -> RolloutEngine:
    caller = PoolCaller(pool, max_tokens=24, max_retries=0, timeout=60)
    defaults = dict(max_turns=4, max_turn_tokens=96, max_obs_tokens=120, max_response_tokens=1200,
                    max_context_tokens=4096, prompt="compact")
    defaults.update(settings)
    return RolloutEngine(ScriptedPolicy(tok, script), caller, RolloutSettings(**defaults))


@pytest.fixture(scope="module")
def batch(tok, pool2):
    script = [
        [ASK, ANSWER],  # 0: one valid call, then an answer
        ["<think> hmm </think>\n<search> gpt-5: What is 2+2? </search>", ANSWER],  # 1: unknown model
        ["<think> hmm </think>\n<search> smollm2-135m what is 2+2 </search>", ANSWER],  # 2: invalid (no ':')
        ["<think> hmm </think>\n<search> dead-model: What is 2+2? </search>", ANSWER],  # 3: backend down
        [ASK],  # 4: never answers: 4 routed turns, then a final turn whose search is not routed
        ["<think> no help needed </think>\n<answer> 4 </answer> trailing text"],  # 5: direct answer
        ["<think> split </think>\n<search> smollm2-135m: What is the", " capital of Italy? </search>", ANSWER],
    ]
    eng = engine(tok, pool2, script)
    return eng, eng.run([f"question {i}" for i in range(len(script))])


def test_valid_call_is_routed_and_inserted(batch):
    eng, trajs = batch
    t = trajs[0]
    assert t.stop_reason == "answer" and t.answer == "Paris"
    assert len(t.calls) == 1 and t.valid_actions == 2
    c = t.calls[0]
    assert c.ok and c.model == "smollm2-135m" and c.query == "What is the capital of France?"
    assert c.response.strip() and 0 < c.output_tokens <= 24 and c.input_tokens > 0
    m = eng.caller.pool.get("smollm2-135m")
    assert c.raw_cost == pytest.approx(c.output_tokens * m.price_out_per_m)
    assert c.cost_usd == pytest.approx(m.cost(c.input_tokens, c.output_tokens))
    assert t.cost_raw == pytest.approx(c.raw_cost) and t.cost_usd == pytest.approx(c.cost_usd)
    assert t.response.startswith(ASK + "\n\n<information>") and t.response.endswith(ANSWER)
    assert check_format(t.response, eng.names).ok, check_format(t.response, eng.names).violations
    assert [x.action for x in t.turns] == ["search", "answer"] and t.turns[0].call == 0


def test_unknown_model_gets_information_none(batch):
    eng, trajs = batch
    t = trajs[1]
    assert len(t.calls) == 1 and t.calls[0].model is None and "unknown model 'gpt-5'" in t.calls[0].error
    assert "<information>None</information>" in t.response
    assert t.valid_actions == 1  # only the answer
    v = check_format(t.response, eng.names).violations
    assert any("unknown model" in x for x in v)


def test_invalid_search_gets_no_observation(batch):
    eng, trajs = batch
    t = trajs[2]
    assert t.calls == [] and "<information>" not in t.response and t.stop_reason == "answer"
    assert t.turns[0].action == "none" and "no ':'" in t.turns[0].error
    assert any("1 <search> but 0 <information>" in x for x in check_format(t.response, eng.names).violations)


def test_failed_backend_gets_information_none(batch):
    eng, trajs = batch
    t = trajs[3]
    c = t.calls[0]
    assert c.model == "dead-model" and not c.ok and "127.0.0.1:9" in c.error
    assert c.output_tokens == 0 and c.raw_cost == 0.0
    assert "<information>None</information>" in t.response and t.valid_actions == 1


def test_turn_limit_and_final_turn_without_routing(batch):
    eng, trajs = batch
    t = trajs[4]
    assert t.stop_reason == "max_turns" and t.answer is None
    assert len(t.turns) == 5 and len(t.calls) == 4
    assert [x.routed for x in t.turns] == [True, True, True, True, False] and t.turns[-1].final
    assert t.response.count("<search>") == 5 and t.response.count("<information>") == 4


def test_turn_text_is_cut_after_the_answer(batch):
    eng, trajs = batch
    t = trajs[5]
    assert t.response == "<think> no help needed </think>\n<answer> 4 </answer>"
    assert len(t.turns) == 1 and t.calls == []
    assert check_format(t.response, eng.names).ok


def test_search_split_across_turns_is_routed(batch):
    eng, trajs = batch
    t = trajs[6]  # a turn that ran out (no stop tag) continues in the next one
    assert [x.action for x in t.turns] == ["none", "search", "answer"]
    assert len(t.calls) == 1 and t.calls[0].query == "What is the capital of Italy?" and t.calls[0].ok
    assert check_format(t.response, eng.names).ok


def test_mask_zeroes_exactly_the_information_spans(batch, tok):
    eng, trajs = batch
    for t in trajs:
        ids, mask = t.completion_ids, t.loss_mask
        assert len(ids) == len(mask) == t.n_tokens
        spans = masked_spans(mask)
        assert len(spans) == len(t.calls)
        for (a, b), _call in zip(spans, t.calls):
            text = tok.decode(ids[a:b])
            assert text.strip().startswith("<information>") and text.strip().endswith("</information>")
        # the unmasked tokens are the policy's turns, in order
        kept = [i for i, m in zip(ids, mask) if m]
        assert tok.decode(kept) == "".join(x.text for x in t.turns)
        assert tok.decode(ids) == t.response


def test_over_long_turns_and_replies_are_capped(tok, pool):
    long_think = "<think> " + "very " * 200 + "</think>\n<answer> 1 </answer>"
    eng = engine(tok, pool, [[long_think]], max_turn_tokens=16, max_turns=2)
    (a,) = eng.run(["q0"])
    assert all(x.tokens == 16 for x in a.turns) and a.answer is None  # the answer never fits in 16 tokens
    assert a.stop_reason == "max_turns" and len(a.turns) == 3
    explain = "<think> hmm </think>\n<search> smollm2-135m: Explain in detail how photosynthesis works. </search>"
    eng = engine(tok, pool, [[explain, ANSWER]], max_obs_tokens=20)
    eng.caller.max_tokens = 48
    (b,) = eng.run(["q1"])
    assert b.calls[0].output_tokens > 20  # the reply is longer than the cap
    info = b.segments[1][0]
    assert len(info) <= 20 and b.turns[0].info_tokens == len(info)
    assert tok.decode(info).endswith("</information>\n\n")
    # obs_keep="tail": the same cap keeps the reply's end (where a worked solution states its result)
    eng_t = engine(tok, pool, [[explain, ANSWER]], max_obs_tokens=20, obs_keep="tail")
    eng_t.caller.max_tokens = 48
    (bt,) = eng_t.run(["q1"])
    info_t = tok.decode(bt.segments[1][0])
    assert len(bt.segments[1][0]) <= 20 and info_t.strip().startswith("<information>")
    reply = bt.calls[0].response.strip()
    body_t = info_t.strip()[len("<information>"):-len("</information>")].strip()
    assert body_t and reply.endswith(body_t[-8:]) and not reply.startswith(body_t[:12])
    # total cap: the response stops once it reaches max_response_tokens
    eng2 = engine(tok, pool, [[ASK]], max_response_tokens=60, max_turns=4)
    (c,) = eng2.run(["q"])
    assert c.stop_reason == "max_tokens" and c.n_tokens >= 60 and len(c.turns) < 5


def test_response_prefix_is_in_the_response_but_masked(tok, pool):
    eng = engine(tok, pool, [[ANSWER[len("<think>"):]]], response_prefix="<think>")
    (t,) = eng.run(["q"])
    assert t.response == ANSWER and check_format(t.response, eng.names).ok
    pre = tok.encode("<think>", add_special_tokens=False)
    assert t.completion_ids[: len(pre)] == pre and t.loss_mask[: len(pre)] == [0] * len(pre)
    assert all(t.loss_mask[len(pre):])


def test_prompt_ids_follow_the_chat_template(tok, pool):
    eng = engine(tok, pool, [["x"]])
    text = tok.decode(eng.prompt_ids("How many legs has a spider"))
    assert "Question: How many legs has a spider?" in text and "smollm2-135m" in text
    assert text.rstrip().endswith("assistant")


def test_caller_runs_a_batch_concurrently(pool):
    caller = PoolCaller(pool, max_tokens=8, max_concurrency=4)
    calls = [Call(model="smollm2-135m", written_model="smollm2-135m", query=f"Say the number {i}.", response=None)
             for i in range(4)]
    out = caller.call_many(calls)
    assert all(c.ok and c.output_tokens > 0 for c in out)
    assert caller.call_many([]) == []


def test_flatten_masks():
    ids, mask = flatten([([1, 2], True), ([3], False), ([], True), ([4, 5], True), ([6, 7], False)])
    assert ids == [1, 2, 3, 4, 5, 6, 7] and mask == [1, 1, 0, 1, 1, 0, 0]
    assert masked_spans(mask) == [(2, 3), (5, 7)]


# ---------------------------------------------------------------------------------------------- candidate targets

def test_candidate_targets_run_through_the_consultation_executor(tok, pool2):
    """``call.targets: candidates``: the policy names model × strategy; the call runs the strategy on the sub-query
    through routecraft's consultation executor (real SmolLM2), the reply ends with the extracted answer, and the
    call records the consultation in the same form as the gateway's plans (``Consultation.to_dict``). A candidate
    on a dead backend is an observation ("no answer"), never an exception."""
    from routecraft.data.schema import Candidate
    from routecraft.routers.router_r1.backends import target_name

    m = pool2.models[0].name
    targets = [Candidate(m, "cot", 48), Candidate(m, "direct"), Candidate("dead-model", "cot")]
    caller = PoolCaller(pool2, max_tokens=24, max_retries=0, timeout=60, targets=targets, task="gsm8k")
    names = caller.names
    assert names == [target_name(c) for c in targets] == [f"{m}-cot-48", f"{m}-direct", "dead-model-cot"]
    assert [c.name for c in caller.cards()] == names and "Strategy:" in caller.cards()[0].description
    script = [
        [f"<think> ask </think>\n<search> {m}-cot-48: What is 2 + 3? </search>", ANSWER],
        ["<think> ask </think>\n<search> dead-model-cot: What is 2 + 3? </search>", ANSWER],
        [f"<think> ask </think>\n<search> {m}: What is 2 + 3? </search>", ANSWER],  # a model, not a candidate
    ]
    eng = RolloutEngine(ScriptedPolicy(tok, script), caller,
                        RolloutSettings(max_turns=2, max_turn_tokens=96, max_obs_tokens=200, max_response_tokens=1200,
                                        max_context_tokens=4096, prompt="compact"))
    ok, dead, unknown = eng.run(["q0", "q1", "q2"])

    c = ok.calls[0]
    assert c.ok and c.model == m and c.candidate == Candidate(m, "cot", 48).id and c.target == f"{m}-cot-48"
    assert 0 < c.output_tokens <= 48 and c.cost_usd > 0
    con = c.consultation
    assert set(con) == {"candidate", "model", "stage", "answer", "input_tokens", "output_tokens", "cost_usd",
                        "latency_ms", "error"}
    assert con["candidate"] == c.candidate and con["output_tokens"] == c.output_tokens and con["error"] is None
    if c.answer is not None:  # the policy reads the extracted answer at the end of the reply
        assert c.response.endswith(f"Answer: {c.answer}") and con["answer"] == c.answer
    assert ok.summary()["consultations"] == [con]
    assert ok.candidates_called() == [c.candidate]

    d = dead.calls[0]
    assert not d.ok and d.model == "dead-model" and d.consultation["error"] and d.consultation["output_tokens"] == 0
    assert "<information>None</information>" in dead.response

    u = unknown.calls[0]
    assert u.model is None and u.consultation is None and "unknown" in (u.error or "")


def test_candidate_targets_config_is_validated():
    from routecraft.routers.router_r1.config import ConfigError, load_config

    cfg = load_config(None, {"call": {"targets": "candidates", "candidates": ["qwen2.5-coder-1.5b/pal",
                                                                             "smollm2-135m/cot/64"]}})
    assert [c.id for c in cfg.call_targets()] == ["qwen2.5-coder-1.5b|pal|default", "smollm2-135m|cot|64"]
    with pytest.raises(ConfigError, match="unknown strategy 'magic'"):
        load_config(None, {"call": {"targets": "candidates", "candidates": ["smollm2-135m/magic"]}})
    with pytest.raises(ValueError, match="outside the policy's pool"):
        load_config(None, {"call": {"targets": "candidates", "candidates": ["gpt-9/cot"]}}).call_targets()
    assert load_config(None).call_targets() is None  # the paper's model targets stay the default


def test_candidate_targets_parse_and_are_saved_with_the_artifact(tmp_path):
    from routecraft.routers.registry import load_router
    from routecraft.routers.router_r1 import RouterR1
    from routecraft.routers.router_r1.config import load_config, parse_target

    assert parse_target("openai/gpt-4o-mini/cot").id == "openai/gpt-4o-mini|cot|default"  # a '/' in the model
    assert parse_target("m/cot/64").id == "m|cot|64" and parse_target("m|pal|default").id == "m|pal|default"
    cfg = load_config(None, {"call": {"targets": "candidates", "candidates": ["qwen2.5-coder-1.5b/pal"]}})
    r = RouterR1(policy="unused", config=cfg.model_dump())
    back = load_router(r.save(tmp_path / "rr1"))
    assert [c.id for c in back.candidates] == ["qwen2.5-coder-1.5b|pal|default"]
