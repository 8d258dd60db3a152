"""Checked inputs of the routers: training data, query features, queries, settings, "is it fitted".

Every check raises an error that names the router and says what is wrong, so a bad call fails where it is made.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from routecraft.data.schema import OutcomeMatrices, RoutingData
from routecraft.routers.base import Router


def training_matrices(data: RoutingData, who: str) -> OutcomeMatrices:
    """The (n × C) score/cost arrays of ``data``; a clear error when it is empty or incomplete."""
    if not isinstance(data, RoutingData):
        raise TypeError(f"{who}.fit needs a RoutingData, got {type(data).__name__}")
    if len(data.queries) == 0 or len(data.outcomes) == 0:
        raise ValueError(f"{who}.fit: the training data has no queries or no outcomes")
    m = data.matrices()  # raises DataValidationError naming the first missing (query, candidate) cell
    if len(m.candidates) == 0:
        raise ValueError(f"{who}.fit: the training data has no candidates")
    return m


def check_features(X: Any, n: int, who: str, dim: int | None = None) -> np.ndarray:
    """``X`` as a float32 (n, d) array; errors that say what is wrong with it."""
    if X is None:
        raise ValueError(f"{who} uses query features: pass X, one embedding row per query (got None)")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{who}: features must be a 2-D (n_queries, dim) array, got shape {X.shape}")
    if X.shape[0] != n:
        raise ValueError(f"{who}: {X.shape[0]} feature rows for {n} queries; X must have one row per query")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"{who}: features have dimension {X.shape[1]} but the router was fit on dimension {dim} "
                         "(same encoder for fit and predict?)")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"{who}: features must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float32, copy=False)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise ValueError(f"{who}: feature row {int(np.flatnonzero(bad)[0])} has NaN or infinite values")
    return X


def query_ids(queries: pd.DataFrame, who: str) -> list[str]:
    if not isinstance(queries, pd.DataFrame) or "query_id" not in queries.columns:
        raise ValueError(f"{who}.predict needs a queries DataFrame with a 'query_id' column")
    return queries["query_id"].astype(str).tolist()


def check_fitted(router: Router, attr: str) -> None:
    if not hasattr(router, attr):
        raise RuntimeError(f"{router.name} router is not fitted: call fit(data, X) first (or load_router)")


def check_positive(**kw: float) -> None:
    for k, v in kw.items():
        if not v > 0:
            raise ValueError(f"{k} must be > 0, got {v!r}")


def is_binary(score: np.ndarray) -> bool:
    return bool(np.isin(score, (0.0, 1.0)).all())


def validate_config(cls: type[BaseModel], who: str, params: dict) -> dict:
    try:
        return cls(**params).model_dump()
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '?'}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{who} router: invalid settings: {problems}") from None


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
