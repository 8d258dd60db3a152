"""Training helpers of the small learned routers: BLAS and torch on one thread, the BCE training loop in torch,
output biases at the base rates, the numpy sigmoid used at prediction time, and hidden-layer widths.

torch is imported inside the functions that train, so a saved router loads and predicts without it.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, Sequence

import numpy as np


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run BLAS/OpenMP (numpy, scikit-learn) on one thread. The problems here are small (thousands of rows,
    hundreds of features): on a shared 2-core machine one thread was 12× faster than two fighting each other."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


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


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))
