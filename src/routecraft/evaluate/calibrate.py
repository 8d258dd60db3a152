"""Choose the trade-off λ on a calibration split to hit a target.

Two targets, as users of RouteLLM ask for:

* a mean cost per query (USD): the λ whose decisions on the calibration split have the highest mean score among
  those whose realised mean cost stays within the target;
* a share of calls to a named model ("20% strong calls"): the λ whose decisions send at most that share of the
  calibration queries to the model, with the highest mean score among those.

Realised cost and score come from the logged outcomes of the calibration split (no model is called).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from routecraft.data.schema import OutcomeMatrices
from routecraft.routers.base import Prediction, choose


@dataclass
class Calibration:
    lam: float
    target: str
    cal_cost: float
    cal_score: float
    cal_share: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _fine_grid(pred: Prediction, n: int = 400) -> np.ndarray:
    c = pred.cost[pred.cost > 0]
    if c.size == 0:
        return np.array([0.0])
    return np.concatenate([[0.0], np.geomspace(1e-4 / c.max(), 1e4 / c.min(), n)])


def calibrate(pred: Prediction, truth: OutcomeMatrices, target_cost: float | None = None,
              model: str | None = None, share: float | None = None) -> Calibration:
    if (target_cost is None) == (share is None):
        raise ValueError("give exactly one target: target_cost (USD per query) or share (with model)")
    if share is not None:
        if model is None:
            raise ValueError("a call-share target needs the model it is about (e.g. model='gpt-4-1106-preview')")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {share}")
        cols = np.array([c.model == model for c in pred.candidates])
        if not cols.any():
            raise ValueError(f"model {model!r} is not among the router's candidates "
                             f"({sorted({c.model for c in pred.candidates})})")
    rows = np.arange(pred.score.shape[0])
    best: Calibration | None = None
    fallback: Calibration | None = None
    for lam in _fine_grid(pred):
        idx = choose(pred, lam=float(lam))
        cost = float(truth.cost[rows, idx].mean())
        score = float(truth.score[rows, idx].mean())
        frac = float(cols[idx].mean()) if share is not None else None
        ok = cost <= target_cost + 1e-15 if target_cost is not None else frac <= share + 1e-12
        cal = Calibration(float(lam), "cost" if target_cost is not None else f"share:{model}", cost, score, frac)
        if ok and (best is None or score > best.cal_score + 1e-12 or
                   (abs(score - best.cal_score) <= 1e-12 and cost < best.cal_cost)):
            best = cal
        if fallback is None or cost < fallback.cal_cost:
            fallback = cal
    if best is None:
        # the target is below what any λ reaches: the cheapest decisions are the closest we can get
        assert fallback is not None
        return fallback
    return best
