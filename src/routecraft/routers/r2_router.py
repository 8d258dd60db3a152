"""R2-Router (Xue et al. 2026, arXiv 2602.02823): route each query to a (model, output-length budget) pair by
predicting quality as a function of the budget (the paper, and the authors' code UCF-ML-Research/R2-Router).

Predictors, one set per (model, strategy) — R2-Router's "LLM"; on data with one strategy that is the model:

* **quality**, one head per anchor budget and one for the unbounded ("default") budget, from the query embedding:
  ``head="mlp"`` (the paper: 3-layer MLP [256, 128, 64], ReLU, sigmoid output, MSE, Adam lr 1e-4, 100 epochs;
  batch 128 from the paper-era code) or ``head="ridge"`` (the released code: Ridge α = 10, clipped to [0, 1]).
  ``loss="bce"``/``dropout=0.5``/``weight_decay=1e-8`` give the paper-era code's variant of the MLP.
* **output tokens** for the unbounded budget: Ridge α = 10 (released code; ``token_head="linear"`` for the
  paper-era LinearRegression), clipped at 0.
* **between anchors**: quality (and, with ``budget_cost="predicted"``, tokens) is interpolated linearly on the raw
  budget axis between the two neighbouring anchors, extrapolated linearly beyond the end anchors
  (``extrapolate=True``, as scipy's ``interp1d(fill_value="extrapolate")`` in the code) and clipped to [0, 1].
  ``anchors=K`` keeps K anchors per (model, strategy), picked as ``linspace(0, n−1, K)`` over its sorted budgets
  (the code's rule); the other budgets in the data are then predicted by interpolation. ``anchors=None`` (default):
  every budget in the data is an anchor. ``extra_budgets=[...]`` adds candidates at budgets not in the data
  (for every (model, strategy) with at least two anchors), e.g. for ``routecraft route`` and the gateway; the
  bench only scores candidates that exist in its data.

Cost (USD): predicted input tokens × input price + output tokens × output price, where the output tokens are the
budget itself for a limited budget (``budget_cost="budget"``, released code) or the predicted tokens
(``"predicted"``; then a token Ridge is fitted for every candidate), and the predicted tokens for the unbounded
budget. Prices come from the training outcomes (``prices="data"``) or the pool YAML (``prices="pool"``).

Deciding: ``decide_r2(queries, X, lam_prime)`` maximises (1−λ')·Q − λ'·C, the paper's form; ``decide(..., lam)``
maximises Q − λ·C, the same family with λ = λ'/(1−λ') (what the bench sweeps). The chosen decision's ``plan``
holds the length-constrained instruction (``budget_template``; default the paper's "Use at most {k} tokens.") and
the hard cap (budget + slack) that ``execute`` applies when it runs the decision.

Data with only the default budget reduces R2-Router to per-model (quality, tokens) predictors.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from routecraft.data.schema import Candidate, RoutingData
from routecraft.routers.base import Prediction, TabularRouter
from routecraft.routers.token_budget import InputTokenModel, PriceModel, ReasoningDecisions, long_outcomes, query_chars
from routecraft.routers.torch_utils import one_thread, parse_hidden
from routecraft.routers.validation import check_features, check_fitted, query_ids, validate_config


class R2Config(BaseModel):
    """R2-Router settings; defaults are the paper's unless marked (released code [C], our choice [D])."""

    model_config = ConfigDict(extra="forbid")

    head: Literal["mlp", "ridge"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [256, 128, 64])
    lr: float = Field(1e-4, gt=0)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1, description="[C] paper-era code")
    loss: Literal["mse", "bce"] = "mse"
    dropout: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    alpha: float = Field(10.0, gt=0, description="[C] Ridge head α")
    token_head: Literal["ridge", "linear"] = "ridge"
    token_alpha: float = Field(10.0, gt=0, description="[C]")
    anchors: Optional[int] = Field(None, ge=1)
    extrapolate: bool = True
    budget_cost: Literal["budget", "predicted"] = "budget"
    extra_budgets: list[int] = Field(default_factory=list)
    budget_template: str = "paper"
    pool: Optional[str] = "local"
    prices: Literal["data", "pool"] = "data"
    seed: int = 0

    @field_validator("hidden", mode="before")
    @classmethod
    def _hidden(cls, v: Any) -> Any:
        if isinstance(v, (int, str)):
            return parse_hidden(v)
        return v

    @field_validator("extra_budgets", mode="before")
    @classmethod
    def _budgets(cls, v: Any) -> Any:
        return parse_budgets(v)


def parse_budgets(v: Any) -> list[int]:
    """``96``, ``"96 192"``, ``"96/192"`` or ``[96, 192]`` -> sorted distinct positive ints."""
    if v is None:
        return []
    if isinstance(v, (int, np.integer)):
        v = [int(v)]
    if isinstance(v, str):
        v = [x for x in v.replace(";", " ").replace("/", " ").split() if x]
    try:
        out = [int(x) for x in v]
    except (TypeError, ValueError):
        raise ValueError(f"budgets must be positive token counts, got {v!r}") from None
    if any(b <= 0 for b in out):
        raise ValueError(f"budgets must be positive token counts, got {out}")
    return sorted(set(out))


def _group(c: Candidate) -> tuple[str, str]:
    return (c.model, c.strategy)


def interpolate(budgets: np.ndarray, values: np.ndarray, at: np.ndarray, extrapolate: bool = True) -> np.ndarray:
    """Piecewise-linear interpolation of ``values`` (n, K) given at sorted ``budgets`` (K,) to budgets ``at`` (m,);
    beyond the end anchors linear extrapolation from the two end anchors (or the end value)."""
    budgets = np.asarray(budgets, dtype=np.float64)
    at = np.asarray(at, dtype=np.float64)
    K = len(budgets)
    if K == 1:
        return np.repeat(values[:, :1], len(at), axis=1)
    pos = np.clip(np.searchsorted(budgets, at, side="right") - 1, 0, K - 2)
    lo, hi = budgets[pos], budgets[pos + 1]
    w = (at - lo) / (hi - lo)
    if not extrapolate:
        w = np.clip(w, 0.0, 1.0)
    return values[:, pos] * (1.0 - w)[None, :] + values[:, pos + 1] * w[None, :]


class R2Router(ReasoningDecisions, TabularRouter):
    """R2-Router: per (model, strategy) quality heads at anchor budgets + an unbounded token predictor, linear
    interpolation between budgets, decision by (1−λ')Q − λ'C. See the module docstring."""

    name = "r2"

    def __init__(self, **params: Any) -> None:
        super().__init__(**validate_config(R2Config, self.name, params))

    # ---- fitting --------------------------------------------------------------------------------------------
    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "R2Router":
        with one_thread():
            return self._fit(data, X)

    def _fit(self, data: RoutingData, X: np.ndarray | None) -> "R2Router":
        long = long_outcomes(data, self.name)
        X = check_features(X, len(long.query_ids), self.name)
        p = self.params
        self.candidates = list(long.candidates)
        self.dim_ = X.shape[1]
        self._plan_heads()
        score = long.wide(long.score)
        tokens = long.wide(long.out_tokens)
        self.prices_ = PriceModel(p["prices"], p["pool"]).fit(long, self.name)
        self.input_tokens_ = InputTokenModel().fit(long, query_chars(data.queries))
        Y = score[:, self.head_cands_]
        self.quality_ = fit_quality(X, Y, p)
        tok_cols = [j for j, c in enumerate(self.candidates)
                    if c.budget is None or p["budget_cost"] == "predicted"]
        self.token_cands_ = np.array(tok_cols, dtype=np.int64)
        self.tokens_ = fit_tokens(X, tokens[:, tok_cols], p, [self.candidates[j].id for j in tok_cols], self.name)
        return self

    def _plan_heads(self) -> None:
        """Which candidates get a quality head (the unbounded ones and the anchors) and how every other budget is
        interpolated."""
        K = self.params["anchors"]
        groups: dict[tuple[str, str], list[int]] = {}
        for j, c in enumerate(self.candidates):
            if c.budget is not None:
                groups.setdefault(_group(c), []).append(j)
        head = [j for j, c in enumerate(self.candidates) if c.budget is None]
        self.groups_: dict[tuple[str, str], dict] = {}
        for g, js in groups.items():
            js = sorted(js, key=lambda j: self.candidates[j].budget)
            if K is not None and K < len(js):
                pick = sorted(set(np.linspace(0, len(js) - 1, K).astype(int).tolist()))
                anchors = [js[i] for i in pick]
            else:
                anchors = js
            head += anchors
            self.groups_[g] = {"anchors": anchors, "budgets": [self.candidates[j].budget for j in anchors],
                               "members": js}
        self.head_cands_ = np.array(sorted(head), dtype=np.int64)

    # ---- predicting -----------------------------------------------------------------------------------------
    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None,
                extra_budgets: list[int] | None = None) -> Prediction:
        """Predicted quality, cost (USD) and output tokens of every candidate, plus candidates at
        ``extra_budgets`` (default: the ``extra_budgets`` setting) interpolated between the anchors."""
        check_fitted(self, "quality_")
        n = len(query_ids(queries, self.name))
        X = check_features(X, n, self.name, self.dim_)
        p = self.params
        C = len(self.candidates)
        head_q = np.clip(predict_quality(self.quality_, X), 0.0, 1.0)
        score = np.full((n, C), np.nan)
        score[:, self.head_cands_] = head_q
        tok_pred = np.full((n, C), np.nan)
        tok_pred[:, self.token_cands_] = predict_tokens(self.tokens_, X)
        tin = self.input_tokens_.predict(query_chars(queries))
        extra = sorted(set(p["extra_budgets"] if extra_budgets is None else [int(b) for b in extra_budgets]))
        cands = list(self.candidates)
        ex_score, ex_tok, ex_tin = [], [], []
        for g, info in self.groups_.items():
            a = info["anchors"]
            ab = np.array(info["budgets"], dtype=np.float64)
            others = [j for j in info["members"] if j not in a]
            if others:
                at = np.array([self.candidates[j].budget for j in others], dtype=np.float64)
                score[:, others] = np.clip(interpolate(ab, score[:, a], at, p["extrapolate"]), 0.0, 1.0)
            if len(a) < 2:
                continue
            known = {self.candidates[j].budget for j in info["members"]}
            new_b = [b for b in extra if b not in known]
            if not new_b:
                continue
            at = np.array(new_b, dtype=np.float64)
            ex_score.append(np.clip(interpolate(ab, score[:, a], at, p["extrapolate"]), 0.0, 1.0))
            ex_tin.append(interpolate(ab, tin[:, a], at, p["extrapolate"]))
            if p["budget_cost"] == "predicted":
                ex_tok.append(np.maximum(interpolate(ab, tok_pred[:, a], at, p["extrapolate"]), 0.0))
            else:
                ex_tok.append(np.tile(at, (n, 1)))
            cands += [Candidate(g[0], g[1], int(b)) for b in new_b]
        budgets = np.array([np.nan if c.budget is None else c.budget for c in self.candidates], dtype=np.float64)
        tokens = tok_pred.copy()
        limited = ~np.isnan(budgets)
        if p["budget_cost"] == "budget":
            tokens[:, limited] = budgets[limited][None, :]
        else:  # non-anchor budgets without a token model are not possible: every candidate has one
            tokens[:, limited] = np.maximum(tok_pred[:, limited], 0.0)
        if ex_score:
            score = np.concatenate([score] + ex_score, axis=1)
            tokens = np.concatenate([tokens] + ex_tok, axis=1)
            tin = np.concatenate([tin] + ex_tin, axis=1)
        pin, pout = self.prices_.arrays(cands)
        cost = tin * pin[None, :] + tokens * pout[None, :]
        return Prediction(cands, score, cost, tokens)

    # ---- cold start -----------------------------------------------------------------------------------------
    def add_candidates(self, new_data: RoutingData, X: np.ndarray | None = None) -> "R2Router":
        """Add ``new_data``'s unknown candidates: R2-Router's predictors are per (model, budget), so a new model
        gets its own quality heads and token predictor fitted on ``new_data`` alone (the others are unchanged)."""
        check_fitted(self, "quality_")
        known = {c.id for c in self.candidates}
        new = [c for c in new_data.candidates if c.id not in known]
        if not new:
            raise ValueError(f"{self.name}.add_candidates: new_data has no candidate the router does not know")
        other = R2Router(**self.params)
        other.fit(new_data.filter_candidates(new), X)
        self._merge(other)
        return self

    def _merge(self, other: "R2Router") -> None:
        off = len(self.candidates)
        self.candidates = self.candidates + other.candidates
        self.quality_ = merge_quality(self.quality_, other.quality_)
        self.head_cands_ = np.concatenate([self.head_cands_, other.head_cands_ + off])
        self.tokens_ = merge_tokens(self.tokens_, other.tokens_)
        self.token_cands_ = np.concatenate([self.token_cands_, other.token_cands_ + off])
        for g, info in other.groups_.items():
            self.groups_[g] = {"anchors": [j + off for j in info["anchors"]], "budgets": info["budgets"],
                               "members": [j + off for j in info["members"]]}
        self.prices_.add(other.prices_)
        self.input_tokens_.extend(other.input_tokens_, range(len(other.candidates)))


# ---- quality heads --------------------------------------------------------------------------------------------
def fit_quality(X: np.ndarray, Y: np.ndarray, p: dict) -> dict:
    """One quality predictor per column of ``Y`` (NaN = not logged)."""
    if p["head"] == "ridge":
        return {"kind": "ridge", **_fit_ridge_columns(X, Y, p["alpha"])}
    return {"kind": "mlp", **_fit_mlp_heads(X, Y, p)}


def predict_quality(q: dict, X: np.ndarray) -> np.ndarray:
    if q["kind"] == "ridge":
        return X.astype(np.float64) @ q["coef"] + q["intercept"]
    return _mlp_forward_np(q, X)


def merge_quality(a: dict, b: dict) -> dict:
    if a["kind"] != b["kind"]:
        raise ValueError("cannot merge quality heads of different kinds")
    if a["kind"] == "ridge":
        return {"kind": "ridge", "coef": np.concatenate([a["coef"], b["coef"]], axis=1),
                "intercept": np.concatenate([a["intercept"], b["intercept"]])}
    return {"kind": "mlp", "layers": [(np.concatenate([Wa, Wb], axis=0), np.concatenate([ba, bb], axis=0))
                                      for (Wa, ba), (Wb, bb) in zip(a["layers"], b["layers"])],
            "loss": a["loss"]}


def _fit_ridge_columns(X: np.ndarray, Y: np.ndarray, alpha: float, linear: bool = False) -> dict:
    from sklearn.linear_model import LinearRegression, Ridge

    d, K = X.shape[1], Y.shape[1]
    coef, icpt = np.zeros((d, K)), np.zeros(K)
    mask = np.isfinite(Y)
    done = np.zeros(K, dtype=bool)
    for j in range(K):  # columns with the same logged rows are fitted together (one solve)
        if done[j]:
            continue
        same = [k for k in range(K) if not done[k] and np.array_equal(mask[:, k], mask[:, j])]
        rows = mask[:, j]
        if rows.sum() == 0:
            done[same] = True
            continue
        model = LinearRegression() if linear else Ridge(alpha=alpha)
        model.fit(X[rows], Y[rows][:, same])
        coef[:, same] = np.atleast_2d(model.coef_).T
        icpt[same] = model.intercept_
        done[same] = True
    return {"coef": coef, "intercept": icpt}


def _fit_mlp_heads(X: np.ndarray, Y: np.ndarray, p: dict) -> dict:
    """K independent MLPs (one per column of Y) trained together: the first layers share one matmul, the others
    are batched; the loss is the sum of the heads' own losses, so each head's gradients are its own."""
    import torch

    widths = [X.shape[1]] + list(p["hidden"]) + [1]
    K = Y.shape[1]
    n = len(X)
    rng = np.random.default_rng(p["seed"])
    mask = np.isfinite(Y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p["seed"])
            params = []
            for a, b in zip(widths[:-1], widths[1:]):
                bound = 1.0 / np.sqrt(a)  # PyTorch's nn.Linear default initialisation
                W = torch.nn.Parameter(torch.empty(K, a, b).uniform_(-bound, bound))
                bb = torch.nn.Parameter(torch.empty(K, 1, b).uniform_(-bound, bound))
                params.append((W, bb))
            flat = [t for pair in params for t in pair]
            if p["weight_decay"] > 0 and p["loss"] == "bce":
                opt = torch.optim.AdamW(flat, lr=p["lr"], weight_decay=p["weight_decay"])
            else:
                opt = torch.optim.Adam(flat, lr=p["lr"], weight_decay=p["weight_decay"])
            Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
            Yt = torch.from_numpy(np.nan_to_num(Y, nan=0.0).astype(np.float32)).T  # (K, n)
            Mt = torch.from_numpy(mask.astype(np.float32)).T
            drop = p["dropout"]
            for _ in range(p["epochs"]):
                order = torch.from_numpy(rng.permutation(n))
                for s in range(0, n, p["batch_size"]):
                    idx = order[s:s + p["batch_size"]]
                    out = _mlp_forward_torch(torch, params, Xt[idx], drop, True)  # (K, B)
                    y, m = Yt[:, idx], Mt[:, idx]
                    if p["loss"] == "bce":
                        err = torch.nn.functional.binary_cross_entropy_with_logits(out, y, reduction="none")
                    else:
                        err = (torch.sigmoid(out) - y) ** 2
                    loss = ((err * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)).sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    layers = [(W.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)) for W, b in params]
    return {"layers": layers, "loss": p["loss"]}


def _mlp_forward_torch(torch, params, x, dropout: float, train: bool):
    W0, b0 = params[0]
    K, d, h = W0.shape
    hcur = (x @ W0.permute(1, 0, 2).reshape(d, K * h)).reshape(len(x), K, h).permute(1, 0, 2) + b0
    for W, b in params[1:]:
        hcur = torch.relu(hcur)
        if dropout > 0 and train:
            hcur = torch.nn.functional.dropout(hcur, dropout, training=True)
        hcur = torch.bmm(hcur, W) + b
    return hcur[..., 0]


def _mlp_forward_np(q: dict, X: np.ndarray) -> np.ndarray:
    layers = q["layers"]
    W0, b0 = layers[0]
    K, d, h = W0.shape
    Xf = X.astype(np.float64)
    hcur = (Xf @ W0.transpose(1, 0, 2).reshape(d, K * h)).reshape(len(X), K, h).transpose(1, 0, 2) + b0
    for W, b in layers[1:]:
        hcur = np.maximum(hcur, 0.0)
        hcur = np.matmul(hcur, W) + b
    z = hcur[..., 0].T  # (n, K)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


# ---- token predictors -----------------------------------------------------------------------------------------
def fit_tokens(X: np.ndarray, T: np.ndarray, p: dict, ids: list[str], who: str) -> dict:
    for j, cid in enumerate(ids):
        if not np.isfinite(T[:, j]).any():
            raise ValueError(f"{who}: candidate {cid!r} has no logged output_tokens; R2-Router predicts the "
                             "unbounded budget's output tokens (field 'output_tokens')")
    return _fit_ridge_columns(X, T, p["token_alpha"], linear=p["token_head"] == "linear")


def predict_tokens(t: dict, X: np.ndarray) -> np.ndarray:
    return np.maximum(X.astype(np.float64) @ t["coef"] + t["intercept"], 0.0)


def merge_tokens(a: dict, b: dict) -> dict:
    return {"coef": np.concatenate([a["coef"], b["coef"]], axis=1),
            "intercept": np.concatenate([a["intercept"], b["intercept"]])}
