"""The field's routing metrics on accuracy-vs-cost curves (numpy only: the ground floor, imports nothing of
routecraft).

A router swept over its trade-off λ gives a *curve*: points (mean cost per query in USD, mean score in [0, 1]) on
the test split. Every function here takes such a curve as two 1-D arrays ``cost`` and ``score`` in **any order**
(they are sorted internally). Duplicate costs and unsorted input are fine. Empty input, arrays of different lengths
and non-finite values raise ``ValueError``.

Two curve readings are used, and each function says which one it uses:

* **raw**: the achieved points, sorted by cost. This is what R2-Router's AUDC/QNC use.
* **hull**: the upper-left, non-decreasing convex hull (:func:`upper_hull`). A router can flip a biased coin
  between two of its operating points for each query, so every point on the segment between two achieved points is
  achievable in expectation (RouterBench, Hu et al. 2024, §4 "non-decreasing convex hull"). And a router that could
  buy quality q at cost c can get q at any larger budget, so the hull is non-decreasing.
  RouterBench's AIQ, the APGR/CPT here, :func:`score_at_cost`, :func:`cost_to_reach` and
  :func:`gap_closed_at_cost` use it.

The hull as a function of cost, ``f(c)``:

* between the hull's first (cheapest) point and its last (best) point: linear interpolation;
* **right** of the last point: flat at the best score. Spending more than needed is always allowed; RouterBench's
  ``calc_AIQ`` also extends each hull flat to the largest cost.
* **left** of the first point: the router has no operating point that cheap. Each metric says how it treats that
  region; the defaults are quality 0 for AIQ (as RouterBench's code, which integrates only from the hull's first
  point) and "not reachable" (``nan``) for :func:`score_at_cost`.

Sources:

* RouterBench (Hu et al., 2024, arXiv 2403.12031), code withmartian/routerbench ``evaluation/AIQ.py``.
* RouteLLM (Ong et al., 2024, arXiv 2406.18665), code lm-sys/RouteLLM ``routellm/evals/evaluate.py``
  (``apgr_metric``, ``pct_call_metric``).
* R2-Router (Xue et al., arXiv 2602.02823), code UCF-ML-Research/R2-Router ``ood_evaluation/run_ood.py``
  ``compute_metrics`` (the paper's metrics section: AUDC, QNC, Peak, cost normalised with the global min/max).
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np

__all__ = [
    "pareto_frontier", "upper_hull", "score_at_cost", "aiq", "apgr", "pgr_curve", "cpt", "normalise_costs",
    "audc", "qnc", "peak", "cost_to_reach", "saving", "gap_closed_at_cost", "summarise", "Summary",
]

#: Scores within this distance of a target count as reaching it. Mean scores of the same decisions computed in a
#: different order can differ by ~1e-16, and "reach the best single model's accuracy" must not fail on that.
ATOL = 1e-9


# ---- input handling ---------------------------------------------------------------------------------------------
def _curve(cost, score, name: str = "curve") -> tuple[np.ndarray, np.ndarray]:
    """Validate a curve and return it as float arrays sorted by cost, then by score descending."""
    c = np.asarray(cost, dtype=float).reshape(-1) if np.ndim(cost) <= 1 else None
    s = np.asarray(score, dtype=float).reshape(-1) if np.ndim(score) <= 1 else None
    if c is None or s is None:
        raise ValueError(f"{name}: cost and score must be 1-D arrays, got shapes {np.shape(cost)} and "
                         f"{np.shape(score)}")
    if c.size == 0:
        raise ValueError(f"{name}: empty curve (no points)")
    if c.size != s.size:
        raise ValueError(f"{name}: cost has {c.size} points but score has {s.size}")
    bad = ~(np.isfinite(c) & np.isfinite(s))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: point {i} is not finite (cost={c[i]}, score={s[i]}); "
                         f"{int(bad.sum())} non-finite point(s) in all")
    order = np.lexsort((-s, c))
    return c[order], s[order]


def _finite(x: float, name: str) -> float:
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return x


# ---- frontier and hull ------------------------------------------------------------------------------------------
def pareto_frontier(cost, score) -> tuple[np.ndarray, np.ndarray]:
    """Non-dominated points, sorted by cost (ascending; scores then strictly increase).

    A point is dominated if another point costs no more and scores strictly more, or costs strictly less and
    scores at least as much. Of identical points one is kept.
    """
    c, s = _curve(cost, score, "pareto_frontier")
    keep, best = [], -np.inf
    for i in range(c.size):          # sorted by cost, then score descending: first of each cost is its best
        if s[i] > best:
            keep.append(i)
            best = s[i]
    idx = np.array(keep, dtype=int)
    return c[idx], s[idx]


def upper_hull(cost, score) -> tuple[np.ndarray, np.ndarray]:
    """Upper-left non-decreasing convex hull of a curve (RouterBench's "NDCH"), sorted by cost.

    Starts at the cheapest point (the best score among equally cheap points), follows the upper concave envelope
    and stops at the first point with the highest score, so the returned scores are strictly increasing and the
    slopes strictly decreasing (collinear points are dropped: they do not change the interpolated function).
    Any point on a segment between two returned points is achievable by randomising between the two decisions.
    A single point (or all points at one cost) gives a one-point hull.
    """
    c, s = pareto_frontier(cost, score)      # dominated points are never on the upper-left hull
    hc: list[float] = []
    hs: list[float] = []
    for x, y in zip(c, s):
        # pop the last hull point while it lies on or below the segment from the one before it to (x, y)
        while len(hc) >= 2:
            x1, y1, x2, y2 = hc[-2], hs[-2], hc[-1], hs[-1]
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:
                hc.pop()
                hs.pop()
            else:
                break
        hc.append(float(x))
        hs.append(float(y))
    return np.array(hc), np.array(hs)


def _hull_eval(hc: np.ndarray, hs: np.ndarray, c, below: float) -> np.ndarray:
    c = np.asarray(c, dtype=float)
    out = np.interp(c, hc, hs)               # flat at both ends
    return np.where(c < hc[0], below, out)


def score_at_cost(cost, score, c, below: float = np.nan):
    """Hull-interpolated score of the curve at budget ``c`` (scalar or array, USD per query).

    ``c`` at or above the hull's last point gives the best score (a bigger budget can always be left unspent).
    ``c`` below the curve's cheapest point gives ``below`` (default ``nan``: the router has no decision that cheap).
    """
    hc, hs = upper_hull(cost, score)
    out = _hull_eval(hc, hs, c, below)
    return float(out) if np.ndim(c) == 0 else out


def _integrate_hull(hc: np.ndarray, hs: np.ndarray, a: float, b: float, below: float) -> float:
    """Exact integral over [a, b] of f(c) = hull interpolation, flat to the right, ``below`` left of hc[0]."""
    inner = hc[(hc > a) & (hc < b)]
    xs = np.unique(np.concatenate([[a, b], inner]))
    total = 0.0
    for x0, x1 in zip(xs[:-1], xs[1:]):
        if x1 <= hc[0]:                      # wholly left of the first hull point (hc[0] is a breakpoint)
            total += below * (x1 - x0)
        else:
            y0, y1 = np.interp([x0, x1], hc, hs)
            total += 0.5 * (y0 + y1) * (x1 - x0)
    return float(total)


# ---- RouterBench ------------------------------------------------------------------------------------------------
def aiq(cost, score, c_min: float, c_max: float, below: float = 0.0) -> float:
    """RouterBench's Average Improvement in Quality.

    ``AIQ = 1/(c_max - c_min) * ∫_{c_min}^{c_max} f(c) dc`` where ``f`` is the curve's non-decreasing convex hull
    (:func:`upper_hull`), flat to the right of its last point.

    Left of the hull's first point the router cannot operate; its quality there is taken as ``below`` (default 0).
    This is what RouterBench's own ``calc_AIQ`` does: it integrates (trapezoid) from the hull's first point only
    and divides by the full cost range, so the unreachable part contributes nothing. A router that cannot go as
    cheap as ``c_min`` is thereby penalised for its missing range, as in the paper's figure (the area under the hull).
    (RouterBench's code uses ``c_min = 0`` and ``c_max`` = the largest cost of any compared curve; the paper and
    the bench here pass the cheapest and the dearest single model's mean cost.) Parts of the hull outside
    ``[c_min, c_max]`` are ignored.

    Example: hull (0, 0.5) → (1, 1) on [0, 2]: (0.75·1 + 1·1)/2 = 0.875.
    """
    c_min, c_max = _finite(c_min, "aiq: c_min"), _finite(c_max, "aiq: c_max")
    if not c_max > c_min:
        raise ValueError(f"aiq: need c_max > c_min, got c_min={c_min}, c_max={c_max}")
    hc, hs = upper_hull(cost, score)
    return _integrate_hull(hc, hs, c_min, c_max, float(below)) / (c_max - c_min)


# ---- RouteLLM ---------------------------------------------------------------------------------------------------
def _check_pair(c_weak, s_weak, c_strong, s_strong, fn: str) -> tuple[float, float, float, float]:
    c_weak, s_weak = _finite(c_weak, f"{fn}: c_weak"), _finite(s_weak, f"{fn}: s_weak")
    c_strong, s_strong = _finite(c_strong, f"{fn}: c_strong"), _finite(s_strong, f"{fn}: s_strong")
    if not c_strong > c_weak:
        raise ValueError(f"{fn}: the strong reference must cost more than the weak one "
                         f"(c_weak={c_weak}, c_strong={c_strong})")
    if not s_strong > s_weak:
        raise ValueError(f"{fn}: the strong reference must score more than the weak one "
                         f"(s_weak={s_weak}, s_strong={s_strong}); PGR is undefined otherwise")
    return c_weak, s_weak, c_strong, s_strong


def _raw_function(cost, score) -> tuple[np.ndarray, np.ndarray]:
    """The raw curve as a function of cost: sorted, best score at each duplicate cost (for ``hull=False``)."""
    c, s = _curve(cost, score)
    first = np.r_[True, c[1:] != c[:-1]]     # after _curve's sort the first of each cost has the best score
    return c[first], s[first]


def pgr_curve(cost, score, c_weak: float, s_weak: float, c_strong: float, s_strong: float, x,
              hull: bool = True, below: float = 0.0):
    """Performance gap recovered at normalised cost ``x`` (scalar or array).

    ``x = (c - c_weak) / (c_strong - c_weak)``; ``PGR(x) = (f(c) - s_weak) / (s_strong - s_weak)`` where ``f`` is the
    hull (best score reachable with budget ≤ c; ``hull=False``: the raw curve linearly interpolated, as RouteLLM's
    code does). Where the router has no decision as cheap as ``c`` the PGR is ``below`` (default 0: it recovers none
    of the gap). PGR is not clipped: below 0 means worse than the weak model, above 1 better than the strong one.
    """
    c_weak, s_weak, c_strong, s_strong = _check_pair(c_weak, s_weak, c_strong, s_strong, "pgr_curve")
    fc, fs = upper_hull(cost, score) if hull else _raw_function(cost, score)
    x = np.asarray(x, dtype=float)
    c = c_weak + x * (c_strong - c_weak)
    pgr = (np.interp(c, fc, fs) - s_weak) / (s_strong - s_weak)
    out = np.where(c < fc[0], below, pgr)
    return float(out) if out.ndim == 0 else out


def apgr(cost, score, c_weak: float, s_weak: float, c_strong: float, s_strong: float,
         hull: bool = True, below: float = 0.0) -> float:
    """RouteLLM's average performance gap recovered, generalised from 2 models to N.

    ``APGR = ∫_0^1 PGR(x) dx`` with ``x`` the normalised cost of :func:`pgr_curve`: 0 at the weak reference's cost
    (usually the cheapest single model), 1 at the strong reference's (usually the best single model). RouteLLM's x
    is the share of calls sent to the strong model; with two models whose per-query costs are constant the mean
    cost is ``c_weak + share·(c_strong - c_weak)``, so the two x-axes coincide (tests/core/test_metrics.py checks this
    against RouteLLM's formula ``(AUC - AUC_weak)/(AUC_strong - AUC_weak)``). The integral is exact (piecewise
    linear). Costs outside [c_weak, c_strong] are ignored; below the router's cheapest point PGR = ``below``.
    ``hull=False`` integrates the raw curve instead of its hull, as RouteLLM's code does.
    """
    c_weak, s_weak, c_strong, s_strong = _check_pair(c_weak, s_weak, c_strong, s_strong, "apgr")
    fc, fs = upper_hull(cost, score) if hull else _raw_function(cost, score)
    x = (fc - c_weak) / (c_strong - c_weak)
    p = (fs - s_weak) / (s_strong - s_weak)
    return _integrate_hull(x, p, 0.0, 1.0, float(below))


def cpt(cost, score, c_weak: float, s_weak: float, c_strong: float, s_strong: float,
        pgr_target: float) -> tuple[float, float]:
    """RouteLLM's call-performance threshold, CPT(target), on normalised cost.

    The smallest normalised cost ``x`` (and its USD cost) at which the hull's PGR reaches ``pgr_target``
    (0.5 for CPT(50%), 0.8 for CPT(80%)), i.e. the least budget reaching ``s_weak + target·(s_strong - s_weak)``.
    Returns ``(x, usd)``. ``x`` can exceed 1 (the router needs more than the strong model's cost) or be negative (it
    gets there cheaper than the weak model). ``(inf, inf)`` if the curve never reaches the target.
    """
    c_weak, s_weak, c_strong, s_strong = _check_pair(c_weak, s_weak, c_strong, s_strong, "cpt")
    pgr_target = _finite(pgr_target, "cpt: pgr_target")
    if not pgr_target > 0:
        raise ValueError(f"cpt: pgr_target must be > 0 (e.g. 0.5 for CPT(50%)), got {pgr_target}")
    usd = cost_to_reach(cost, score, s_weak + pgr_target * (s_strong - s_weak))
    if not np.isfinite(usd):
        return float("inf"), float("inf")
    return (usd - c_weak) / (c_strong - c_weak), usd


# ---- R2-Router --------------------------------------------------------------------------------------------------
def normalise_costs(curves: Mapping[str, object], bounds: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """R2-Router's cost normalisation: ``(c - lo)/(hi - lo)`` with the **global** min/max over all methods' curves.

    ``curves`` maps a method to its cost array or to a ``(cost, score)`` pair. ``bounds`` overrides (lo, hi).
    Points keep their input order. If all costs are equal every normalised cost is 0 (as in R2-Router's code).
    """
    if not curves:
        raise ValueError("normalise_costs: no curves given")
    costs = {}
    for name, v in curves.items():
        c = v[0] if isinstance(v, tuple) else v
        c = np.asarray(c, dtype=float).reshape(-1)
        if c.size == 0 or not np.isfinite(c).all():
            raise ValueError(f"normalise_costs: curve {name!r} is empty or has non-finite costs")
        costs[name] = c
    if bounds is None:
        lo = min(float(c.min()) for c in costs.values())
        hi = max(float(c.max()) for c in costs.values())
    else:
        lo, hi = _finite(bounds[0], "normalise_costs: bounds[0]"), _finite(bounds[1], "normalise_costs: bounds[1]")
        if hi < lo:
            raise ValueError(f"normalise_costs: bounds must be (lo, hi) with lo <= hi, got {bounds}")
    if hi == lo:
        return {k: np.zeros_like(c) for k, c in costs.items()}
    return {k: (c - lo) / (hi - lo) for k, c in costs.items()}


def audc(norm_cost, score) -> float:
    """R2-Router's AUDC: trapezoid area of the **raw** curve's score over normalised cost.

    Points are sorted by cost and joined by straight lines; nothing is added outside the curve's own cost range, so
    that range contributes 0 area (R2-Router's ``np.trapezoid(perf_curve, normalized_cost)``). A curve covering only
    part of [0, 1] thus scores at most its width; a single point (or all points at one cost) gives 0. Costs must
    already be normalised to [0, 1] (:func:`normalise_costs`).

    Example: points (0, 0.5), (0.5, 0.5), (1, 1) give 0.25 + 0.375 = 0.625.
    """
    c, s = _curve(norm_cost, score, "audc")
    if c[0] < -ATOL or c[-1] > 1 + ATOL:
        raise ValueError(f"audc: costs must be normalised to [0, 1] (see normalise_costs), got range "
                         f"[{c[0]:.4g}, {c[-1]:.4g}]")
    return float(np.sum(0.5 * (s[1:] + s[:-1]) * np.diff(c)))


def qnc(norm_cost, score, target: float, atol: float = ATOL) -> float:
    """R2-Router's QNC: normalised cost of the first raw point, in cost order, whose score ≥ ``target``.

    ``target`` is normally the best single model's accuracy (times a rate, 1.0 or 0.95 in R2-Router's scripts).
    Returns 1.0 if no point reaches it (R2-Router's convention). Scores within ``atol`` of the target count.
    """
    target = _finite(target, "qnc: target")
    c, s = _curve(norm_cost, score, "qnc")
    hit = np.flatnonzero(s >= target - atol)
    return float(c[hit[0]]) if hit.size else 1.0


def peak(score) -> float:
    """Peak: the highest mean score on the curve (R2-Router's "Peak")."""
    s = np.asarray(score, dtype=float).reshape(-1)
    if s.size == 0:
        raise ValueError("peak: empty curve (no points)")
    if not np.isfinite(s).all():
        raise ValueError("peak: the curve has non-finite scores")
    return float(s.max())


# ---- cost savings and gap closed --------------------------------------------------------------------------------
def cost_to_reach(cost, score, target: float, atol: float = ATOL) -> float:
    """Least USD cost at which the hull reaches ``target`` score; ``inf`` if the curve never reaches it.

    The hull is increasing, so this is its inverse at ``target`` (scores within ``atol`` count). If even the
    cheapest point already reaches the target, that point's cost is returned (the router cannot go cheaper).
    """
    target = _finite(target, "cost_to_reach: target")
    hc, hs = upper_hull(cost, score)
    t = target - atol
    if hs[-1] < t:
        return float("inf")
    i = int(np.argmax(hs >= t))
    if i == 0:
        return float(hc[0])
    frac = (min(target, hs[i]) - hs[i - 1]) / (hs[i] - hs[i - 1])
    return float(hc[i - 1] + max(frac, 0.0) * (hc[i] - hc[i - 1]))


def saving(cost, score, c_ref: float, s_ref: float) -> float:
    """Share of the reference's cost saved at equal quality: ``1 - cost_to_reach(s_ref) / c_ref``.

    The reference is usually the best single model (cost ``c_ref``, score ``s_ref``). Positive: the router matches
    it for less. ``nan`` if the router never reaches ``s_ref`` (no saving is defined).
    """
    c_ref = _finite(c_ref, "saving: c_ref")
    if not c_ref > 0:
        raise ValueError(f"saving: the reference cost must be > 0, got {c_ref}")
    c = cost_to_reach(cost, score, s_ref)
    return 1.0 - c / c_ref if np.isfinite(c) else float("nan")


def gap_closed_at_cost(cost, score, c_ref: float, s_ref: float, s_oracle: float) -> float:
    """Share of the reference→oracle gap the router closes at the reference's cost.

    ``(f(c_ref) - s_ref) / (s_oracle - s_ref)`` with ``f`` the hull (:func:`score_at_cost`); the reference is
    usually the best single model and ``s_oracle`` the per-query oracle's score. 1 = oracle quality for the best
    model's money, 0 = no better than the best model, negative = worse. ``nan`` if the router has no decision as
    cheap as ``c_ref``.
    """
    s_ref, s_oracle = _finite(s_ref, "gap_closed_at_cost: s_ref"), _finite(s_oracle, "gap_closed_at_cost: s_oracle")
    if not s_oracle > s_ref:
        raise ValueError(f"gap_closed_at_cost: the oracle must score more than the reference "
                         f"(s_ref={s_ref}, s_oracle={s_oracle}); there is no gap to close")
    f = score_at_cost(cost, score, _finite(c_ref, "gap_closed_at_cost: c_ref"))
    return (f - s_ref) / (s_oracle - s_ref)


# ---- seed aggregation -------------------------------------------------------------------------------------------
class Summary(NamedTuple):
    mean: float
    std: float   # sample standard deviation (ddof=1); 0.0 for a single value
    n: int       # number of values used


def summarise(values: Sequence[float]) -> Summary:
    """Mean, sample std (ddof=1) and count of one metric over seeds.

    ``nan`` values (metric undefined for that seed) are left out and not counted. ``inf`` values (e.g. "never
    reached") are kept, so the mean becomes ±inf and the std nan rather than hiding a failing seed.
    No values left: ``Summary(nan, nan, 0)``.
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[~np.isnan(v)]
    n = int(v.size)
    if n == 0:
        return Summary(float("nan"), float("nan"), 0)
    if not np.isfinite(v).all():
        return Summary(float(np.mean(v)), float("nan"), n)
    return Summary(float(v.mean()), float(v.std(ddof=1)) if n > 1 else 0.0, n)
