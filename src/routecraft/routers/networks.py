"""The candidate network shared by RTR and the joint router: a two-head MLP (P(correct) and output tokens) over
each (query, candidate) pair, a candidate being described by its model and its strategy unit (and, for the joint
router, budget features).

Input of the first layer, per pair: [query embedding ⊕ frozen embedding of the model's description ⊕ frozen
embedding of the strategy unit's description ⊕ learnable model embedding ⊕ learnable strategy embedding
(⊕ budget features)], computed block by block (:class:`Layout`). Training follows RTR's code (Pan et al. 2025,
arXiv 2505.19435; goodmanpzh/Route-To-Reason ``src/main.py``): two heads, each with its own optimiser, validation
and early stopping (see ``routecraft.routers.rtr`` for the settings and their defaults). Prediction runs in numpy
from the stored weights; torch is imported only to train.

:class:`CandidateNetRouter` is the router around the network (fit, predict, cost from predicted tokens and prices,
cold start of new candidates); subclasses say what a candidate is made of and which settings schema they take.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel

from routecraft.data.schema import Candidate, RoutingData
from routecraft.routers.base import Prediction, TabularRouter
from routecraft.routers.token_budget import (
    InputTokenModel,
    LongOutcomes,
    PriceModel,
    ReasoningDecisions,
    embed_descriptions,
    long_outcomes,
    model_descriptions,
    query_chars,
    strategy_description,
)
from routecraft.routers.torch_utils import one_thread
from routecraft.routers.validation import check_features, check_fitted, query_ids, validate_config

HEADS = ("cls", "tok")


# ---- the network ----------------------------------------------------------------------------------------------
class Layout:
    """Where each input block sits in the first layer's input vector (the concatenation)."""

    def __init__(self, dq: int, dt: int, dl: int, use_text: bool, use_learn: bool, budget_dims: int) -> None:
        self.blocks: dict[str, tuple[int, int]] = {}
        off = 0
        for name, d, on in (("mt", dt, use_text), ("st", dt, use_text), ("q", dq, True), ("ml", dl, use_learn),
                            ("sl", dl, use_learn), ("b", budget_dims, budget_dims > 0)):
            if on and d > 0:
                self.blocks[name] = (off, off + d)
                off += d
        self.in_dim = off
        self.dl = dl if use_learn else 0


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def candidate_part(state: dict, layout: Layout, cm: np.ndarray, cs: np.ndarray, cb: np.ndarray, Tm: np.ndarray,
                   Ts: np.ndarray, head: str) -> np.ndarray:
    """(C, hidden): the first layer's pre-activation contributed by each candidate (its model's and unit's text and
    learnable embeddings, its budget features) — the same for every query, so a router computes it once."""
    p = state[head]
    blk = layout.blocks
    cand = np.zeros((len(cm), len(p["b1"])))
    if "mt" in blk:
        cand += (Tm @ p["W_mt"].T)[cm] + (Ts @ p["W_st"].T)[cs]
    if "ml" in blk:
        cand += (p["em"] @ p["W_ml"].T)[cm] + (p["es"] @ p["W_sl"].T)[cs]
    if "b" in blk:
        cand += cb @ p["W_b"].T
    return cand


def net_forward_np(state: dict, layout: Layout, X: np.ndarray, cm: np.ndarray, cs: np.ndarray, cb: np.ndarray,
                   Tm: np.ndarray, Ts: np.ndarray, head: str, token_target: str, chunk: int = 512,
                   cand: np.ndarray | None = None) -> np.ndarray:
    """(n, C) predictions of one head for every query × candidate (cm/cs/cb: each candidate's model index, unit
    index and budget features; ``cand``: their ``candidate_part``, when the caller has it)."""
    p = state[head]
    b1, W2, b2 = p["b1"], p["W2"], p["b2"]
    if cand is None:
        cand = candidate_part(state, layout, cm, cs, cb, Tm, Ts, head)
    out = np.empty((len(X), len(cm)))
    for s in range(0, len(X), chunk):
        A = X[s:s + chunk].astype(np.float64) @ p["W_q"].T + b1
        h = np.maximum(A[:, None, :] + cand[None, :, :], 0.0)
        o = h @ W2.T + b2  # (n, C, out)
        if head == "cls":
            z = o[..., 1] - o[..., 0]
            out[s:s + chunk] = 0.5 * (1.0 + np.tanh(0.5 * z))
        else:
            t = _softplus(o[..., 0])
            out[s:s + chunk] = np.expm1(t) if token_target == "log" else t
    return out


def _torch_forward(torch, P: dict, layout: Layout, xq, mi, si, bf, Tm, Ts, qinv=None):
    """Row-wise forward of one head. The first layer acts on the concatenation; it is computed block by block
    (query rows, then each model's and strategy's part once per step, gathered per row), which is the same function
    as the concatenated Linear but far cheaper for a few entities and many rows."""
    blk = layout.blocks
    h = xq @ P["W_q"].T + P["b1"]
    if qinv is not None:  # xq holds each distinct query of the batch once; qinv maps rows to them
        h = h[qinv]
    if "mt" in blk:
        h = h + (Tm @ P["W_mt"].T)[mi] + (Ts @ P["W_st"].T)[si]
    if "ml" in blk:
        h = h + (P["em"] @ P["W_ml"].T)[mi] + (P["es"] @ P["W_sl"].T)[si]
    if "b" in blk:
        h = h + bf @ P["W_b"].T
    return torch.relu(h) @ P["W2"].T + P["b2"]


def _head_loss(torch, head: str, out, score, tok, token_target: str):
    F = torch.nn.functional
    if head == "cls":
        target = torch.stack([1.0 - score, score], dim=1)
        return F.cross_entropy(out, target)
    pred = F.softplus(out[:, 0])
    y = torch.log1p(tok) if token_target == "log" else tok
    return F.mse_loss(pred, y)


def _init_head(torch, layout: Layout, hidden: int, n_out: int, n_models: int, n_units: int) -> dict:
    """PyTorch's default initialisation of Linear(in_dim → hidden) → Linear(hidden → n_out) (the first layer's
    weight is then split into its input blocks) and of nn.Embedding tables (N(0, 1))."""
    fc1 = torch.nn.Linear(layout.in_dim, hidden)
    fc2 = torch.nn.Linear(hidden, n_out)
    P = {"b1": fc1.bias, "W2": fc2.weight, "b2": fc2.bias}
    for name, (a, b) in layout.blocks.items():
        P["W_" + name] = fc1.weight[:, a:b]
    if layout.dl:
        P["em"] = torch.nn.Embedding(n_models, layout.dl).weight
        P["es"] = torch.nn.Embedding(n_units, layout.dl).weight
    return {k: torch.nn.Parameter(v.detach().clone().contiguous()) for k, v in P.items()}


def _adam(torch, params, lr: float, weight_decay: float):
    try:  # the fused kernel is several times faster on the CPU for these wide layers; same algorithm
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def train_net(layout: Layout, cfg: dict, X: np.ndarray, long: LongOutcomes, cm: np.ndarray, cs: np.ndarray,
              cb: np.ndarray, Tm: np.ndarray, Ts: np.ndarray, n_models: int, n_units: int) -> tuple[dict, dict]:
    """Train both heads as in RTR's code; returns (numpy state per head, training info)."""
    import torch

    rng = np.random.default_rng(cfg["seed"])
    n_q = len(long.query_ids)
    perm_q = rng.permutation(n_q)
    n_val = int(round(cfg["val_fraction"] * n_q)) if n_q >= 20 and cfg["val_fraction"] > 0 else 0
    is_val = np.zeros(n_q, dtype=bool)
    is_val[perm_q[:n_val]] = True
    tok_ok = np.isfinite(long.out_tokens)
    rows_va = np.flatnonzero(is_val[long.q])
    rows_tr = np.flatnonzero(~is_val[long.q])
    t = {
        "xq": torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
        "q": torch.from_numpy(long.q), "m": torch.from_numpy(cm[long.c]), "s": torch.from_numpy(cs[long.c]),
        "b": torch.from_numpy(np.ascontiguousarray(cb[long.c], dtype=np.float32)),
        "score": torch.from_numpy(long.score.astype(np.float32)),
        "tok": torch.from_numpy(np.nan_to_num(long.out_tokens, nan=0.0).astype(np.float32)),
        "tok_ok": torch.from_numpy(tok_ok),
        "Tm": torch.from_numpy(np.ascontiguousarray(Tm, dtype=np.float32)),
        "Ts": torch.from_numpy(np.ascontiguousarray(Ts, dtype=np.float32)),
    }
    info: dict[str, Any] = {"n_val_queries": int(n_val), "rows_train": int(len(rows_tr)), "epochs": 0}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["seed"])
            params = {h: _init_head(torch, layout, cfg["hidden"], 2 if h == "cls" else 1, n_models, n_units)
                      for h in HEADS}
            opts = {h: _adam(torch, list(params[h].values()), cfg["lr"], cfg["weight_decay"]) for h in HEADS}
            state = _loop(torch, params, opts, layout, cfg, t, rows_tr, rows_va, tok_ok, rng, info)
    finally:
        torch.set_num_threads(threads)
    return state, info


def _batch(torch, t, rows):
    """Inputs of a batch of rows: the distinct queries' features once (+ the row -> query map)."""
    uq, inv = torch.unique(t["q"][rows], return_inverse=True)
    return t["xq"][uq], t["m"][rows], t["s"][rows], t["b"][rows], inv


def _epoch_order(rows_tr: np.ndarray, q_of_row: np.ndarray, batching: str, rng) -> np.ndarray:
    if batching == "rows":  # the code's DataLoader(shuffle=True) over (query, model, strategy) rows
        return rows_tr[rng.permutation(len(rows_tr))]
    # whole queries: shuffle the queries, keep each query's rows together (shuffled within the query)
    qs = q_of_row[rows_tr]
    rank = rng.permutation(int(qs.max()) + 1)
    return rows_tr[np.lexsort((rng.random(len(rows_tr)), rank[qs]))]


def _loop(torch, params, opts, layout, cfg, t, rows_tr, rows_va, tok_ok, rng, info):
    active = {h: True for h in HEADS}
    best_val = {"cls": -np.inf, "tok": np.inf}
    best_state = {h: None for h in HEADS}
    bad = {h: 0 for h in HEADS}
    bs, tt = cfg["batch_size"], cfg["token_target"]
    q_of_row = t["q"].numpy()
    Tm, Ts = t["Tm"], t["Ts"]

    def run(P, rows, h):
        xq, mi, si, bf, inv = _batch(torch, t, rows)
        return _head_loss(torch, h, _torch_forward(torch, P, layout, xq, mi, si, bf, Tm, Ts, inv),
                          t["score"][rows], t["tok"][rows], tt)

    va = {"cls": torch.from_numpy(rows_va), "tok": torch.from_numpy(rows_va[tok_ok[rows_va]])}
    for epoch in range(cfg["epochs"]):
        order = _epoch_order(rows_tr, q_of_row, cfg["batching"], rng)
        for s in range(0, len(order), bs):
            rows = order[s:s + bs]
            for h in HEADS:
                if not active[h]:
                    continue
                r = rows if h == "cls" else rows[tok_ok[rows]]
                if len(r) == 0:
                    continue
                loss = run(params[h], torch.from_numpy(r), h)
                opts[h].zero_grad()
                loss.backward()
                opts[h].step()
        info["epochs"] = epoch + 1
        if len(rows_va) and (epoch + 1) % cfg["val_every"] == 0:
            with torch.no_grad():
                for h in HEADS:
                    rv = va[h]
                    if not active[h] or len(rv) == 0:
                        continue
                    if h == "cls" and cfg["cls_val_metric"] == "accuracy":
                        xq, mi, si, bf, inv = _batch(torch, t, rv)
                        out = _torch_forward(torch, params[h], layout, xq, mi, si, bf, Tm, Ts, inv)
                        p1 = torch.softmax(out, dim=1)[:, 1]
                        val = float(((p1 > 0.5) == (t["score"][rv] >= 0.5)).float().mean())
                        better = val > best_val[h]
                    else:
                        loss = float(run(params[h], rv, h))
                        # the classifier's best is the highest value (accuracy, or minus the loss)
                        val = -loss if h == "cls" else loss
                        better = val > best_val[h] if h == "cls" else val < best_val[h]
                    if better:
                        best_val[h], bad[h] = val, 0
                        best_state[h] = {k: v.detach().clone() for k, v in params[h].items()}
                        info[f"{h}_best_epoch"] = epoch + 1
                    else:
                        bad[h] += 1
                        if bad[h] >= cfg["patience"]:
                            active[h] = False
            if not any(active.values()):
                break
    info["val_accuracy" if cfg["cls_val_metric"] == "accuracy" else "val_neg_loss"] = float(best_val["cls"])
    info["val_token_mse"] = float(best_val["tok"])
    out = {}
    for h in HEADS:
        P = best_state[h] if best_state[h] is not None else {k: v.detach() for k, v in params[h].items()}
        out[h] = {k: v.detach().numpy().astype(np.float64).copy() for k, v in P.items()}
    return out


# ---- the router -----------------------------------------------------------------------------------------------
class CandidateNetRouter(ReasoningDecisions, TabularRouter):
    """A network over candidates described by (model, strategy unit[, budget]); RTR and the joint router."""

    budget_dims: int = 0
    #: the settings schema (a pydantic model with the fields read below); set by each subclass
    config_cls: ClassVar[type[BaseModel]]

    def __init__(self, **params: Any) -> None:
        super().__init__(**validate_config(self.config_cls, self.name, params))

    # -- what a candidate is made of (RTR: strategy unit = (strategy, budget); joint: strategy + budget features)
    def unit_key(self, c: Candidate) -> str:
        return c.strategy if c.budget is None else f"{c.strategy}@{c.budget}"

    def unit_text(self, c: Candidate) -> str:
        return strategy_description(c.strategy, c.budget, self.params["budget_template"])

    def budget_features(self, c: Candidate) -> np.ndarray:
        return np.zeros(0)

    def _prepare_budgets(self, cands: list[Candidate]) -> None:
        """Hook: learn the budget encoding from the training candidates (the joint router)."""

    # -- fitting
    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "CandidateNetRouter":
        with one_thread():
            return self.fit_network(data, X)

    def fit_network(self, data: RoutingData, X: np.ndarray | None) -> "CandidateNetRouter":
        """``fit`` without its thread limit (a subclass that fits several networks sets it once)."""
        long = long_outcomes(data, self.name)
        X = check_features(X, len(long.query_ids), self.name)
        p = self.params
        self.candidates = list(long.candidates)
        self.dim_ = X.shape[1]
        self._prepare_budgets(self.candidates)
        self._index_entities(self.candidates)
        self._embed_entities()
        use_text = p["features"] in ("combined", "text")
        use_learn = p["features"] in ("combined", "learnable")
        dl = p["emb_dim"] or self.dim_
        self.layout_ = Layout(self.dim_, self.Tm_.shape[1], dl, use_text, use_learn, self.budget_dims)
        self.prices_ = PriceModel(p["prices"], p["pool"]).fit(long, self.name)
        chars = query_chars(data.queries)
        self.input_tokens_ = InputTokenModel().fit(long, chars)
        if not np.isfinite(long.out_tokens).any():
            raise ValueError(f"{self.name}: no logged output_tokens in the training data (field 'output_tokens')")
        self.net_, self.train_info_ = train_net(self.layout_, p, X, long, self.cm_, self.cs_, self.cb_, self.Tm_,
                                                self.Ts_, len(self.models_), len(self.units_))
        self.__dict__.pop("_cand_part", None)
        return self

    def _index_entities(self, cands: list[Candidate]) -> None:
        self.models_: list[str] = []
        self.units_: list[str] = []
        self.unit_texts_: list[str] = []
        for c in cands:
            if c.model not in self.models_:
                self.models_.append(c.model)
            k = self.unit_key(c)
            if k not in self.units_:
                self.units_.append(k)
                self.unit_texts_.append(self.unit_text(c))
        self._candidate_arrays()

    def _candidate_arrays(self) -> None:
        self.__dict__.pop("_cand_part", None)  # candidates (or, after a fit, weights) changed
        self.cm_ = np.array([self.models_.index(c.model) for c in self.candidates], dtype=np.int64)
        self.cs_ = np.array([self.units_.index(self.unit_key(c)) for c in self.candidates], dtype=np.int64)
        self.cb_ = np.array([self.budget_features(c) for c in self.candidates], dtype=np.float64).reshape(
            len(self.candidates), self.budget_dims)

    def _embed_entities(self) -> None:
        p = self.params
        desc = model_descriptions(self.models_, p["pool"])
        self.model_texts_ = [desc[m] for m in self.models_]
        self.Tm_ = embed_descriptions(self.model_texts_, p["text_encoder"]).astype(np.float64)
        self.Ts_ = embed_descriptions(self.unit_texts_, p["text_encoder"]).astype(np.float64)

    # -- predicting
    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        check_fitted(self, "net_")
        n = len(query_ids(queries, self.name))
        X = check_features(X, n, self.name, self.dim_)
        score, tokens = self.heads(X, self.cm_, self.cs_, self.cb_)
        return Prediction(list(self.candidates), score, self.cost_of(queries, tokens), tokens)

    def heads(self, X, cm, cs, cb) -> tuple[np.ndarray, np.ndarray]:
        """Predicted score and output tokens of the candidates with parts ``cm``, ``cs``, ``cb`` on features ``X``."""
        lay, tt = self.layout_, self.params["token_target"]
        if cm is self.cm_ and cs is self.cs_ and cb is self.cb_:  # the router's own candidates: their part, once
            cache = self.__dict__.setdefault("_cand_part", {})
            for h in ("cls", "tok"):
                if h not in cache:
                    cache[h] = candidate_part(self.net_, lay, cm, cs, cb, self.Tm_, self.Ts_, h)
            parts = (cache["cls"], cache["tok"])
        else:
            parts = (None, None)
        score = net_forward_np(self.net_, lay, X, cm, cs, cb, self.Tm_, self.Ts_, "cls", tt, cand=parts[0])
        tok = net_forward_np(self.net_, lay, X, cm, cs, cb, self.Tm_, self.Ts_, "tok", tt, cand=parts[1])
        return score, tok

    def state(self) -> dict:
        st = super().state()
        st.pop("_cand_part", None)  # a cache of the weights: rebuilt on the first prediction
        return st

    def cost_of(self, queries: pd.DataFrame, tokens: np.ndarray, candidates: list[Candidate] | None = None,
                input_tokens: np.ndarray | None = None) -> np.ndarray:
        """Predicted cost of ``candidates`` (default: the router's) from predicted output ``tokens``."""
        cands = candidates or self.candidates
        if self.params["cost_unit"] == "tokens":
            return tokens / self.params["token_scale"]
        tin = self.input_tokens_.predict(query_chars(queries)) if input_tokens is None else input_tokens
        pin, pout = self.prices_.arrays(cands)
        return tin * pin[None, :] + tokens * pout[None, :]

    @property
    def input_dim(self) -> int:
        """Width of the first layer's input (the concatenated feature vector)."""
        check_fitted(self, "layout_")
        return self.layout_.in_dim

    # -- cold start
    def add_candidates(self, new_data: RoutingData, X: np.ndarray | None = None, steps: int | None = None,
                       lr: float | None = None) -> "CandidateNetRouter":
        """Add the candidates of ``new_data`` that the router does not know, learning from few labelled queries:
        new models'/strategies' learnable embeddings start at the description projection and only they are
        fine-tuned on the new candidates' cells (``steps`` full-batch Adam steps at ``lr``; defaults
        ``cold_steps``/``cold_lr``); every other weight is frozen. Prices and input-token lines of new models and
        candidates are fitted to ``new_data``. Returns self."""
        check_fitted(self, "net_")
        with one_thread():
            return self._add(new_data, X, steps, lr)

    def _add(self, new_data, X, steps, lr):
        known = {c.id for c in self.candidates}
        new = [c for c in new_data.candidates if c.id not in known]
        if not new:
            raise ValueError(f"{self.name}.add_candidates: new_data has no candidate the router does not know "
                             f"(known: {', '.join(sorted(known))})")
        long = long_outcomes(new_data, self.name, new)
        X = check_features(X, len(long.query_ids), self.name, self.dim_)
        p = self.params
        old_m, old_u = len(self.models_), len(self.units_)
        new_models = [m for m in dict.fromkeys(c.model for c in new) if m not in self.models_]
        new_units, new_unit_texts = [], []
        for c in new:
            k = self.unit_key(c)
            if k not in self.units_ and k not in new_units:
                new_units.append(k)
                new_unit_texts.append(self.unit_text(c))
        desc = model_descriptions(new_models, p["pool"])
        Tm_new = (embed_descriptions([desc[m] for m in new_models], p["text_encoder"]).astype(np.float64)
                  if new_models else np.zeros((0, self.Tm_.shape[1])))
        Ts_new = (embed_descriptions(new_unit_texts, p["text_encoder"]).astype(np.float64)
                  if new_units else np.zeros((0, self.Ts_.shape[1])))
        if self.layout_.dl:
            for h in HEADS:
                self.net_[h]["em"] = np.concatenate(
                    [self.net_[h]["em"], project(self.Tm_, self.net_[h]["em"], Tm_new, p["cold_alpha"])])
                self.net_[h]["es"] = np.concatenate(
                    [self.net_[h]["es"], project(self.Ts_, self.net_[h]["es"], Ts_new, p["cold_alpha"])])
        self.models_ += new_models
        self.model_texts_ += [desc[m] for m in new_models]
        self.units_ += new_units
        self.unit_texts_ += new_unit_texts
        self.Tm_ = np.concatenate([self.Tm_, Tm_new])
        self.Ts_ = np.concatenate([self.Ts_, Ts_new])
        n_old = len(self.candidates)
        self.candidates = self.candidates + new
        self._candidate_arrays()
        prices = PriceModel(p["prices"], p["pool"]).fit(long, self.name)
        self.prices_.add(prices)
        itm = InputTokenModel().fit(long, query_chars(new_data.queries))
        self.input_tokens_.extend(itm, range(len(new)))
        info = {"new_candidates": [c.id for c in new], "new_models": new_models, "new_units": new_units,
                "rows": int(len(long.q))}
        if self.layout_.dl and (new_models or new_units):
            info.update(self._finetune_new(long, X, n_old, old_m, old_u, steps if steps is not None
                                           else p["cold_steps"], lr or p["cold_lr"]))
            self.__dict__.pop("_cand_part", None)  # the new entities' embeddings moved
        self.cold_info_ = info
        return self

    def _finetune_new(self, long, X, n_old, old_m, old_u, steps, lr) -> dict:
        import torch

        lay, p = self.layout_, self.params
        cj = long.c + n_old  # rows index into the full candidate list
        tok_ok = np.isfinite(long.out_tokens)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        losses = {}
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(p["seed"])
                xq = torch.from_numpy(np.ascontiguousarray(X[long.q], dtype=np.float32))
                mi = torch.from_numpy(self.cm_[cj])
                si = torch.from_numpy(self.cs_[cj])
                bf = torch.from_numpy(np.ascontiguousarray(self.cb_[cj], dtype=np.float32))
                score = torch.from_numpy(long.score.astype(np.float32))
                tok = torch.from_numpy(np.nan_to_num(long.out_tokens).astype(np.float32))
                Tm = torch.from_numpy(self.Tm_.astype(np.float32))
                Ts = torch.from_numpy(self.Ts_.astype(np.float32))
                for h in HEADS:
                    rows = np.arange(len(cj)) if h == "cls" else np.flatnonzero(tok_ok)
                    if len(rows) == 0:
                        continue
                    r = torch.from_numpy(rows)
                    fixed = {k: torch.from_numpy(v.astype(np.float32)) for k, v in self.net_[h].items()}
                    em_new = torch.nn.Parameter(fixed["em"][old_m:].clone())
                    es_new = torch.nn.Parameter(fixed["es"][old_u:].clone())
                    opt = torch.optim.Adam([em_new, es_new], lr=lr)
                    for _ in range(steps):
                        P = dict(fixed)
                        P["em"] = torch.cat([fixed["em"][:old_m], em_new])
                        P["es"] = torch.cat([fixed["es"][:old_u], es_new])
                        out = _torch_forward(torch, P, lay, xq[r], mi[r], si[r], bf[r], Tm, Ts)
                        loss = _head_loss(torch, h, out, score[r], tok[r], p["token_target"])
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                    losses[f"{h}_loss"] = float(loss.detach())
                    self.net_[h]["em"][old_m:] = em_new.detach().numpy().astype(np.float64)
                    self.net_[h]["es"][old_u:] = es_new.detach().numpy().astype(np.float64)
        finally:
            torch.set_num_threads(threads)
        return losses


def project(T_old: np.ndarray, E_old: np.ndarray, T_new: np.ndarray, alpha: float) -> np.ndarray:
    """Initial learnable embeddings of new entities: ridge regression (with intercept) from the known entities'
    description embeddings to their learned embeddings, applied to the new descriptions."""
    if len(T_new) == 0:
        return np.zeros((0, E_old.shape[1]))
    mu_t, mu_e = T_old.mean(axis=0), E_old.mean(axis=0)
    A, B = T_old - mu_t, E_old - mu_e
    # dual form: W = Aᵀ (A Aᵀ + αI)⁻¹ B (few entities, wide embeddings)
    K = A @ A.T + alpha * np.eye(len(A))
    coef = np.linalg.solve(K, B)
    return mu_e[None, :] + (T_new - mu_t) @ A.T @ coef
