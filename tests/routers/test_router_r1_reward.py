"""Router-R1's reward (the authors' code, ``verl/utils/reward_score/qa_em.py``): outcome metrics, raw cost, the
sliding-window cost normalisation and the hierarchical combination, with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from routecraft.routers.router_r1.reward import (
    CostNormalizer,
    RouterR1Reward,
    combine,
    exact_match,
    normalize_answer,
    outcome_score,
    raw_cost,
)

NAMES = ["smollm2-135m", "qwen2.5-coder-1.5b"]
GOOD = ("<think> ask </think><search> qwen2.5-coder-1.5b: What is 6*7? </search>"
        "<information>42</information><think> ok </think><answer> {a} </answer>")
BAD = "<answer> 42 </answer>"  # no <think>: format −1


def test_normalize_and_exact_match():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    assert exact_match("Eiffel", ["Paris", "Eiffel Tower"]) == 0.0
    assert exact_match("paris", ["Paris", "Eiffel Tower"]) == 1.0
    assert exact_match(None, "x") == 0.0
    with pytest.raises(ValueError, match="missing"):
        exact_match("x", None)
    with pytest.raises(ValueError, match="empty"):
        exact_match("x", [])


def test_outcome_metrics():
    assert outcome_score("1,200", "1200", "gsm8k", "grader") == 1.0
    assert outcome_score("$1200.", "1200", "gsm8k", "grader") == 1.0
    assert outcome_score("1,200", "1200", "gsm8k", "em") == 1.0  # EM drops punctuation
    assert outcome_score("1200 apples", "1200", "gsm8k", "em") == 0.0  # ... but not words
    assert outcome_score("1200 apples", "1200", "gsm8k", "grader") == 1.0
    assert outcome_score("1201", "1200", "gsm8k", "grader") == 0.0
    assert outcome_score("new york city", "New York", "qa", "f1") == pytest.approx(0.8)
    assert outcome_score(None, "1", "gsm8k", "grader") == 0.0
    with pytest.raises(ValueError, match="unknown outcome"):
        outcome_score("1", "1", "gsm8k", "bleu")


def test_raw_cost_counts_output_tokens_only():
    calls = [{"output_tokens": 100, "price_out_per_m": 0.25, "input_tokens": 10_000},
             {"output_tokens": 0, "price_out_per_m": 0.25}, {"output_tokens": None, "price_out_per_m": 1.0},
             {"output_tokens": 20, "price_out_per_m": 0.02}]
    assert raw_cost(calls) == pytest.approx(100 * 0.25 + 20 * 0.02)
    assert raw_cost([]) == 0.0


def test_combine_is_hierarchical():
    assert combine(-1.0, 1.0, 1.0, 0.5) == -1.0  # format failure gates everything
    assert combine(0.0, 1.0, 0.2, 0.0) == 1.0
    assert combine(0.0, 1.0, 0.2, 0.5) == pytest.approx(0.5 + 0.5 * 0.2)
    assert combine(0.0, 1.0, 0.0, 0.9) == pytest.approx(0.1)
    assert combine(0.0, 0.0, 1.0, 0.9) == 0.0  # no cost bonus without a right answer
    assert combine(0.0, 0.5, 1.0, 0.5) == pytest.approx(0.75)  # graded outcome (F1)
    with pytest.raises(ValueError, match="alpha"):
        combine(0.0, 1.0, 1.0, 1.5)


def test_cost_normalizer_degenerate_window_gives_half():
    n = CostNormalizer()
    assert n(4.0) == 0.5  # one value: p95 − p5 = 0
    assert n.score_batch([4.0, 4.0]) == [0.5, 0.5]


def test_cost_normalizer_hand_computed():
    n = CostNormalizer(window=1000, lo_pct=5, hi_pct=95)
    scores = n.score_batch([0.0, 1.0, 4.0, 9.0, 16.0])  # sqrt → 0, 1, 2, 3, 4
    lo, hi = np.percentile([0, 1, 2, 3, 4], 5), np.percentile([0, 1, 2, 3, 4], 95)
    assert (lo, hi) == pytest.approx((0.2, 3.8))
    expected = [1 - min(1, max(0, (c - lo) / (hi - lo))) for c in (0, 1, 2, 3, 4)]
    assert scores == pytest.approx(expected)
    assert scores[0] == 1.0 and scores[-1] == 0.0  # the cheapest scores 1, the dearest 0 (clipped)
    assert scores[2] == pytest.approx(0.5)


def test_cost_normalizer_uses_sqrt_and_is_monotone():
    n = CostNormalizer()
    s = n.score_batch([1.0, 2.0, 50.0, 100.0, 400.0, 10_000.0])
    assert all(a >= b for a, b in zip(s, s[1:]))
    assert list(n.values)[:3] == pytest.approx([1.0, math.sqrt(2.0), math.sqrt(50.0)])


def test_cost_normalizer_window_slides():
    n = CostNormalizer(window=3)
    n.score_batch([100.0, 100.0, 100.0])
    assert n(100.0) == 0.5
    n.score_batch([0.0, 1.0])
    assert list(n.values) == [10.0, 0.0, 1.0]  # only the last 3 square roots remain
    # a cost of 100 is now the dearest in the window: score 0
    assert n(100.0) == 0.0


def test_cost_normalizer_state_round_trip_and_validation():
    n = CostNormalizer(window=5)
    n.score_batch([1.0, 4.0, 9.0])
    m = CostNormalizer()
    m.load_state_dict(n.state_dict())
    assert m.window == 5 and list(m.values) == list(n.values) and m(16.0) == n(16.0)
    with pytest.raises(ValueError, match="window"):
        CostNormalizer(window=0)
    with pytest.raises(ValueError, match="percentiles"):
        CostNormalizer(lo_pct=95, hi_pct=5)
    with pytest.raises(ValueError, match="non-negative"):
        n(-1.0)


def test_router_r1_reward_batch():
    r = RouterR1Reward(NAMES, alpha=0.5, metric="grader")
    out = r.score([GOOD.format(a="42"), GOOD.format(a="41"), BAD, GOOD.format(a="42")],
                  ["42", "42", "42", "42"], [25.0, 25.0, 0.0, 100.0], ["gsm8k"] * 4)
    right_cheap, wrong, bad, right_dear = out
    assert bad.reward == -1.0 and bad.format_score == -1.0 and bad.format_violations
    assert wrong.reward == 0.0 and wrong.outcome == 0.0 and wrong.answer == "41"
    assert right_cheap.outcome == 1.0 and right_dear.outcome == 1.0
    # window = sqrt(25, 25, 0, 100) = (5, 5, 0, 10): the cheaper right answer gets the larger reward
    assert right_cheap.reward > right_dear.reward
    assert right_dear.reward == pytest.approx(0.5)  # the dearest: R_cost 0
    assert right_cheap.reward == pytest.approx(0.5 + 0.5 * right_cheap.cost_score)
    assert r.score([], [], []) == []
    with pytest.raises(ValueError, match="1 responses but 2 golds"):
        r.score([GOOD], ["1", "2"], [0.0])


def test_alpha_zero_ignores_cost():
    r = RouterR1Reward(NAMES, alpha=0.0, metric="em")
    a, b = r.score([GOOD.format(a="42"), GOOD.format(a="42")], ["42", "42"], [0.0, 1e6])
    assert a.reward == b.reward == 1.0


def test_reward_rejects_bad_settings():
    with pytest.raises(ValueError, match="alpha"):
        RouterR1Reward(NAMES, alpha=-0.1)
    with pytest.raises(ValueError, match="unknown outcome"):
        RouterR1Reward(NAMES, metric="accuracy")
