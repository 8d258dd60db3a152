"""MLP router: one small network with one output per candidate, the candidate's success probability for the query
(trained with binary cross-entropy on the logged scores, which may be fractional). Predicted cost comes from a
separate per-candidate cost model (mean training cost by default).

Training runs in torch on the CPU with early stopping on an internal validation carve-out of the training
queries; prediction runs in numpy from the stored weights, so a saved router loads and predicts without torch.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from routecraft.data.schema import OutcomeMatrices, RoutingData
from routecraft.routers.base import Prediction, Router
from routecraft.routers.baselines import (
    CostModel, _fitted, _query_ids, check_cost_model, check_features, one_thread, training_matrices)


def parse_hidden(hidden: int | str | Sequence[int]) -> list[int]:
    """``128``, ``"128"``, ``"256-128"``, ``"256,128"`` or ``[256, 128]`` -> ``[256, 128]``; ``0``, ``"0"``, ``"none"``
    or ``[]`` -> ``[]`` (no hidden layer: a multi-output logistic regression)."""
    if isinstance(hidden, str) and hidden.strip().lower() in ("0", "none", ""):
        return []
    if isinstance(hidden, (int, np.integer)):
        out = [int(hidden)] if hidden != 0 else []
    elif isinstance(hidden, str):
        parts = [p for p in hidden.replace(",", "-").replace(" ", "").split("-") if p]
        try:
            out = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"hidden must be layer widths like '256-128', got {hidden!r}") from None
    else:
        out = [int(h) for h in hidden]
    if any(h < 1 for h in out):
        raise ValueError(f"hidden layer widths must be >= 1, got {hidden!r}")
    return out


def check_positive(**kw: float) -> None:
    for k, v in kw.items():
        if not v > 0:
            raise ValueError(f"{k} must be > 0, got {v!r}")


def standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    return mu.astype(np.float32), np.maximum(sd, 1e-6).astype(np.float32)


def fit_features(router: Router, data: RoutingData, X: np.ndarray | None) -> tuple[OutcomeMatrices, np.ndarray]:
    """The common start of a feature router's fit: the outcome matrices and the standardised features.

    Sets ``router.candidates``, ``dim_`` and the standardiser ``mu_`` / ``sd_`` that ``predict`` applies again.
    """
    m = training_matrices(data, router.name)
    X = check_features(X, len(m.query_ids), router.name)
    router.candidates = list(m.candidates)
    router.dim_ = X.shape[1]
    router.mu_, router.sd_ = standardiser(X)
    return m, (X - router.mu_) / router.sd_


def train_bce(make_module: Callable[[], "object"], X: np.ndarray, Y: np.ndarray, *, epochs: int, lr: float,
              weight_decay: float, batch_size: int, patience: int, val_fraction: float, seed: int,
              input_noise: float = 0.0) -> tuple["object", dict]:
    """Train ``make_module()`` (maps (B, d) float32 to (B, C) logits) with BCE-with-logits against ``Y`` in [0, 1].

    Adam; mini-batches of queries; early stopping on the validation loss of a seeded ``val_fraction`` carve-out
    (none when fewer than 20 queries), restoring the best epoch's weights. All randomness (initialisation,
    dropout, shuffling, input noise) comes from ``seed``; torch's global RNG state is left as it was.
    """
    import torch

    n = len(X)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = int(round(val_fraction * n)) if n >= 20 and val_fraction > 0 else 0
    val, tr = perm[:n_val], perm[n_val:]
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    Yt = torch.from_numpy(np.ascontiguousarray(Y, dtype=np.float32))
    info = {"epochs": 0, "best_epoch": 0, "val_loss": float("nan"), "n_val": n_val}
    threads = torch.get_num_threads()
    # these networks are tiny: one thread is many times faster than several fighting over small matmuls
    torch.set_num_threads(1)
    try:
        module = _train_loop(torch, make_module, Xt, Yt, tr, val, rng, info, epochs=epochs, lr=lr,
                             weight_decay=weight_decay, batch_size=batch_size, patience=patience, seed=seed,
                             input_noise=input_noise)
    finally:
        torch.set_num_threads(threads)
    return module, info


def _train_loop(torch, make_module, Xt, Yt, tr, val, rng, info, *, epochs, lr, weight_decay, batch_size, patience,
                seed, input_noise):
    n_val = len(val)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = make_module()
        opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        best, best_state, bad = float("inf"), None, 0
        for epoch in range(epochs):
            module.train()
            order = torch.from_numpy(tr[rng.permutation(len(tr))])
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                xb = Xt[idx]
                if input_noise > 0:
                    xb = xb + input_noise * torch.randn_like(xb)
                loss = loss_fn(module(xb), Yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            info["epochs"] = epoch + 1
            if n_val:
                module.eval()
                with torch.no_grad():
                    vl = float(loss_fn(module(Xt[val]), Yt[val]))
                if vl < best - 1e-5:
                    best, bad = vl, 0
                    best_state = copy.deepcopy(module.state_dict())
                    info.update(best_epoch=epoch + 1, val_loss=vl)
                else:
                    bad += 1
                    if bad >= patience:
                        break
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
    return module


def base_logits(Y: np.ndarray) -> np.ndarray:
    """Logit of each candidate's mean training score (clipped to [1e-3, 1 - 1e-3]): the output biases start at the
    base rates, so training spends its steps on what depends on the query."""
    p = np.clip(Y.mean(axis=0), 1e-3, 1 - 1e-3)
    return np.log(p / (1 - p)).astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class MLPRouter(Router):
    """Feed-forward network (ReLU, dropout) from the standardised query features to one logit per candidate;
    predicted score = sigmoid(logit), the candidate's success probability (output biases start at the logit of the
    candidate's mean training score). Trained with BCE on the scores, Adam,
    early stopping on 10% of the training queries (``val_fraction``). Predicted cost: ``cost_model`` ("mean" |
    "knn" | "ridge", see ``CostModel``)."""

    name = "mlp"

    def __init__(self, hidden: int | str | Sequence[int] = (128,), epochs: int = 200, lr: float = 1e-3,
                 weight_decay: float = 1e-4, dropout: float = 0.1, batch_size: int = 128, patience: int = 10,
                 val_fraction: float = 0.1, seed: int = 0, cost_model: str = "mean") -> None:
        check_positive(epochs=epochs, lr=lr, batch_size=batch_size, patience=patience)
        if not 0 <= dropout < 1 or not 0 <= val_fraction < 1 or weight_decay < 0:
            raise ValueError("mlp router: dropout and val_fraction must be in [0, 1), weight_decay >= 0 "
                             f"(got {dropout}, {val_fraction}, {weight_decay})")
        super().__init__(hidden=parse_hidden(hidden), epochs=int(epochs), lr=float(lr),
                         weight_decay=float(weight_decay), dropout=float(dropout), batch_size=int(batch_size),
                         patience=int(patience), val_fraction=float(val_fraction), seed=int(seed),
                         cost_model=check_cost_model(cost_model))

    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "MLPRouter":
        with one_thread():
            return self._fit(data, X)

    def _fit(self, data: RoutingData, X: np.ndarray | None) -> "MLPRouter":
        import torch

        m, Xs = fit_features(self, data, X)
        p = self.params
        widths = [self.dim_] + list(p["hidden"])
        n_out = len(self.candidates)
        bias0 = base_logits(m.score)

        def make():
            layers: list = []
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
                if p["dropout"] > 0:
                    layers.append(torch.nn.Dropout(p["dropout"]))
            out = torch.nn.Linear(widths[-1], n_out)
            with torch.no_grad():
                out.bias.copy_(torch.from_numpy(bias0))
            layers.append(out)
            return torch.nn.Sequential(*layers)

        module, self.train_info_ = train_bce(make, Xs, m.score, epochs=p["epochs"], lr=p["lr"],
                                             weight_decay=p["weight_decay"], batch_size=p["batch_size"],
                                             patience=p["patience"], val_fraction=p["val_fraction"], seed=p["seed"])
        self.layers_ = [(mod.weight.detach().numpy().T.copy(), mod.bias.detach().numpy().copy())
                        for mod in module if isinstance(mod, torch.nn.Linear)]
        self.cost_model_ = CostModel(p["cost_model"]).fit(X, m.cost)
        return self

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        _fitted(self, "layers_")
        n = len(_query_ids(queries, self.name))
        X = check_features(X, n, self.name, self.dim_)
        h = (X - self.mu_) / self.sd_
        for i, (W, b) in enumerate(self.layers_):
            h = h @ W + b
            if i < len(self.layers_) - 1:
                h = np.maximum(h, 0.0)
        score = _sigmoid(h.astype(np.float64))
        return Prediction(list(self.candidates), score, self.cost_model_.predict(X, n))
