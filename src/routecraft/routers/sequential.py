"""``sequential``: a learned observe-then-decide policy — consult, look at the answers, stop or consult more.

The candidates are consulted along a fixed sequence chosen on the training split (cheap ones in order of cost, the
strongest last; taken from the best plan of the ``cascade`` search). After each consultation the state is what has
been observed: the query's features (optional, a few principal components of its embedding), every consulted
candidate's answer signals (an answer was extracted, the output hit its cap, its output length, whether it agrees
with the current majority), the majority's vote share, the number of distinct answers and each pair's agreement.
Because the sequence is fixed, the state after step t does not depend on the policy, so the logs (where every
candidate's answer is known) give supervised targets for every step at once. At each step three regressors predict:

* ``now``: the score of returning the current majority answer;
* ``next``: the score after consulting the next candidate of the sequence;
* ``strong``: the score of jumping to the last (strongest) candidate and returning its answer.

The policy takes the best of stop (``now``), ``next − λ·cost(next)`` and ``strong − λ·cost(strong)`` (costs: the
candidates' mean cost on the training split), and repeats; a cost cap stops consultations that would exceed it.

Deciding up front is the zero-step special case, and it is always on the table: for each trade-off the router
compares, on the training split, the policy's utility (replayed with cross-fitted predictions, so it is not judged
on the data its regressors memorised), the best fixed cascade plan's and the best single candidate's, and uses the
best. On data where observing does not pay, it therefore equals the best up-front choice.

Model class: ``model="gbm"`` (scikit-learn's HistGradientBoostingRegressor, the default), ``"linear"`` (ridge) or
``"mlp"``. The default was chosen by measurement (docs/RESULTS.md, sequential routing): on ZeroEval GSM8K
gradient boosting gave the best AIQ; ridge was close behind and is the fastest.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from routecraft.data.schema import RoutingData
from routecraft.routers.base import Decision
from routecraft.routers.cascade import Cascade, ObservingRouter
from routecraft.routers.observations import Observations, Replay, score_of, votes

STOP, NEXT, STRONG = 0, 1, 2


def choose_sequence(cas: Cascade, obs: Observations, max_len: int = 4, cost_share: float = 0.35) -> list[int]:
    """Cheap candidates (by cost) then the strongest: the members of the most accurate cascade plan that ends on the
    strongest candidate and costs at most ``cost_share`` of it on the training split (else the best plan)."""
    s, c = obs.score.mean(0), obs.cost.mean(0)
    strong = int(np.lexsort((c, -s))[0])
    best, best_s = None, -np.inf
    for i, p in enumerate(cas.plans):
        if not p.stages or p.final != strong or cas.train_cost[i] > cost_share * c[strong]:
            continue
        if cas.train_score[i] > best_s + 1e-12:
            best, best_s = p, cas.train_score[i]
    members: list[int] = []
    if best is not None:
        for st in best.stages:
            members += [m for m in st.members if m not in members]
    cheap = sorted((j for j in range(len(s)) if c[j] < c[strong] and j not in members), key=lambda j: (-s[j], c[j]))
    while len(members) < max_len - 1 and cheap:
        members.append(cheap.pop(0))
    members = sorted(members[: max_len - 1], key=lambda j: (c[j], j))
    return members + [strong]


def _model(kind: str, seed: int):
    if kind == "gbm":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=120, max_depth=3, learning_rate=0.08, min_samples_leaf=20,
                                             random_state=seed)
    if kind == "linear":
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1.0)
    if kind == "mlp":
        from sklearn.neural_network import MLPRegressor

        return MLPRegressor(hidden_layer_sizes=(32,), alpha=1e-3, max_iter=400, random_state=seed)
    raise ValueError(f"sequential: model must be 'gbm', 'linear' or 'mlp', got {kind!r}")


class SequentialPolicy:
    """The learned policy over a fixed consultation sequence (see the module docstring)."""

    def __init__(self, model: str = "gbm", max_len: int = 4, n_components: int = 8, folds: int = 3,
                 seed: int = 0) -> None:
        _model(model, seed)  # an unknown model class fails here, before any work
        self.model, self.max_len, self.n_components, self.folds, self.seed = model, max_len, n_components, folds, seed
        self.seq: list[int] = []
        self.step_cost = np.zeros(0)
        self.models: list[dict[str, Any]] = []
        self.pca_mean: np.ndarray | None = None
        self.pca_axes: np.ndarray | None = None
        self.train_preds: list[np.ndarray] = []   # cross-fitted (n_train, 3) predictions per step
        self.train_obs: Observations | None = None
        self.logprobs = False  # the training logs had token log-probabilities: the state reads them

    # ---- states --------------------------------------------------------------------------------------------------
    def _query_part(self, X: np.ndarray | None, n: int) -> np.ndarray:
        if X is None or self.pca_axes is None:
            return np.zeros((n, 0))
        return (np.asarray(X, dtype=float) - self.pca_mean) @ self.pca_axes.T

    def states(self, obs: Observations, X: np.ndarray | None) -> list[np.ndarray]:
        """The state features after steps 1..K-1 (one matrix per step)."""
        n = obs.n
        q = self._query_part(X, n)
        keys = obs.keys[:, self.seq]
        answered = keys >= 0
        trunc = obs.truncated[:, self.seq].astype(float)
        toks = np.log1p(np.nan_to_num(obs.out_tokens[:, self.seq], nan=0.0))
        if self.logprobs:  # mean and min token log-probability of each consulted answer (0 and a flag where unknown)
            lpm = obs.logprob_mean[:, self.seq] if obs.logprob_mean is not None else np.full(keys.shape, np.nan)
            lpn = obs.logprob_min[:, self.seq] if obs.logprob_min is not None else np.full(keys.shape, np.nan)
            has_lp = np.isfinite(lpm)
            lpm, lpn = np.nan_to_num(lpm, nan=0.0), np.nan_to_num(lpn, nan=0.0)
        out = []
        for t in range(1, len(self.seq)):
            mask = np.zeros_like(keys, dtype=bool)
            mask[:, :t] = True
            top, cnt, distinct = votes(keys, mask)
            cols = [cnt / t, cnt, distinct, answered[:, :t].sum(1)]
            for i in range(t):
                cols += [answered[:, i], trunc[:, i], toks[:, i], (keys[:, i] == top) & (top >= 0)]
                if self.logprobs:
                    cols += [lpm[:, i], lpn[:, i], has_lp[:, i]]
            for i in range(t):
                for j in range(i + 1, t):
                    cols.append((keys[:, i] == keys[:, j]) & answered[:, i])
            out.append(np.column_stack([np.asarray(c, dtype=float) for c in cols] + [q]))
        return out

    def targets(self, obs: Observations) -> list[np.ndarray]:
        """(n, 3) per step: score of stopping now, of consulting the next candidate, of jumping to the strongest."""
        n, K = obs.n, len(self.seq)
        keys = obs.keys[:, self.seq]
        strong = obs.score[:, self.seq[-1]]
        sub = obs.columns(self.seq)
        now = []
        for t in range(1, K + 1):
            mask = np.zeros_like(keys, dtype=bool)
            mask[:, :t] = True
            top, _, _ = votes(keys, mask)
            now.append(score_of(sub, top, mask, np.full(n, t - 1)))
        out = []
        for t in range(1, K):
            nxt = strong if t + 1 == K else now[t]
            out.append(np.column_stack([now[t - 1], nxt, strong]))
        return out

    # ---- fit -----------------------------------------------------------------------------------------------------
    def fit(self, obs: Observations, X: np.ndarray | None, cascade: Cascade) -> "SequentialPolicy":
        from threadpoolctl import threadpool_limits

        # one thread: gradient boosting's OpenMP threads on a shared CPU cost far more than they gain
        # (a 4 s fit took minutes beside other work)
        with threadpool_limits(1):
            return self._fit(obs, X, cascade)

    def _fit(self, obs: Observations, X: np.ndarray | None, cascade: Cascade) -> "SequentialPolicy":
        self.seq = choose_sequence(cascade, obs, self.max_len)
        self.step_cost = obs.cost[:, self.seq].mean(0)
        self.logprobs = obs.has_logprobs and bool(np.isfinite(obs.logprob_mean[:, self.seq]).any())
        if X is not None and self.n_components > 0:
            Xf = np.asarray(X, dtype=float)
            self.pca_mean = Xf.mean(0)
            _, _, vt = np.linalg.svd(Xf - self.pca_mean, full_matrices=False)
            self.pca_axes = vt[: self.n_components]
        S, Y = self.states(obs, X), self.targets(obs)
        n = obs.n
        rng = np.random.default_rng(self.seed)
        fold = rng.permutation(n) % max(2, self.folds)
        self.models, self.train_preds = [], []
        for st, y in zip(S, Y):
            step = [self._fit_one(st, y[:, k]) for k in range(3)]
            self.models.append({"now": step[0], "next": step[1], "strong": step[2]})
            cross = np.zeros_like(y)
            for f in range(max(2, self.folds)):
                tr, te = fold != f, fold == f
                for k in range(3):
                    cross[te, k] = self._fit_one(st[tr], y[tr, k]).predict(st[te])
            self.train_preds.append(np.clip(cross, 0.0, 1.0))
        self.train_obs = obs
        return self

    def _fit_one(self, x: np.ndarray, y: np.ndarray):
        if np.ptp(y) == 0:
            return _Const(float(y[0]) if len(y) else 0.0)
        return _model(self.model, self.seed).fit(x, y)

    def predict_steps(self, obs: Observations, X: np.ndarray | None) -> list[np.ndarray]:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self._predict_steps(obs, X)

    def _predict_steps(self, obs: Observations, X: np.ndarray | None) -> list[np.ndarray]:
        return [np.clip(np.column_stack([m["now"].predict(st), m["next"].predict(st), m["strong"].predict(st)]),
                        0.0, 1.0) for m, st in zip(self.models, self.states(obs, X))]

    # ---- run -----------------------------------------------------------------------------------------------------
    def actions(self, preds: list[np.ndarray], lam: float, max_cost: float | None = None,
                n: int | None = None) -> np.ndarray:
        """(n,) how far each query goes: the number of sequence candidates consulted before stopping (1..K-1), or
        ``K`` = every one in order, or ``-t`` = after t candidates, jump to the strongest. A sequence of one
        candidate has no decision points (``preds`` empty): every one of the ``n`` queries consults it."""
        K = len(self.seq)
        n = preds[0].shape[0] if preds else (n or 0)
        spent = np.full(n, self.step_cost[0])
        done = np.zeros(n, dtype=int)
        for t in range(1, K):
            p = preds[t - 1]
            u = np.column_stack([p[:, 0], p[:, 1] - lam * self.step_cost[t], p[:, 2] - lam * self.step_cost[-1]])
            if max_cost is not None:
                u[:, 1] = np.where(spent + self.step_cost[t] > max_cost, -np.inf, u[:, 1])
                u[:, 2] = np.where(spent + self.step_cost[-1] > max_cost, -np.inf, u[:, 2])
            a = np.argmax(u, axis=1)
            open_ = done == 0
            done[open_ & (a == STOP)] = t
            done[open_ & (a == STRONG)] = -t
            spent += np.where(open_ & (a == NEXT), self.step_cost[t], 0)
        done[done == 0] = K
        return done

    def replay(self, obs: Observations, preds: list[np.ndarray], lam: float,
               max_cost: float | None = None) -> Replay:
        act = self.actions(preds, lam, max_cost, n=obs.n)
        return self.replay_actions(obs, act)

    def replay_actions(self, obs: Observations, act: np.ndarray) -> Replay:
        n, K = obs.n, len(self.seq)
        sub = obs.columns(self.seq)
        keys = sub.keys
        steps = np.abs(act)
        mask = np.arange(K)[None, :] < steps[:, None]
        jump = act < 0
        mask[jump, K - 1] = True
        top, _, _ = votes(keys, np.where(jump[:, None], False, mask))
        s = score_of(sub, top, mask & ~jump[:, None], np.zeros(n, dtype=int))
        reached_strong = (jump | (act == K)) & (K > 1)  # a sequence of one: that one answered, nothing escalated
        s = np.where(reached_strong, sub.score[:, K - 1], s)
        cost = np.where(mask, sub.cost, 0).sum(1)
        calls = mask.sum(1).astype(float)
        lat_cells = np.where(mask, sub.latency, 0)
        latency = lat_cells.sum(1)  # one consultation per stage: each stage's slowest call is that call
        return Replay(s, cost, calls, reached_strong, latency)

    def online_action(self, t: int, observed: list[dict], features: np.ndarray | None, lam: float,
                      max_cost: float | None = None) -> str:
        """After the first ``t`` candidates of the sequence answered (``observed``: per consultation its answer's
        vote ``key``, ``truncated``, ``out_tokens`` and real ``cost``): "stop", "next" or "strong"."""
        C = max(self.seq) + 1
        keys = np.full((1, C), -1, dtype=np.int64)
        trunc = np.zeros((1, C), dtype=bool)
        toks = np.full((1, C), np.nan)
        lpm, lpn = np.full((1, C), np.nan), np.full((1, C), np.nan)
        codes: dict[str, int] = {}
        for i, o in enumerate(observed[:t]):
            j = self.seq[i]
            if o.get("key") is not None:
                keys[0, j] = codes.setdefault(o["key"], len(codes))
            trunc[0, j] = bool(o.get("truncated"))
            toks[0, j] = o.get("out_tokens", np.nan)
            lpm[0, j] = np.nan if o.get("logprob_mean") is None else o["logprob_mean"]
            lpn[0, j] = np.nan if o.get("logprob_min") is None else o["logprob_min"]
        zero = np.zeros((1, C))
        obs = Observations([""], [None] * C, keys, zero, zero, np.full((1, C), np.nan), toks, trunc,
                           logprob_mean=lpm, logprob_min=lpn)
        X = None if features is None or self.pca_axes is None else np.asarray(features, dtype=float).reshape(1, -1)
        st = self.states(obs, X)[t - 1]
        m = self.models[t - 1]
        p = [float(np.clip(m[k].predict(st)[0], 0.0, 1.0)) for k in ("now", "next", "strong")]
        u = [p[0], p[1] - lam * self.step_cost[t], p[2] - lam * self.step_cost[-1]]
        if max_cost is not None:
            spent = sum(float(o.get("cost") or 0.0) for o in observed[:t])
            if spent + self.step_cost[t] > max_cost:
                u[1] = -np.inf
            if spent + self.step_cost[-1] > max_cost:
                u[2] = -np.inf
        return ("stop", "next", "strong")[int(np.argmax(u))]

    def train_utility(self, lam: float, max_cost: float | None = None) -> tuple[float, float]:
        r = self.replay(self.train_obs, self.train_preds, lam, max_cost)
        return float(r.score.mean()), float(r.cost.mean())

    # ---- artifacts -----------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        # the training answers' texts are not needed to replay the training split (codes are): not saved
        obs = None if self.train_obs is None else dataclasses.replace(self.train_obs, answer_text=[])
        return {"seq": self.seq, "step_cost": self.step_cost, "models": self.models, "pca_mean": self.pca_mean,
                "pca_axes": self.pca_axes, "train_preds": self.train_preds, "train_obs": obs,
                "logprobs": self.logprobs,
                "params": {"model": self.model, "max_len": self.max_len, "n_components": self.n_components,
                           "folds": self.folds, "seed": self.seed}}


class _Const:
    def __init__(self, v: float) -> None:
        self.v = v

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.v)



# ---- the router ----------------------------------------------------------------------------------------------------
class SequentialRouter(ObservingRouter):
    """``sequential``: the learned policy, the fixed cascade plans and the single candidates, whichever has the best
    training utility for the trade-off asked (see the module docstring)."""

    name = "sequential"
    uses_features = True

    def __init__(self, model: str = "gbm", max_len: int = 4, n_components: int = 8, folds: int = 3, seed: int = 0,
                 pool: int = 8, finals: int = 3, use_features: bool = True, upfront: str | None = "mf") -> None:
        super().__init__(model=model, max_len=max_len, n_components=n_components, folds=folds, seed=seed, pool=pool,
                         finals=finals, use_features=use_features, upfront=upfront)
        _model(model, seed)
        self.cascade: Cascade | None = None
        self.policy: SequentialPolicy | None = None
        self.upfront = None          # a learned up-front router (query features only): the zero-step decision
        self.upfront_train: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "SequentialRouter":
        self._modes = {}
        p = self.params
        obs = Observations.from_data(data, router=self.name)
        self.candidates = list(obs.candidates)
        self.cascade = Cascade(pool=p["pool"], finals=p["finals"]).fit(obs)
        Xq = X if p["use_features"] else None
        self.policy = SequentialPolicy(p["model"], p["max_len"], p["n_components"], p["folds"], p["seed"]).fit(
            obs, Xq, self.cascade)
        if p.get("upfront") not in (None, "", "none", False) and X is not None:
            self._fit_upfront(data, np.asarray(X), obs)
        return self

    def _fit_upfront(self, data: RoutingData, X: np.ndarray, obs: Observations) -> None:
        """The learned up-front router on all training queries, and its cross-fitted predictions on them (so its
        training utility is judged on queries it did not see, like the policy's)."""
        from routecraft.routers.registry import make_router

        name, k = self.params["upfront"], max(2, self.params["folds"])
        qids = data.queries["query_id"].to_numpy()
        fold = np.random.default_rng(self.params["seed"]).permutation(len(qids)) % k
        pos = {q: i for i, q in enumerate(obs.query_ids)}
        rows = np.array([pos[q] for q in qids])
        ids = [c.id for c in self.candidates]
        score, cost = np.zeros_like(obs.score), np.zeros_like(obs.cost)
        for f in range(k):
            tr, te = fold != f, fold == f
            part = make_router(name).fit(data.subset(qids[tr]), X[tr])
            pr = part.predict(data.queries.iloc[np.flatnonzero(te)], X[te])
            cols = [ids.index(c.id) for c in pr.candidates]
            score[np.ix_(rows[te], cols)], cost[np.ix_(rows[te], cols)] = pr.score, pr.cost
        self.upfront = make_router(name).fit(data, X)
        self.upfront_train = (score, cost, obs.score, obs.cost)

    def _upfront_pick(self, score: np.ndarray, cost: np.ndarray, lam: float, max_cost: float | None) -> np.ndarray:
        from routecraft.routers.base import Prediction, choose

        return choose(Prediction(list(self.candidates), score, cost), lam=lam, max_cost=max_cost)

    def _upfront_utility(self, lam: float, max_cost: float | None) -> tuple[float, float] | None:
        if self.upfront_train is None:
            return None
        ps, pc, ts, tc = self.upfront_train
        i = self._upfront_pick(ps, pc, lam, max_cost)
        r = np.arange(len(i))
        return float(ts[r, i].mean()), float(tc[r, i].mean())

    def mode(self, lam: float = 0.0, max_cost: float | None = None) -> str:
        """"policy", "cascade" (fixed plans, including every single candidate up front) or "upfront" (the learned
        up-front router): the best on the training split for this trade-off (the policy and the up-front router
        judged on cross-fitted predictions). Ties go to the earlier of cascade, upfront, policy. It depends only on
        the trade-off, so it is worked out once per trade-off (the gateway asks for every request)."""
        return self._choice(lam, max_cost)[0]

    def _choice(self, lam: float, max_cost: float | None) -> tuple[str, float, float]:
        """(mode, its training score, its training cost), remembered per trade-off (at most 256: requests may send
        any λ)."""
        cache = self.__dict__.setdefault("_modes", {})
        key = (float(lam), max_cost)
        if key not in cache:
            if len(cache) >= 256:
                cache.clear()
            cache[key] = self._mode(lam, max_cost)
        return cache[key]

    def _mode(self, lam: float, max_cost: float | None) -> tuple[str, float, float]:
        i = self.cascade.choose(lam, max_cost)
        options = [("cascade", float(self.cascade.train_score[i]), float(self.cascade.train_cost[i])),
                   ("upfront", *(self._upfront_utility(lam, max_cost) or (-np.inf, np.inf))),
                   ("policy", *self.policy.train_utility(lam, max_cost))]
        if max_cost is not None:
            fits = [o for o in options if o[2] <= max_cost]
            if fits:
                return max(fits, key=lambda o: (o[1], -o[2]))
            return min(options, key=lambda o: o[2])
        best = options[0]
        for o in options[1:]:
            if o[1] - lam * o[2] > best[1] - lam * best[2] + 1e-12:
                best = o
        return best

    def replay(self, data: RoutingData, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> Replay:
        key = (tuple(data.queries["query_id"]), id(X))
        if getattr(self, "_replay_cache", (None,))[0] != key:  # one observation table and prediction per data set
            obs = self.observations(data)
            Xq = X if self.params["use_features"] else None
            self._replay_cache = (key, obs, self.policy.predict_steps(obs, Xq), X)  # X kept: its id stays unique
        _, obs, preds, _ = self._replay_cache
        mode = self.mode(lam, max_cost)
        if mode == "cascade":
            return self.cascade.replay(obs, lam, max_cost)
        if mode == "upfront":
            return self._replay_upfront(data, X, obs, lam, max_cost)
        return self.policy.replay(obs, preds, lam, max_cost)

    def _replay_upfront(self, data: RoutingData, X, obs: Observations, lam: float, max_cost) -> Replay:
        key = tuple(data.queries["query_id"])
        if getattr(self, "_up_cache", (None,))[0] != key:
            pr = self.upfront.predict(data.queries, X)
            ids = [c.id for c in self.candidates]
            cols = [ids.index(c.id) for c in pr.candidates]
            sc, co = np.full(obs.score.shape, -np.inf), np.full(obs.cost.shape, np.inf)
            pos = {q: i for i, q in enumerate(obs.query_ids)}
            rows = np.array([pos[q] for q in data.queries["query_id"]])
            sc[np.ix_(rows, cols)], co[np.ix_(rows, cols)] = pr.score, pr.cost
            self._up_cache = (key, sc, co)
        _, sc, co = self._up_cache
        i = self._upfront_pick(sc, co, lam, max_cost)
        r = np.arange(obs.n)
        return Replay(obs.score[r, i], obs.cost[r, i], np.ones(obs.n), np.zeros(obs.n, dtype=bool),
                      obs.latency[r, i])

    def decide(self, queries: pd.DataFrame, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> list[Decision]:
        mode = self.mode(lam, max_cost)
        if mode == "upfront":
            return self.upfront.decide(queries, X, lam=lam, max_cost=max_cost)
        if mode == "cascade":
            return [self.cascade.decision(self.candidates, lam, max_cost) for _ in range(len(queries))]
        first = self.candidates[self.policy.seq[0]]
        plan = {"kind": "sequential", "sequence": [self.candidates[j].id for j in self.policy.seq],
                "lam": lam, "max_cost": max_cost}
        _, s, c = self._choice(lam, max_cost)
        return [Decision(first, s, c, [], plan) for _ in range(len(queries))]

    def upfront_decision(self, text: str, features: np.ndarray | None = None, *, lam: float = 0.0,
                         max_cost: float | None = None, **context: Any) -> Decision:
        """Without consulting: the learned up-front router's decision (needs the query's features), else the best
        single candidate of the cascade search."""
        if self.upfront is not None and features is not None:
            return self.upfront.decide_one(text, features, lam=lam, max_cost=max_cost, **context)
        return self.cascade.upfront_decision(self.candidates, lam, max_cost)

    def state(self) -> dict:
        up = None
        if self.upfront is not None:
            up = {"name": self.upfront.name, "params": self.upfront.params, "state": self.upfront.state(),
                  "train": self.upfront_train}
        return {"cascade": self.cascade.state(), "policy": self.policy.state(), "upfront": up}

    def set_state(self, state: dict) -> None:
        self._modes = {}
        self.cascade = Cascade(pool=self.params["pool"], finals=self.params["finals"])
        self.cascade.set_state(state["cascade"])
        self.cascade.candidates = list(self.candidates)
        st = state["policy"]
        self.policy = SequentialPolicy(**st["params"])
        for k in ("seq", "step_cost", "models", "pca_mean", "pca_axes", "train_preds", "train_obs"):
            setattr(self.policy, k, st[k])
        self.policy.logprobs = bool(st.get("logprobs", False))
        up = state.get("upfront")
        if up is not None:
            from routecraft.routers.registry import make_router

            self.upfront = make_router(up["name"], **up["params"])
            self.upfront.candidates, self.upfront.encoder = list(self.candidates), self.encoder
            self.upfront.set_state(up["state"])
            self.upfront_train = up["train"]
