"""Collect outcomes with real models: every (query, model, strategy, budget) cell is run, graded, and appended.

Modules: ``store`` (the collection folder and its cells), ``local`` (the asyncio executor, and running one cell),
``ray`` (the same cells spread over a Ray cluster). This module plans a run and picks the executor.

Storage (one folder):

* ``queries.parquet`` — the queries being collected;
* ``shards/part-*.parquet`` — appended rows; each shard is written to a temporary name and renamed, so a kill
  never leaves a half-written shard;
* ``outcomes.parquet`` + ``meta.json`` — written by :meth:`CollectionStore.compact` (after each run), making the
  folder a routecraft data folder that ``RoutingData.load`` and ``routecraft bench --data`` read. Compaction folds
  the shards into ``outcomes.parquet`` and then deletes them, so the folder stays compact enough to commit.

Resumption: the key of a cell is (query_id, model, strategy, budget). On start, the keys already in
``outcomes.parquet`` or the shards are skipped; rows still in memory at a kill are simply run again. A kill between
writing ``outcomes.parquet`` and deleting the folded shards leaves the same rows in both: they are read once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from routecraft.data.collect.local import QUEUE_AHEAD, run_cell, run_local
from routecraft.data.collect.ray import run_with_ray
from routecraft.data.collect.store import ROW_COLUMNS, Cell, CollectionStore, hardware_tag
from routecraft.data.importers import gsm8k_questions
from routecraft.data.schema import DEFAULT, validate_queries
from routecraft.pool.client import ChatClient
from routecraft.strategies import get_strategy
from routecraft.strategies.graders import grade


def plan_cells(query_ids: Sequence[str], models: Sequence[str], strategies: Sequence[str],
               budgets: Sequence[int | None]) -> list[Cell]:
    """Cells ordered model by model (one backend busy at a time), then by query, strategy and budget."""
    return [Cell(q, m, s, b) for m in models for q in query_ids for s in strategies for b in budgets]


def parse_budgets(spec: str | Iterable[str | int | None]) -> list[int | None]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[int | None] = []
    for it in items:
        if it is None or str(it).strip().lower() in (DEFAULT, "none", ""):
            out.append(None)
            continue
        try:
            v = int(str(it).strip())
        except ValueError:
            raise ValueError(f"budget {it!r} is not a positive integer or 'default'") from None
        if v <= 0:
            raise ValueError(f"budget {v} must be positive")
        out.append(v)
    return out


def collect(pool: Any, queries: pd.DataFrame, models: Sequence[str], strategies: Sequence[str],
            budgets: Sequence[int | None], out: str | Path, concurrency: int = 2, flush_every: int = 8,
            executor: str = "local", progress: Callable[[int, int, dict | None], None] | None = None,
            endpoints: dict[str, str] | None = None, ray_address: str | None = None, chunk_size: int = 16,
            timeout_s: float = 600.0) -> dict:
    """Run every missing cell; return counts. ``endpoints`` maps model name -> base_url (defaults to the pool's)."""
    store = CollectionStore(out)
    queries = store.init_queries(queries)
    unknown = [m for m in models if m not in {pm.name for pm in pool.models}]
    if unknown:
        raise ValueError(f"models {unknown} are not in pool {pool.name!r} ({[m.name for m in pool.models]})")
    strat_objs = {s: get_strategy(s) for s in strategies}
    cells = plan_cells(queries["query_id"].tolist(), models, strategies, budgets)
    done = store.done_keys()
    todo = [c for c in cells if c.key not in done]
    total, skipped = len(cells), len(cells) - len(todo)
    if progress:
        progress(skipped, total, None)
    qmap = {r["query_id"]: r for r in queries.to_dict("records")}
    counter = {"n": skipped}

    def on_done(row: dict) -> None:
        counter["n"] += 1
        if progress:
            progress(counter["n"], total, row)

    t0 = time.perf_counter()
    failures: list[str] = []
    if todo:
        if executor == "local":
            # generous timeout: on a loaded CPU a 512-token generation can take minutes, and a timed-out request
            # retried only adds load
            clients = {m: ChatClient(pool.get(m), base_url=(endpoints or {}).get(m), timeout=timeout_s)
                       for m in models}
            asyncio.run(run_local(todo, qmap, clients, strat_objs, grade, store, concurrency, flush_every, on_done,
                                   failures))
        elif executor == "ray":
            run_with_ray(todo, qmap, pool, endpoints or {}, store, concurrency, chunk_size, on_done,
                         address=ray_address, timeout_s=timeout_s)
        else:
            raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    elapsed = time.perf_counter() - t0
    meta = {"source": "routecraft collect", "pool": pool.name, "models": list(models),
            "strategies": list(strategies), "budgets": [b if b is not None else DEFAULT for b in budgets]}
    rd = store.compact(meta={"last_run": meta})
    return {"cells": total, "skipped": skipped, "ran": len(todo) - len(failures), "failed": len(failures),
            "failures": failures[:20], "elapsed_s": elapsed,
            "outcomes": len(rd.outcomes), "out": str(store.root)}


def gsm8k_queries(split: str = "test", limit: int | None = None, offset: int = 0, path: str | Path | None = None
                  ) -> pd.DataFrame:
    """GSM8K questions with gold answers (RouteLLM's copy; ids as ZeroEval's: gsm8k-main-<split>-#i)."""
    df = gsm8k_questions(split, path=path)
    return df.iloc[offset: None if limit is None else offset + limit].reset_index(drop=True)


def load_queries(spec: str, limit: int | None = None, offset: int = 0) -> pd.DataFrame:
    """``gsm8k-test`` / ``gsm8k-train`` or a JSONL/CSV/Parquet file with query_id, text, task (and gold)."""
    if spec in ("gsm8k-test", "gsm8k-train"):
        return gsm8k_queries(spec.split("-")[1], limit=limit, offset=offset)
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"--data {spec!r}: not 'gsm8k-test', 'gsm8k-train' or an existing file")
    if p.suffix == ".jsonl":
        df = pd.read_json(p, lines=True)
    elif p.suffix == ".csv":
        df = pd.read_csv(p)
    elif p.suffix == ".parquet":
        df = pd.read_parquet(p)
    else:
        raise ValueError(f"{p}: queries must be .jsonl, .csv or .parquet")
    if "question" in df.columns and "text" not in df.columns:
        df = df.rename(columns={"question": "text"})
    if "query_id" not in df.columns:
        df["query_id"] = [f"{p.stem}-{i}" for i in range(len(df))]
    if "task" not in df.columns:
        df["task"] = "general"
    df = validate_queries(df, file=str(p))
    return df.iloc[offset: None if limit is None else offset + limit].reset_index(drop=True)


__all__ = ["QUEUE_AHEAD", "ROW_COLUMNS", "Cell", "CollectionStore", "collect", "gsm8k_queries", "hardware_tag",
           "load_queries", "parse_budgets", "plan_cells", "run_cell"]
