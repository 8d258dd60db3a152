"""Routing metrics on small hand-checked curves; expected numbers are worked out by hand in the comments."""
import math

import numpy as np
import pytest

from routecraft.core import metrics as M


# ---- frontier and hull ------------------------------------------------------------------------------------------
def test_pareto_frontier_drops_dominated_and_duplicates_and_sorts():
    cost = [3, 1, 2, 2, 1, 4]
    score = [0.9, 0.5, 0.4, 0.6, 0.5, 0.9]
    # (2,0.4) is beaten by (2,0.6); the second (1,0.5) is a duplicate; (4,0.9) costs more than (3,0.9)
    c, s = M.pareto_frontier(cost, score)
    assert c.tolist() == [1, 2, 3]
    assert s.tolist() == [0.5, 0.6, 0.9]


def test_upper_hull_is_concave_non_decreasing_and_drops_points_below_chords():
    cost = [2, 0, 1, 3, 1, 4]
    score = [0.9, 0.0, 0.8, 1.0, 0.2, 0.95]
    # (2,0.9) lies on the chord (1,0.8)-(3,1.0) -> dropped; (1,0.2) dominated; (4,0.95) after the best -> dropped
    c, s = M.upper_hull(cost, score)
    assert c.tolist() == [0, 1, 3]
    assert s.tolist() == [0.0, 0.8, 1.0]


def test_upper_hull_removes_a_point_below_the_chord():
    # (1, 0.4) is below the chord (0,0)-(2,1) whose height at 1 is 0.5
    c, s = M.upper_hull([0, 1, 2], [0.0, 0.4, 1.0])
    assert c.tolist() == [0, 2] and s.tolist() == [0.0, 1.0]


def test_upper_hull_random_curves_dominate_every_point():
    rng = np.random.default_rng(0)
    for _ in range(50):
        c, s = rng.uniform(0, 1, 30), rng.uniform(0, 1, 30)
        hc, hs = M.upper_hull(c, s)
        assert np.all(np.diff(hc) > 0) and np.all(np.diff(hs) > 0)
        slopes = np.diff(hs) / np.diff(hc)
        assert np.all(np.diff(slopes) < 0)                      # strictly concave
        f = M.score_at_cost(c, s, c)
        assert np.all(f >= s - 1e-12)                            # on or above every achieved point
        assert hs[-1] == s.max() and hc[0] == c.min()


def test_degenerate_hulls():
    assert [a.tolist() for a in M.upper_hull([0.3], [0.7])] == [[0.3], [0.7]]
    # all equal costs: only the best score survives
    assert [a.tolist() for a in M.upper_hull([1, 1, 1], [0.2, 0.6, 0.4])] == [[1.0], [0.6]]
    # cheapest point is also the best: one-point hull
    assert [a.tolist() for a in M.upper_hull([1, 2, 3], [0.9, 0.5, 0.8])] == [[1.0], [0.9]]


@pytest.mark.parametrize("cost,score,msg", [
    ([], [], "empty"),
    ([1, 2], [0.5], "cost has 2 points but score has 1"),
    ([1, np.nan], [0.5, 0.6], "point 1 is not finite"),
    ([[1, 2]], [[0.5, 0.6]], "1-D"),
])
def test_bad_curves_raise_clear_errors(cost, score, msg):
    with pytest.raises(ValueError, match=msg):
        M.upper_hull(cost, score)


# ---- score_at_cost ----------------------------------------------------------------------------------------------
def test_score_at_cost_interpolates_on_the_hull():
    cost, score = [3, 1, 2], [0.9, 0.5, 0.6]      # hull (1,0.5)-(3,0.9): (2,0.6) is below the chord (0.7 at 2)
    assert M.score_at_cost(cost, score, 2.0) == pytest.approx(0.7)
    assert M.score_at_cost(cost, score, 10.0) == pytest.approx(0.9)   # flat to the right
    assert math.isnan(M.score_at_cost(cost, score, 0.5))               # below the cheapest point
    assert M.score_at_cost(cost, score, 0.5, below=0.0) == 0.0
    v = M.score_at_cost(cost, score, np.array([1.0, 1.5, 3.0]))
    assert v == pytest.approx([0.5, 0.6, 0.9])


# ---- AIQ --------------------------------------------------------------------------------------------------------
def test_aiq_three_point_curve_is_exactly_0_75():
    # points (0,.5) (1,.75) (2,1) are collinear; (1,.6) is below. Area on [0,2] = 2 * mean(.5,1) = 1.5 -> 1.5/2 = .75
    assert M.aiq([0, 1, 2, 1], [0.5, 0.75, 1.0, 0.6], 0, 2) == pytest.approx(0.75, abs=1e-15)


def test_aiq_uses_the_hull_not_the_raw_curve():
    # raw zig-zag (0,.5) (1,.4) (2,1): the hull skips (1,.4): same area as above = .75
    assert M.aiq([0, 1, 2], [0.5, 0.4, 1.0], 0, 2) == pytest.approx(0.75)


def test_aiq_left_of_the_curve_counts_zero_and_right_is_flat():
    # hull (1,.6)-(2,.8) on [0,2]: 0 on [0,1] + .7 on [1,2] = .7 -> /2 = .35 (RouterBench's calc_AIQ gives the same)
    assert M.aiq([1, 2], [0.6, 0.8], 0, 2) == pytest.approx(0.35)
    # hull (0,.4)-(1,.8) on [0,3]: .6 + .8*2 = 2.2 -> /3
    assert M.aiq([0, 1], [0.4, 0.8], 0, 3) == pytest.approx(2.2 / 3)
    # hull beyond c_max is cut: f(c) = c/4 on [0,2] -> 0.5 / 2 = .25
    assert M.aiq([0, 4], [0.0, 1.0], 0, 2) == pytest.approx(0.25)
    # interval entirely left of the curve: 0
    assert M.aiq([5, 6], [0.9, 1.0], 0, 2) == 0.0


def test_aiq_degenerate_inputs():
    # single point (1,.5) on [0,2]: .5 on [1,2] -> .25; equal costs keep the best score
    assert M.aiq([1], [0.5], 0, 2) == pytest.approx(0.25)
    assert M.aiq([1, 1, 1], [0.1, 0.5, 0.3], 0, 2) == pytest.approx(0.25)
    # unsorted input gives the same number as sorted
    rng = np.random.default_rng(1)
    c, s = rng.uniform(0, 1, 20), rng.uniform(0, 1, 20)
    p = rng.permutation(20)
    assert M.aiq(c[p], s[p], 0, 1) == pytest.approx(M.aiq(c, s, 0, 1))
    with pytest.raises(ValueError, match="c_max > c_min"):
        M.aiq([1], [0.5], 2, 2)


# ---- APGR / CPT -------------------------------------------------------------------------------------------------
W, SW, S, SS = 1.0, 0.5, 3.0, 0.9      # weak model costs 1 and scores .5, strong costs 3 and scores .9


def test_apgr_hand_case():
    # curve (1,.5) (2,.9) (3,.9): PGR rises 0->1 on x in [0,.5] then stays 1: area .25 + .5 = .75
    assert M.apgr([1, 2, 3], [0.5, 0.9, 0.9], W, SW, S, SS) == pytest.approx(0.75)
    # the random router's diagonal (1,.5)-(3,.9): .5
    assert M.apgr([1, 3], [0.5, 0.9], W, SW, S, SS) == pytest.approx(0.5)
    # a curve starting only at cost 2: PGR 0 on [0,.5] (unreachable), 1 on [.5,1] -> .5
    assert M.apgr([2, 3], [0.9, 0.9], W, SW, S, SS) == pytest.approx(0.5)
    # worse than the weak model everywhere: PGR = (.3-.5)/.4 = -.5 throughout
    assert M.apgr([0.5, 4], [0.3, 0.3], W, SW, S, SS) == pytest.approx(-0.5)


def test_pgr_curve_values():
    x = np.array([0.0, 0.25, 0.5, 1.0, 2.0])
    assert M.pgr_curve([1, 2, 3], [0.5, 0.9, 0.9], W, SW, S, SS, x) == pytest.approx([0, 0.5, 1, 1, 1])


def test_apgr_two_models_equals_routellm_formula():
    """With 2 models of constant per-query cost, normalised cost == share of strong calls, so our APGR on the raw
    curve equals RouteLLM's (AUC - AUC_weak) / (AUC_strong - AUC_weak) over strong-call share (evaluate.py)."""
    rng = np.random.default_rng(7)
    n = 400
    weak = (rng.uniform(size=n) < 0.55).astype(float)
    strong = np.maximum(weak, (rng.uniform(size=n) < 0.7)).astype(float)
    win_prob = strong - weak + rng.normal(0, 0.6, n)          # a noisy router score
    order = np.argsort(-win_prob)
    cw, cs = 2e-4, 3e-3
    share, acc, cost = [], [], []
    for k in range(0, n + 1, 20):                            # route the top-k queries to the strong model
        to_strong = np.zeros(n, bool)
        to_strong[order[:k]] = True
        share.append(k / n)
        acc.append(np.where(to_strong, strong, weak).mean())
        cost.append(np.where(to_strong, cs, cw).mean())
    share, acc, cost = map(np.array, (share, acc, cost))
    s_weak, s_strong = weak.mean(), strong.mean()

    def trap(y, x):
        return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))
    auc = trap(acc, share)
    routellm = (auc - s_weak * trap(np.ones_like(share), share)) / \
               ((s_strong - s_weak) * trap(np.ones_like(share), share))
    assert cost == pytest.approx(cw + share * (cs - cw))     # the two x-axes coincide
    ours = M.apgr(cost, acc, cw, s_weak, cs, s_strong, hull=False)
    assert ours == pytest.approx(routellm, abs=1e-12)
    assert 0.5 < ours < 1.0                                   # the router is better than random but not perfect
    # the hull can only add achievable points
    assert M.apgr(cost, acc, cw, s_weak, cs, s_strong) >= ours - 1e-12


def test_cpt_hand_case_and_never_reached():
    cost, score = [1, 2, 3], [0.5, 0.9, 0.9]
    # CPT(50%): target .5+.5*.4 = .7, reached at cost 1.5 -> x = .25; CPT(80%): .82 at 1.8 -> x = .4
    assert M.cpt(cost, score, W, SW, S, SS, 0.5) == pytest.approx((0.25, 1.5))
    assert M.cpt(cost, score, W, SW, S, SS, 0.8) == pytest.approx((0.4, 1.8))
    # a curve topping out at .6 never recovers 50% of the gap
    assert M.cpt([1, 3], [0.5, 0.6], W, SW, S, SS, 0.5) == (math.inf, math.inf)
    # needs more than the strong model's cost: x > 1 (hull (1,.5)-(5,.9): .82 at 4.2 -> x = 1.6)
    assert M.cpt([1, 5], [0.5, 0.9], W, SW, S, SS, 0.8)[0] == pytest.approx(1.6)


def test_apgr_rejects_meaningless_references():
    with pytest.raises(ValueError, match="must score more"):
        M.apgr([1, 2], [0.5, 0.6], 1, 0.7, 3, 0.7)
    with pytest.raises(ValueError, match="must cost more"):
        M.apgr([1, 2], [0.5, 0.6], 3, 0.5, 1, 0.9)
    with pytest.raises(ValueError, match="pgr_target"):
        M.cpt([1, 2], [0.5, 0.6], W, SW, S, SS, 0.0)


# ---- R2-Router --------------------------------------------------------------------------------------------------
def test_normalise_costs_uses_global_min_max():
    out = M.normalise_costs({"a": [1, 2], "b": ([5, 3], [0.1, 0.2])})
    # lo = 1, hi = 5
    assert out["a"].tolist() == [0.0, 0.25] and out["b"].tolist() == [1.0, 0.5]
    same = M.normalise_costs({"a": [2, 2], "b": [2]})
    assert same["a"].tolist() == [0, 0] and same["b"].tolist() == [0]
    assert M.normalise_costs({"a": [2, 4]}, bounds=(0, 8))["a"].tolist() == [0.25, 0.5]
    with pytest.raises(ValueError, match="'x' is empty or has non-finite"):
        M.normalise_costs({"x": [1, np.inf]})


def test_audc_hand_case_unsorted_and_degenerate():
    # (0,.5)-(0.5,.5): .25; (0.5,.5)-(1,1): .5*.75 = .375; total .625
    assert M.audc([1, 0, 0.5], [1.0, 0.5, 0.5]) == pytest.approx(0.625)
    # only part of the range covered: (0.5,.8)-(1,.8) -> .4; nothing added left of 0.5
    assert M.audc([0.5, 1], [0.8, 0.8]) == pytest.approx(0.4)
    assert M.audc([0.3], [0.9]) == 0.0
    assert M.audc([0.3, 0.3], [0.9, 0.1]) == 0.0
    with pytest.raises(ValueError, match="normalised"):
        M.audc([0.001, 2.5], [0.5, 0.6])


def test_qnc_first_point_reaching_target():
    c, s = [0.6, 0.0, 1.0, 0.3], [0.7, 0.5, 0.9, 0.8]
    # sorted by cost: (0,.5) (.3,.8) (.6,.7) (1,.9): first >= .75 is at .3
    assert M.qnc(c, s, 0.75) == pytest.approx(0.3)
    assert M.qnc(c, s, 0.5) == 0.0
    assert M.qnc(c, s, 0.95) == 1.0            # never reached -> 1.0
    # a score equal to the target up to float noise counts
    assert 0.7 - 0.4 < 0.3
    assert M.qnc([0.2, 0.4], [0.7 - 0.4, 0.9], 0.3) == pytest.approx(0.2)
    assert M.qnc([0.2, 0.4], [0.7 - 0.4, 0.9], 0.3, atol=0) == pytest.approx(0.4)


def test_peak():
    assert M.peak([0.2, 0.9, 0.5]) == 0.9
    with pytest.raises(ValueError, match="empty"):
        M.peak([])


# ---- cost to reach, saving, gap closed --------------------------------------------------------------------------
def test_cost_to_reach_and_saving():
    cost, score = [3, 1, 2], [0.9, 0.5, 0.6]       # hull (1,.5)-(3,.9)
    assert M.cost_to_reach(cost, score, 0.7) == pytest.approx(2.0)
    assert M.cost_to_reach(cost, score, 0.4) == 1.0        # cheapest point already reaches it
    assert M.cost_to_reach(cost, score, 0.9) == 3.0
    assert M.cost_to_reach(cost, score, 0.9 + 1e-13) == 3.0  # float noise on the target still counts
    assert M.cost_to_reach(cost, score, 0.95) == math.inf
    # best single costs 4 and scores .7: the router gets .7 at 2 -> saves 1 - 2/4 = 50%
    assert M.saving(cost, score, 4.0, 0.7) == pytest.approx(0.5)
    assert math.isnan(M.saving(cost, score, 4.0, 0.95))
    # a router dearer than the reference: negative saving 1 - 3/2
    assert M.saving(cost, score, 2.0, 0.9) == pytest.approx(-0.5)


def test_gap_closed_at_cost():
    cost, score = [1, 3], [0.5, 0.9]
    # at c_ref = 2 the hull gives .7; reference .6, oracle .8 -> (.7-.6)/(.8-.6) = .5
    assert M.gap_closed_at_cost(cost, score, 2.0, 0.6, 0.8) == pytest.approx(0.5)
    # below the reference: negative
    assert M.gap_closed_at_cost(cost, score, 1.0, 0.6, 0.8) == pytest.approx(-0.5)
    assert math.isnan(M.gap_closed_at_cost(cost, score, 0.5, 0.6, 0.8))   # router cannot go that cheap
    with pytest.raises(ValueError, match="no gap"):
        M.gap_closed_at_cost(cost, score, 2.0, 0.8, 0.8)


# ---- summarise --------------------------------------------------------------------------------------------------
def test_summarise():
    r = M.summarise([0.1, 0.2, 0.3])
    assert r.mean == pytest.approx(0.2) and r.std == pytest.approx(0.1) and r.n == 3
    assert M.summarise([0.4]) == (0.4, 0.0, 1)
    r = M.summarise([0.1, np.nan, 0.3])
    assert r.n == 2 and r.mean == pytest.approx(0.2)
    r = M.summarise([1.0, math.inf, 2.0])     # a seed that never reached the target is not hidden
    assert r.mean == math.inf and math.isnan(r.std) and r.n == 3
    r = M.summarise([])
    assert math.isnan(r.mean) and r.n == 0
