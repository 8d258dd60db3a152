"""``cascade``: consult cheap candidates first, accept their answer when enough of them agree, else escalate.

A fixed plan found on the training split (the FrugalGPT / AutoMix / "mixture of thoughts" family): stage 1 consults
a set of cheap candidates concurrently and accepts the majority answer when at least ``m`` of them agree; otherwise
the last stage — one strong candidate — answers. The search enumerates, within bounds, every plan over a shortlist
of candidates, replays each on the training queries (all answers are in the logs), and keeps each plan's mean score
and cost; a trade-off λ (or a cost cap) then picks the plan with the best score − λ·cost. A plan with no stage (one
candidate called up front) is in the search too, so where observing does not pay the cascade is an up-front choice.

Search bounds (parameters): ``pool`` — how many cheap candidates may be consulted (the Pareto front of train cost vs
score among those cheaper than the strongest, then the most accurate, up to ``pool``); ``finals`` — how many strong
candidates may answer last; ``max_members`` — the largest stage (1–3); ``two_stage`` — also plans that ask one more
cheap candidate when the first ones disagree, before escalating.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from routecraft.data.schema import Candidate, RoutingData
from routecraft.routers.base import Decision, ObservingRouter, Prediction
from routecraft.routers.observations import CascadePlan, Observations, Replay, Stage, replay_plan


def shortlist(obs: Observations, pool: int, finals: int) -> tuple[list[int], list[int]]:
    """(cheap candidates that may be consulted, strong candidates that may answer last), as column indices."""
    s, c = obs.score.mean(0), obs.cost.mean(0)
    order = np.lexsort((c, -s))
    strong = int(order[0])
    finals_ = [strong] + [int(j) for j in order[1:] if c[j] >= np.median(c)][: max(0, finals - 1)]
    cheaper = [j for j in range(len(s)) if c[j] < c[strong]]
    # the Pareto front (cost ascending, score strictly rising), then the most accurate of the rest
    front, best = [], -np.inf
    for j in sorted(cheaper, key=lambda j: (c[j], -s[j])):
        if s[j] > best:
            front.append(j)
            best = s[j]
    rest = [j for j in sorted(cheaper, key=lambda j: (-s[j], c[j])) if j not in front]
    cheap = sorted((front + rest)[:pool], key=lambda j: (c[j], j))
    return cheap, finals_


def enumerate_plans(cheap: list[int], finals: list[int], n_candidates: int, max_members: int = 3,
                    two_stage: bool = True) -> list[CascadePlan]:
    plans = [CascadePlan((), j) for j in range(n_candidates)]  # up front: no consultation
    stages: list[Stage] = []
    for k in range(1, max_members + 1):
        for members in combinations(cheap, k):
            for m in range(max(1, k // 2 + 1) if k > 1 else 1, k + 1):
                stages.append(Stage(members, m))
    for st in stages:
        for f in finals:
            if f in st.members:
                continue
            plans.append(CascadePlan((st,), f))
            if two_stage and len(st.members) == 2 and st.min_agree == 2:
                for extra in cheap:
                    if extra not in st.members:
                        plans.append(CascadePlan((st, Stage(st.members + (extra,), 2)), f))
    return plans


class Cascade:
    """The plan search and its results (see the module docstring); wrapped as a router by ``CascadeRouter``."""

    def __init__(self, pool: int = 8, finals: int = 3, max_members: int = 3, two_stage: bool = True) -> None:
        self.pool, self.finals, self.max_members, self.two_stage = pool, finals, max_members, two_stage
        self.candidates: list[Candidate] = []
        self.plans: list[CascadePlan] = []
        self.train_score = np.zeros(0)
        self.train_cost = np.zeros(0)

    def fit(self, obs: Observations) -> "Cascade":
        self.candidates = list(obs.candidates)
        cheap, finals = shortlist(obs, self.pool, self.finals)
        self.plans = enumerate_plans(cheap, finals, len(obs.candidates), self.max_members, self.two_stage)
        # replay on the shortlist's columns only (votes scale with the square of the columns)
        cols = sorted(set(cheap) | set(finals))
        pos = {j: i for i, j in enumerate(cols)}
        sub = obs.columns(cols)
        s, c = np.zeros(len(self.plans)), np.zeros(len(self.plans))
        for i, p in enumerate(self.plans):
            if not p.stages:
                s[i], c[i] = obs.score[:, p.final].mean(), obs.cost[:, p.final].mean()
                continue
            local = CascadePlan(tuple(Stage(tuple(pos[m] for m in st.members), st.min_agree) for st in p.stages),
                                pos[p.final])
            r = replay_plan(local, sub)
            s[i], c[i] = r.score.mean(), r.cost.mean()
        self.train_score, self.train_cost = s, c
        return self

    def choose(self, lam: float = 0.0, max_cost: float | None = None) -> int:
        """Index of the plan for a trade-off: best train score − λ·cost (ties: cheaper), or the best train score
        within ``max_cost`` (the cheapest plan when none fits)."""
        s, c = self.train_score, self.train_cost
        if max_cost is not None:
            fits = c <= max_cost
            if not fits.any():
                return int(np.argmin(c))
            return int(np.lexsort((c, -np.where(fits, s, -np.inf)))[0])
        util = s - lam * c
        near = util >= util.max() - 1e-12
        return int(np.argmin(np.where(near, c, np.inf)))

    def plan(self, lam: float = 0.0, max_cost: float | None = None) -> CascadePlan:
        return self.plans[self.choose(lam, max_cost)]

    def replay(self, obs: Observations, lam: float = 0.0, max_cost: float | None = None) -> Replay:
        return replay_plan(self.plan(lam, max_cost), obs)

    def decision(self, candidates: list[Candidate], lam: float = 0.0, max_cost: float | None = None) -> Decision:
        """The plan for a trade-off as a decision: its first candidate, the plan's training score and cost, and the
        plan (``kind`` "cascade": stages to consult, then the final candidate)."""
        i = self.choose(lam, max_cost)
        p = self.plans[i]
        first = candidates[p.stages[0].members[0]] if p.stages else candidates[p.final]
        s, c = float(self.train_score[i]), float(self.train_cost[i])
        plan = {"kind": "cascade", **p.to_dict(candidates), "describe": p.describe(candidates), "train_score": s,
                "train_cost": c}
        return Decision(first, s, c, [], plan)

    def upfront_decision(self, candidates: list[Candidate], lam: float = 0.0, max_cost: float | None = None
                         ) -> Decision:
        """The best decision without consulting: among the searched plans that consult nothing (one candidate up
        front), the best for the trade-off by training score and cost, with every such candidate in the table."""
        single = [i for i, p in enumerate(self.plans) if not p.stages]
        if not single:
            raise ValueError("this cascade has no up-front plan (it was searched without single candidates)")
        pred = Prediction([candidates[self.plans[i].final] for i in single],
                          self.train_score[single][None, :], self.train_cost[single][None, :])
        return Decision.from_prediction(pred, 0, lam, max_cost)

    def state(self) -> dict[str, Any]:
        return {"plans": [{"stages": [[list(st.members), st.min_agree] for st in p.stages], "final": p.final}
                          for p in self.plans],
                "train_score": self.train_score.tolist(), "train_cost": self.train_cost.tolist()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.plans = [CascadePlan(tuple(Stage(tuple(m), int(k)) for m, k in p["stages"]), int(p["final"]))
                      for p in state["plans"]]
        self.train_score = np.asarray(state["train_score"], dtype=float)
        self.train_cost = np.asarray(state["train_cost"], dtype=float)


def fit_cascade(data: RoutingData, **params: Any) -> tuple[Cascade, Observations]:
    obs = Observations.from_data(data, router="cascade")
    return Cascade(**params).fit(obs), obs


# ---- the router ----------------------------------------------------------------------------------------------------
class CascadeRouter(ObservingRouter):
    """``cascade``: the plan search of ``Cascade`` behind the router interface (no query features)."""

    name = "cascade"
    uses_features = False
    light = True

    def __init__(self, pool: int = 8, finals: int = 3, max_members: int = 3, two_stage: bool = True) -> None:
        super().__init__(pool=pool, finals=finals, max_members=max_members, two_stage=two_stage)
        self.cascade: Cascade | None = None

    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "CascadeRouter":
        obs = Observations.from_data(data, router=self.name)
        self.candidates = list(obs.candidates)
        self.cascade = Cascade(**self.params).fit(obs)
        return self

    def replay(self, data: RoutingData, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> Replay:
        key = tuple(data.queries["query_id"])
        if getattr(self, "_obs_cache", (None,))[0] != key:  # one observation table per data set (a λ sweep)
            self._obs_cache = (key, self.observations(data))
        return self.cascade.replay(self._obs_cache[1], lam, max_cost)

    def decide(self, queries: pd.DataFrame, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> list[Decision]:
        return [self.plan_decision(lam, max_cost) for _ in range(len(queries))]

    def decide_one(self, text: str, features: np.ndarray | None = None, *, lam: float = 0.0,
                   max_cost: float | None = None, **context: Any) -> Decision:
        return self.plan_decision(lam, max_cost)

    def upfront_decision(self, text: str, features: np.ndarray | None = None, *, lam: float = 0.0,
                         max_cost: float | None = None, **context: Any) -> Decision:
        return self.cascade.upfront_decision(self.candidates, lam, max_cost)

    def plan_decision(self, lam: float = 0.0, max_cost: float | None = None) -> Decision:
        """The plan for a trade-off (the same for every query), as a decision: its first candidate, the plan's
        training score and cost, and the plan (``kind`` "cascade": stages to consult, then the final candidate)."""
        return self.cascade.decision(self.candidates, lam, max_cost)

    def state(self) -> dict:
        return {"cascade": self.cascade.state()}

    def set_state(self, state: dict) -> None:
        self.cascade = Cascade(**self.params)
        self.cascade.set_state(state["cascade"])
        self.cascade.candidates = list(self.candidates)
