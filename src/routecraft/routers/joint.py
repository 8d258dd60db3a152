"""The joint router: one predictor over (model, strategy, output budget) that can choose all three — what neither
RTR (model × strategy) nor R2-Router (model × budget) does alone.

The network is RTR's (two heads, P(correct) with cross-entropy and output tokens with MSE, same training loop and
defaults, see ``routecraft.routers.rtr``; except early stopping on the validation loss, ``cls_val_metric="loss"``)
with a budget encoding added to its input:

    [query emb ⊕ model description emb ⊕ strategy description emb ⊕ learnable model emb ⊕ learnable strategy emb
     ⊕ (log budget, is_default)]

so a strategy is one entity whatever its budget, and the budget is a number the network can interpolate: budgets
not in the data can be predicted and chosen (``extra_budgets``). With ``budget_grid=True`` (default) the encoding
also holds the budget's linear-interpolation weights over the training data's budgets (one-hot at those budgets,
(1−α, α) between two of them): with (log b) alone the network fits a smooth curve in log b and misses sharp
thresholds between budgets (tests/routers/test_joint.py: a question that needs 50 tokens, predicted 0.31 at budget 64
for a model right 70% of the time there); with the weights it can place a step at any data budget and still
interpolates between them, like R2-Router's anchors.

Ensemble (``ensemble="auto"``, default): the joint network, RTR and R2-Router are each fitted on the training
queries minus a held-out ``select_fraction``; on the held-out queries every blend in :data:`BLENDS` (the members
alone, pairwise means, the three-way mean; a blend averages the members' predicted scores, tokens and costs) is
scored by the area under its realised accuracy-vs-cost curve over a λ sweep (``routing_area``), and the best blend
is kept; its members are then fitted again on all the training queries (``refit``, default on). The members run at
their own defaults (RTR: the paper's code) with the shared settings (``pool``, ``prices``, ``budget_template``,
``seed``, ``text_encoder``), overridden by the ``rtr``/``r2`` dicts. So on data where RTR and R2-Router both apply
the joint router can pick either of them when the joint network does not beat them, and a blend where it helps.
``ensemble="none"``: the joint network alone, fitted on all the training data; ``ensemble="mean"``: the three-way
mean without selection.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from routecraft.data.schema import Candidate, RoutingData
from routecraft.routers.base import Prediction
from routecraft.routers.networks import CandidateNetRouter
from routecraft.routers.r2_router import R2Router, parse_budgets
from routecraft.routers.rtr import RTRConfig, RTRRouter
from routecraft.routers.token_budget import query_chars, routing_area, strategy_description
from routecraft.routers.torch_utils import one_thread
from routecraft.routers.validation import check_features, check_fitted, query_ids

MEMBERS = ("joint", "rtr", "r2")
#: candidate blends (weights over MEMBERS), in order of preference on ties
BLENDS: list[tuple[float, float, float]] = [
    (1, 0, 0), (0, 1, 0), (0, 0, 1), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5), (1 / 3, 1 / 3, 1 / 3)]


class JointConfig(RTRConfig):
    # early stopping on the validation loss, not RTR's accuracy: accuracy stops once every cell is on the right side
    # of 0.5, before P(correct) is calibrated enough to route (tests/routers/test_rtr.py)
    cls_val_metric: Literal["accuracy", "loss"] = "loss"
    ensemble: Literal["auto", "none", "mean"] = "auto"
    select_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share of queries for choosing the blend")
    refit: bool = Field(True, description="after choosing the blend, fit its members again on all the training "
                                          "queries (the held-out ones included)")
    select_folds: int = Field(1, ge=1, le=20, description="1: choose the blend on one held-out select_fraction of "
                              "the training queries; k > 1: on the pooled out-of-fold predictions of k folds (every "
                              "training query held out once; k fits of every member, then the refit)")
    rtr: dict = Field(default_factory=dict, description="settings of the RTR member (default: RTR's defaults)")
    r2: dict = Field(default_factory=dict, description="settings of the R2-Router member (default: its defaults)")
    extra_budgets: list[int] = Field(default_factory=list)
    budget_grid: bool = Field(True, description="add the interpolation weights over the data's budgets to the "
                                                "budget encoding")

    @field_validator("extra_budgets", mode="before")
    @classmethod
    def _budgets(cls, v: Any) -> Any:
        return parse_budgets(v)


def budget_encoding(budget: int | None, grid: list[int] | tuple[int, ...] = ()) -> np.ndarray:
    """(log budget, is_default) — (ln b, 0) for a limited budget b, (0, 1) for the default (no limit) — followed,
    when ``grid`` (the training data's limited budgets) is given, by b's linear-interpolation weights over the grid
    (one-hot at a grid budget; (1−α, α) on the two neighbours between them; the end budget beyond the ends; all
    zero for the default budget)."""
    head = np.array([0.0, 1.0]) if budget is None else np.array([math.log(budget), 0.0])
    hat = np.zeros(len(grid))
    if budget is not None and len(grid):
        g = np.asarray(grid, dtype=np.float64)
        if budget <= g[0]:
            hat[0] = 1.0
        elif budget >= g[-1]:
            hat[-1] = 1.0
        else:
            k = int(np.searchsorted(g, budget, side="right") - 1)
            a = (budget - g[k]) / (g[k + 1] - g[k])
            hat[k], hat[k + 1] = 1.0 - a, a
    return np.concatenate([head, hat])


class JointRouter(CandidateNetRouter):
    """One network over (model, strategy, budget) candidates, optionally blended with RTR and R2-Router by
    validation (see the module docstring)."""

    name = "joint"
    budget_dims = 2
    config_cls = JointConfig

    def unit_key(self, c: Candidate) -> str:
        return c.strategy

    def unit_text(self, c: Candidate) -> str:
        return strategy_description(c.strategy)

    def budget_features(self, c: Candidate) -> np.ndarray:
        return budget_encoding(c.budget, self.budget_grid_ if self.params["budget_grid"] else ())

    def _prepare_budgets(self, cands: list[Candidate]) -> None:
        self.budget_grid_ = sorted({c.budget for c in cands if c.budget is not None})
        self.budget_dims = 2 + (len(self.budget_grid_) if self.params["budget_grid"] else 0)

    # ---- fitting --------------------------------------------------------------------------------------------
    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "JointRouter":
        with one_thread():
            return self._fit_joint(data, X)

    def _fit_joint(self, data: RoutingData, X: np.ndarray | None) -> "JointRouter":
        p = self.params
        X = check_features(X, len(data.queries), self.name)
        self.members_: dict[str, Any] = {}
        if p["ensemble"] == "none":
            self.fit_network(data, X)
            self.weights_ = (1.0, 0.0, 0.0)
            self.selection_ = {}
            return self
        if p["ensemble"] == "mean":
            self.fit_network(data, X)
            self._fit_members(data, X)
            self.weights_, self.selection_ = BLENDS[-1], {}
            return self
        qids = data.queries["query_id"].astype(str).to_numpy()
        perm = np.random.default_rng(p["seed"] + 7919).permutation(len(qids))
        k = int(p["select_folds"])
        # held-out groups of queries: one of select_fraction (k = 1), or k folds covering every training query
        groups = [perm[:int(round(p["select_fraction"] * len(qids)))]] if k == 1 else np.array_split(perm, k)
        preds_parts: list[dict[str, Prediction]] = []
        truth_parts: list[tuple[np.ndarray, np.ndarray]] = []
        for g in groups:
            held = np.zeros(len(qids), dtype=bool)
            held[g] = True
            # subset keeps the queries' order, so the feature rows line up
            rest = data.subset(qids[~held])
            self.fit_network(rest, X[~held])
            self._fit_members(rest, X[~held])
            sel = data.subset(qids[held]).complete(self.candidates)
            if not len(sel.queries):
                continue
            Xsel = X[held & np.isin(qids, sel.queries["query_id"].astype(str).to_numpy())]
            truth = sel.matrices(candidates=self.candidates)
            preds_parts.append(self._member_predictions(sel.queries, Xsel))
            truth_parts.append((truth.score, truth.cost))
        n_sel = sum(len(t[0]) for t in truth_parts)
        if n_sel < 5:
            self.fit_network(data, X)
            self._fit_members(data, X)
            self.weights_, self.selection_ = BLENDS[-1], {"note": "too few held-out queries; three-way mean"}
            return self
        preds = _stack(preds_parts)
        ts, tc = np.vstack([t[0] for t in truth_parts]), np.vstack([t[1] for t in truth_parts])
        areas = {}
        for w in BLENDS:
            pr = blend(preds, w)
            areas[w] = routing_area(pr.score, pr.cost, ts, tc)
        best = max(BLENDS, key=lambda w: (areas[w], -BLENDS.index(w)))
        self.weights_ = best
        refit = bool(p["refit"]) or k > 1  # the k fold fits each lack a fold: the chosen members are fitted again
        self.selection_ = {"areas": {_label(w): a for w, a in areas.items()}, "chosen": _label(best),
                           "n_select_queries": n_sel, "folds": k, "refit": refit}
        if refit:
            # the chosen members again, on all the training queries: held out for the choice, they are not lost
            # to the fit (on our own data's 75-question state, 60 training queries, the members saw only 48)
            if best[0] > 0:
                self.fit_network(data, X)
            self._fit_members(data, X, which=[m for m, w in zip(MEMBERS[1:], best[1:]) if w > 0])
        return self

    def _fit_members(self, data: RoutingData, X: np.ndarray, which: list[str] | tuple[str, ...] = ("rtr", "r2")
                     ) -> None:
        p = self.params
        # the members run at their own defaults (RTR: the paper's) plus the shared settings and `rtr`/`r2` overrides
        shared = {k: p[k] for k in ("pool", "prices", "budget_template", "seed")}
        rtr_kw = {**shared, "text_encoder": p["text_encoder"], **p["rtr"]}
        if "rtr" in which:
            self.members_["rtr"] = RTRRouter(**rtr_kw).fit(data, X)
        if "r2" in which:
            r2_kw = {**shared, "extra_budgets": p["extra_budgets"], **p["r2"]}
            self.members_["r2"] = R2Router(**r2_kw).fit(data, X)

    # ---- predicting -----------------------------------------------------------------------------------------
    def _net_prediction(self, queries: pd.DataFrame, X: np.ndarray, extra_budgets: list[int]) -> Prediction:
        cands = list(self.candidates)
        cm, cs, cb = self.cm_, self.cs_, self.cb_
        tin = self.input_tokens_.predict(query_chars(queries))
        extra = self._extra_candidates(extra_budgets)
        if extra:
            cm = np.concatenate([cm, [self.models_.index(c.model) for c in extra]])
            cs = np.concatenate([cs, [self.units_.index(c.strategy) for c in extra]])
            cb = np.concatenate([cb, np.array([self.budget_features(c) for c in extra])])
            # input tokens of an extra budget: the mean over the same (model, strategy)'s limited budgets
            cols = []
            for c in extra:
                js = [j for j, k in enumerate(self.candidates)
                      if (k.model, k.strategy) == (c.model, c.strategy) and k.budget is not None]
                cols.append(tin[:, js].mean(axis=1))
            tin = np.concatenate([tin, np.stack(cols, axis=1)], axis=1)
            cands += extra
        score, tokens = self.heads(X, cm, cs, cb)
        return Prediction(cands, score, self.cost_of(queries, tokens, cands, tin), tokens)

    def _extra_candidates(self, budgets: list[int]) -> list[Candidate]:
        if not budgets:
            return []
        have = {c.id for c in self.candidates}
        groups = sorted({(c.model, c.strategy) for c in self.candidates if c.budget is not None})
        return [Candidate(m, s, int(b)) for m, s in groups for b in budgets
                if Candidate(m, s, int(b)).id not in have]

    def _member_predictions(self, queries: pd.DataFrame, X: np.ndarray,
                            extra_budgets: list[int] | None = None) -> dict[str, Prediction]:
        extra = list(self.params["extra_budgets"] if extra_budgets is None else extra_budgets)
        out = {"joint": self._net_prediction(queries, X, extra)}
        if self.members_:
            out["rtr"] = self.members_["rtr"].predict(queries, X)
            out["r2"] = self.members_["r2"].predict(queries, X, extra_budgets=extra)
        return out

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None,
                extra_budgets: list[int] | None = None) -> Prediction:
        """Blended predictions for every candidate (and for ``extra_budgets``, default the setting, where a
        member can predict them: the joint network and R2-Router can, RTR cannot)."""
        check_fitted(self, "net_")
        n = len(query_ids(queries, self.name))
        X = check_features(X, n, self.name, self.dim_)
        preds = self._member_predictions(queries, X, extra_budgets)
        return blend(preds, self.weights_)

    @property
    def chosen_blend(self) -> str:
        check_fitted(self, "weights_")
        return _label(self.weights_)

    # ---- cold start -----------------------------------------------------------------------------------------
    def add_candidates(self, new_data: RoutingData, X: np.ndarray | None = None, steps: int | None = None,
                       lr: float | None = None) -> "JointRouter":
        """Cold start (see ``CandidateNetRouter.add_candidates``) of the joint network and of the members in use:
        RTR the same way, R2-Router by fitting the new candidates' own predictors on ``new_data``."""
        super().add_candidates(new_data, X, steps, lr)
        w = dict(zip(MEMBERS, self.weights_))
        if self.members_:
            if w["rtr"] > 0:
                self.members_["rtr"].add_candidates(new_data, X, steps, lr)
            if w["r2"] > 0:
                self.members_["r2"].add_candidates(new_data, X)
        return self


def _label(w: tuple[float, float, float]) -> str:
    parts = [m for m, x in zip(MEMBERS, w) if x > 0]
    return parts[0] if len(parts) == 1 else "mean(" + "+".join(parts) + ")"


def _stack(parts: list[dict[str, Prediction]]) -> dict[str, Prediction]:
    """Each member's predictions on several groups of queries, one under the other (same candidates throughout)."""
    out = {}
    for m in parts[0]:
        ps = [pt[m] for pt in parts]
        ids = [c.id for c in ps[0].candidates]
        if any([c.id for c in pr.candidates] != ids for pr in ps):
            raise ValueError(f"joint router: member {m!r} predicted different candidates on different folds")
        tok = None if any(pr.tokens is None for pr in ps) else np.vstack([pr.tokens for pr in ps])
        out[m] = Prediction(list(ps[0].candidates), np.vstack([pr.score for pr in ps]),
                            np.vstack([pr.cost for pr in ps]), tok)
    return out


def blend(preds: dict[str, Prediction], w: tuple[float, float, float]) -> Prediction:
    """Weighted mean of the members' predictions, column by column over the candidates of the first member
    (the joint network); where a member lacks a candidate the other weights are renormalised."""
    base = preds["joint"]
    n, C = base.score.shape
    score, cost, tok, tot = np.zeros((n, C)), np.zeros((n, C)), np.zeros((n, C)), np.zeros(C)
    for m, wm in zip(MEMBERS, w):
        if wm <= 0 or m not in preds:
            continue
        pr = preds[m]
        pos = {c.id: j for j, c in enumerate(pr.candidates)}
        cols = np.array([pos.get(c.id, -1) for c in base.candidates])
        have = cols >= 0
        score[:, have] += wm * pr.score[:, cols[have]]
        cost[:, have] += wm * pr.cost[:, cols[have]]
        ptok = pr.tokens if pr.tokens is not None else np.zeros_like(pr.score)
        tok[:, have] += wm * ptok[:, cols[have]]
        tot[have] += wm
    if (tot <= 0).any():  # candidates only the joint network predicts (none for the data's own candidates)
        miss = tot <= 0
        score[:, miss], cost[:, miss], tok[:, miss] = base.score[:, miss], base.cost[:, miss], base.tokens[:, miss]
        tot[miss] = 1.0
    return Prediction(list(base.candidates), score / tot, cost / tot, tok / tot)
