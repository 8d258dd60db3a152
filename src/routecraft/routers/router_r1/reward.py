"""Router-R1's reward (Zhang, Feng, You, NeurIPS'25; as in the authors' code, ulab-uiuc/Router-R1
``verl/trainer/main_ppo.py`` and ``verl/utils/reward_score/qa_em.py``).

* format score F ∈ {0, −1}: ``protocol.check_format``;
* outcome: normalised exact match against any gold answer (``exact_match``), token F1, or the task's grader
  (``routecraft.strategies.graders.grade``, e.g. GSM8K's numeric match), on the last ``<answer>``;
* cost: c_raw = Σ over routed calls of completion_tokens × $/1M (output tokens only), c = √c_raw pushed into a
  sliding window of the last 1000 values, R_cost = 1 − clip((c − p5)/(p95 − p5), 0, 1), 0.5 when p95 − p5 < 1e-8;
* combination (hierarchical): F = −1 → r = −1; F = 0 and outcome > 0 → r = (1 − α)·outcome + α·R_cost;
  otherwise 0. With exact match (outcome ∈ {0, 1}) this is the paper's code exactly; with a graded outcome in (0, 1)
  (F1) the cost term is granted on any non-zero outcome.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from routecraft.routers.router_r1.protocol import check_format, extract_answer
from routecraft.strategies.answers import normalize_text
from routecraft.strategies.graders import f1, grade

OUTCOMES = ("em", "f1", "grader")


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, squeeze whitespace (SQuAD / Search-R1)."""
    return normalize_text(s)


def _golds(gold: Any) -> list[str]:
    if gold is None or (isinstance(gold, float) and math.isnan(gold)):
        raise ValueError("gold answer is missing")
    if isinstance(gold, (list, tuple, np.ndarray)):
        if len(gold) == 0:
            raise ValueError("gold answer list is empty")
        return [str(g) for g in gold]
    return [str(gold)]


def exact_match(prediction: str | None, gold: Any) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer."""
    if prediction is None:
        return 0.0
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in _golds(gold)))


def outcome_score(prediction: str | None, gold: Any, task: str = "qa", metric: str = "em") -> float:
    """Outcome of an extracted answer: ``em``, ``f1`` (best over gold aliases) or ``grader`` (the task's grader)."""
    if metric not in OUTCOMES:
        raise ValueError(f"unknown outcome metric {metric!r}; use one of {', '.join(OUTCOMES)}")
    if prediction is None:
        return 0.0
    if metric == "em":
        return exact_match(prediction, gold)
    if metric == "f1":
        return float(f1(prediction, _golds(gold)))
    return float(grade(task, prediction, gold))


def raw_cost(calls: Iterable[Any]) -> float:
    """c_raw: Σ completion_tokens × price ($ per 1M output tokens) over the routed calls. Each call is a mapping or
    object with ``output_tokens`` and ``price_out_per_m``; failed calls without tokens count 0."""
    total = 0.0
    for c in calls:
        get = c.get if isinstance(c, dict) else lambda k, c=c: getattr(c, k, None)
        tokens, price = get("output_tokens"), get("price_out_per_m")
        if tokens and price:
            total += float(tokens) * float(price)
    return total


class CostNormalizer:
    """The paper's running cost normaliser: √cost in a window of the last ``window`` values, scored against the
    window's ``lo_pct``/``hi_pct`` percentiles (1 = cheapest). ``score_batch`` pushes a whole batch first, then scores
    each value against the updated window."""

    def __init__(self, window: int = 1000, lo_pct: float = 5.0, hi_pct: float = 95.0) -> None:
        if window < 1:
            raise ValueError(f"cost window must be >= 1, got {window}")
        if not 0 <= lo_pct < hi_pct <= 100:
            raise ValueError(f"cost percentiles must satisfy 0 <= lo < hi <= 100, got {lo_pct}, {hi_pct}")
        self.window = int(window)
        self.lo_pct, self.hi_pct = float(lo_pct), float(hi_pct)
        self.values: deque[float] = deque(maxlen=self.window)

    @staticmethod
    def transform(c_raw: float) -> float:
        if c_raw < 0 or math.isnan(c_raw):
            raise ValueError(f"cost must be a non-negative number, got {c_raw}")
        return math.sqrt(c_raw)

    def bounds(self) -> tuple[float, float]:
        arr = np.asarray(self.values, dtype=float)
        return float(np.percentile(arr, self.lo_pct)), float(np.percentile(arr, self.hi_pct))

    def score_value(self, c: float) -> float:
        """R_cost of an already-transformed value against the current window (no push)."""
        lo, hi = self.bounds()
        if hi - lo < 1e-8:
            return 0.5
        return 1.0 - min(1.0, max(0.0, (c - lo) / (hi - lo)))

    def score_batch(self, raw_costs: Sequence[float]) -> list[float]:
        cs = [self.transform(float(x)) for x in raw_costs]
        self.values.extend(cs)
        return [self.score_value(c) for c in cs]

    def __call__(self, c_raw: float) -> float:
        return self.score_batch([c_raw])[0]

    def state_dict(self) -> dict:
        return {"window": self.window, "lo_pct": self.lo_pct, "hi_pct": self.hi_pct, "values": list(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.window = int(state["window"])
        self.lo_pct, self.hi_pct = float(state["lo_pct"]), float(state["hi_pct"])
        self.values = deque((float(v) for v in state["values"]), maxlen=self.window)


def combine(format_score: float, outcome: float, cost_score: float, alpha: float) -> float:
    """The hierarchical Router-R1 reward (see the module docstring)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if format_score < 0:
        return -1.0
    if outcome > 0:
        return (1.0 - alpha) * outcome + alpha * cost_score
    return 0.0


@dataclass
class RewardBreakdown:
    reward: float
    format_score: float
    format_violations: list[str]
    outcome: float
    answer: str | None
    cost_raw: float
    cost_score: float


class RouterR1Reward:
    """Scores a batch of finished responses. Stateful only through the cost window."""

    def __init__(self, names: Sequence[str], alpha: float = 0.0, metric: str = "em", window: int = 1000,
                 lo_pct: float = 5.0, hi_pct: float = 95.0) -> None:
        if metric not in OUTCOMES:
            raise ValueError(f"unknown outcome metric {metric!r}; use one of {', '.join(OUTCOMES)}")
        combine(0.0, 0.0, 0.0, alpha)  # validates alpha
        self.names = list(names)
        self.alpha = float(alpha)
        self.metric = metric
        self.normalizer = CostNormalizer(window, lo_pct, hi_pct)

    def score(self, responses: Sequence[str], golds: Sequence[Any], raw_costs: Sequence[float],
              tasks: Sequence[str] | None = None) -> list[RewardBreakdown]:
        n = len(responses)
        if len(golds) != n or len(raw_costs) != n or (tasks is not None and len(tasks) != n):
            raise ValueError(f"reward: {n} responses but {len(golds)} golds, {len(raw_costs)} costs"
                             + (f", {len(tasks)} tasks" if tasks is not None else ""))
        cost_scores = self.normalizer.score_batch(raw_costs)
        out = []
        for i in range(n):
            rep = check_format(responses[i], self.names)
            answer = extract_answer(responses[i])
            task = tasks[i] if tasks is not None else "qa"
            outcome = outcome_score(answer, golds[i], task, self.metric)
            r = combine(rep.score, outcome, cost_scores[i], self.alpha)
            out.append(RewardBreakdown(r, rep.score, rep.violations, outcome, answer, float(raw_costs[i]),
                                       cost_scores[i]))
        return out
