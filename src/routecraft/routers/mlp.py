"""MLP router: one small network with one output per candidate, the candidate's success probability for the query
(trained with binary cross-entropy on the logged scores, which may be fractional). Predicted cost comes from a
separate per-candidate cost model (mean training cost by default).

Training runs in torch on the CPU with early stopping on an internal validation carve-out of the training
queries (``routers/torch_utils.py``); prediction runs in numpy from the stored weights, so a saved router loads and
predicts without torch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from routecraft.data.schema import RoutingData
from routecraft.routers.base import Prediction, TabularRouter
from routecraft.routers.cost_model import CostModel, check_cost_model
from routecraft.routers.torch_utils import base_logits, one_thread, parse_hidden, sigmoid, train_bce
from routecraft.routers.validation import check_features, check_fitted, check_positive, fit_features, query_ids


class MLPRouter(TabularRouter):
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
        check_fitted(self, "layers_")
        n = len(query_ids(queries, self.name))
        X = check_features(X, n, self.name, self.dim_)
        h = (X - self.mu_) / self.sd_
        for i, (W, b) in enumerate(self.layers_):
            h = h @ W + b
            if i < len(self.layers_) - 1:
                h = np.maximum(h, 0.0)
        score = sigmoid(h.astype(np.float64))
        return Prediction(list(self.candidates), score, self.cost_model_.predict(X, n))
