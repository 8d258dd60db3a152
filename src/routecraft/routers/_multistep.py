"""What the multi-step routers (Router-R1, R2-Reasoner) share behind routecraft's router interface.

They are not fit on an outcomes table: they train from their own config on the live pool (``train_cli``; the CLI's
``routecraft train --router NAME``) and decide by *running* on the pool — a trajectory of consultations, or a plan of
subtasks — so ``decide`` executes, and each ``Decision`` carries the executed plan. Policies and servers are loaded or
started on the first run (never in the constructor) inside an ``ExitStack`` that ``close()`` unwinds.

Subclasses implement ``_start(stack, base_urls)`` (load policies, start or connect servers; return the runner),
``run_batch`` and ``decision``; they set ``training_note`` (how they are trained, for the error ``fit`` raises).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

import numpy as np
import pandas as pd

from routecraft.data.schema import Candidate, RoutingData
from routecraft.routers.base import Decision, Prediction, Router


class MultiStepRouter(Router):
    uses_features = False
    trains_itself = True
    #: how the router is trained, completing "NAME is trained by …" in the error ``fit`` raises
    training_note: ClassVar[str] = "its own training loop on the live pool"
    #: what ``decide``/``run`` do instead of predicting a score table, for the error ``predict`` raises
    running_note: ClassVar[str] = "execute the plan on the pool"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._runner: Any = None
        self._stack: Optional[contextlib.ExitStack] = None

    # ---- learning: not tabular ---------------------------------------------------------------------------------
    def fit(self, data: RoutingData, X: np.ndarray | None = None) -> "MultiStepRouter":
        raise NotImplementedError(f"{self.name} is trained by {self.training_note}, not fit on an outcomes table: use "
                                  f"`routecraft train --router {self.name} --config CONFIG --out DIR`")

    def predict(self, queries: pd.DataFrame, X: np.ndarray | None = None) -> Prediction:
        raise NotImplementedError(f"{self.name} predicts no per-candidate score table; use decide() or run(), which "
                                  f"{self.running_note}")

    # ---- running -----------------------------------------------------------------------------------------------
    def _start(self, stack: contextlib.ExitStack, base_urls: Optional[dict[str, str]]) -> Any:
        """Load what routing needs, registering anything to stop on ``stack``; return the runner."""
        raise NotImplementedError

    def _ensure(self, base_urls: Optional[dict[str, str]] = None) -> Any:
        if self._runner is not None:
            return self._runner
        stack = contextlib.ExitStack()
        try:
            runner = self._start(stack, base_urls)
        except BaseException:
            stack.close()
            raise
        self._stack, self._runner = stack, runner
        return runner

    def connect(self, base_urls: dict[str, str]) -> "MultiStepRouter":
        """Use these servers (model name → base_url) instead of starting or looking up any."""
        self._ensure(base_urls)
        return self

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = None
        self._runner = None

    def run_batch(self, questions: Sequence[str]) -> list:
        raise NotImplementedError

    def decision(self, result: Any, lam: float = 0.0, max_cost: float | None = None) -> Decision:
        raise NotImplementedError

    def decide(self, queries: pd.DataFrame, X: np.ndarray | None = None, lam: float = 0.0,
               max_cost: float | None = None) -> list[Decision]:
        """Run each query on the pool. ``lam``/``max_cost`` are not used — the cost trade-off was fixed in training —
        and are recorded in each plan."""
        if "text" not in queries:
            raise ValueError(f"{self.name} decide: queries need a 'text' column")
        results = self.run_batch(queries["text"].astype(str).tolist())
        return [self.decision(r, lam=lam, max_cost=max_cost) for r in results]

    # ---- artifacts: everything is in the params (policy folders, config) -------------------------------------
    def pool_names(self) -> list[str]:
        """The pool models this router routes to (its candidates), from its config."""
        raise NotImplementedError

    def state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        return None

    def save(self, path: str | Path) -> Path:
        if not self.candidates:
            try:
                self.candidates = [Candidate(n) for n in self.pool_names()]
            except Exception:  # the pool may not be resolvable here; the artifact stays loadable
                self.candidates = []
        return super().save(path)


# ---- config helpers both routers' configs use --------------------------------------------------------------------
def check_models(v: Optional[list[str]]) -> Optional[list[str]]:
    """Validator of a config's ``models`` list: None (the pool's instruct models) or distinct names."""
    if v is not None and not v:
        raise ValueError("models must name at least one pool model (or be left out)")
    if v is not None and len(set(v)) != len(v):
        raise ValueError(f"models has duplicates: {v}")
    return v


def pool_models(pool_name: str, models: Optional[list[str]], label: str):
    """(the pool, the model names to route to: ``models`` or the pool's instruct models); errors name what is
    missing."""
    from routecraft.pool.config import load_pool

    pool = load_pool(pool_name)
    names = models or [m.name for m in pool.models if m.instruct]
    missing = [n for n in names if n not in pool]
    if missing:
        raise ValueError(f"{label} config: models {missing} are not in pool {pool.name!r} "
                         f"(models: {', '.join(pool.names)})")
    return pool, names


# ---- held-out evaluation both routers use --------------------------------------------------------------------------
def evaluate_in_batches(rows: Sequence[dict], run_chunk: Callable[[list[dict]], list[dict]], *, batch_size: int,
                        out_jsonl: Optional[str | Path], score: Callable[[dict], float], label: str,
                        log: logging.Logger) -> list[dict]:
    """The records ``run_chunk(chunk)`` returns (one per row, in order) for ``rows`` in batches of ``batch_size``.
    Each record is written to ``out_jsonl`` as it comes (a stopped evaluation keeps what it did), and each batch logs
    progress with the mean ``score`` so far."""
    recs: list[dict] = []
    t0 = time.time()
    with (open(out_jsonl, "w") if out_jsonl is not None else contextlib.nullcontext()) as f:
        for i in range(0, len(rows), batch_size):
            for rec in run_chunk(list(rows[i: i + batch_size])):
                recs.append(rec)
                if f is not None:
                    f.write(json.dumps(rec, default=str) + "\n")
                    f.flush()
            el = time.time() - t0
            log.info("eval: %d/%d questions, %s so far %.3f, %.0fs elapsed, eta %.0fs", len(recs), len(rows), label,
                     sum(score(r) for r in recs) / len(recs), el, el / len(recs) * (len(rows) - len(recs)))
    return recs
