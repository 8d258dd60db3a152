"""Matrix-factorisation router in the style of RouteLLM's ``mf`` router (Ong et al. 2024, lm-sys/RouteLLM
``routers/matrix_factorization``).

RouteLLM: a learned embedding v_m per model (L2-normalised), a learned linear projection P of the query embedding
(no bias), and a linear read-out w (no bias): s(m, x) = w · (v̂_m ⊙ P x). It is trained on pairwise preferences,
σ(s(win, x) − s(lose, x)), with Gaussian noise on the query embedding; dim 128, Adam, lr 3e-4, weight decay 1e-5.

Here the same bilinear score is trained per candidate instead of per pair: the candidate's success probability
is σ(w · (v̂_c ⊙ P x) + b_c), trained with binary cross-entropy on every observed (query, candidate) outcome
(fractional scores allowed). A per-candidate bias b_c is added because, unlike a pairwise difference, an absolute
success probability needs a base rate per candidate (it starts at the logit of the candidate's mean training
score). The query features are standardised before the projection
(so ``input_noise`` is in units of a feature's standard deviation), and training stops early on a validation
carve-out. Predicted cost comes from ``CostModel``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from routecraft.data.schema import RoutingData
from routecraft.routers.base import Prediction, TabularRouter
from routecraft.routers.cost_model import CostModel, check_cost_model
from routecraft.routers.torch_utils import base_logits, one_thread, sigmoid, train_bce
from routecraft.routers.validation import check_features, check_fitted, check_positive, fit_features, query_ids


class MFRouter(TabularRouter):
    """Per-candidate matrix factorisation: σ(w · (normalize(v_c) ⊙ P x) + b_c) (see the module docstring)."""

    name = "mf"

    def __init__(self, dim: int = 128, epochs: int = 200, lr: float = 1e-3, weight_decay: float = 1e-5,
                 batch_size: int = 64, input_noise: float = 0.1, patience: int = 10, val_fraction: float = 0.1,
                 seed: int = 0, cost_model: str = "mean") -> None:
        check_positive(dim=dim, epochs=epochs, lr=lr, batch_size=batch_size, patience=patience)
        if input_noise < 0 or weight_decay < 0 or not 0 <= val_fraction < 1:
            raise ValueError("mf router: input_noise and weight_decay must be >= 0, val_fraction in [0, 1) "
                             f"(got {input_noise}, {weight_decay}, {val_fraction})")
        super().__init__(dim=int(dim), epochs=int(epochs), lr=float(lr), weight_decay=float(weight_decay),
                         batch_size=int(batch_size), input_noise=float(input_noise), patience=int(patience),
                         val_fraction=float(val_fraction), seed=int(seed), cost_model=check_cost_model(cost_model))

    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "MFRouter":
        with one_thread():
            return self._fit(data, X)

    def _fit(self, data: RoutingData, X: np.ndarray | None) -> "MFRouter":
        import torch

        m, Xs = fit_features(self, data, X)
        p = self.params
        n_cand, d, k = len(self.candidates), self.dim_, p["dim"]
        bias0 = torch.from_numpy(base_logits(m.score))

        class _MF(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.P = torch.nn.Linear(d, k, bias=False)
                self.V = torch.nn.Embedding(n_cand, k)
                self.w = torch.nn.Linear(k, 1, bias=False)
                self.b = torch.nn.Parameter(bias0.clone())

            def forward(self, x):
                v = torch.nn.functional.normalize(self.V.weight, p=2, dim=1)  # (C, k)
                return (self.P(x)) @ (v * self.w.weight).T + self.b  # (B, C)

        module, self.train_info_ = train_bce(_MF, Xs, m.score, epochs=p["epochs"], lr=p["lr"],
                                             weight_decay=p["weight_decay"], batch_size=p["batch_size"],
                                             patience=p["patience"], val_fraction=p["val_fraction"], seed=p["seed"],
                                             input_noise=p["input_noise"])
        with torch.no_grad():
            v = torch.nn.functional.normalize(module.V.weight, p=2, dim=1)
            self.proj_ = module.P.weight.numpy().T.copy()             # (d, k)
            self.cand_ = (v * module.w.weight).numpy().T.copy()       # (k, C)
            self.bias_ = module.b.numpy().copy()                      # (C,)
            self.cand_embedding_ = v.numpy().copy()                   # (C, k), for inspection
        self.cost_model_ = CostModel(p["cost_model"]).fit(X, m.cost)
        return self

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        check_fitted(self, "proj_")
        n = len(query_ids(queries, self.name))
        X = check_features(X, n, self.name, self.dim_)
        z = ((X - self.mu_) / self.sd_) @ self.proj_ @ self.cand_ + self.bias_
        return Prediction(list(self.candidates), sigmoid(z.astype(np.float64)), self.cost_model_.predict(X, n))
