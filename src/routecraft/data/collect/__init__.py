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

Strategies per task: ``strategies`` is a list of names (every query runs all of them, as before), ``"auto"`` (each
query runs ``strategies_for(task)``: no PAL on trivia, no CoD on a recall question), ``"auto:direct,pal"`` (the
names of the list that apply to the task) or a mapping task -> names. ``multitask`` loads LLMRouter's 14-task
queries (``load_queries("llmrouter-train:50")``).

Resumption: the key of a cell is (query_id, model, strategy, budget). On start, the keys already in
``outcomes.parquet`` or the shards are skipped; rows still in memory at a kill are simply run again. A kill between
writing ``outcomes.parquet`` and deleting the folded shards leaves the same rows in both: they are read once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import pandas as pd

from routecraft.data.collect.local import QUEUE_AHEAD, run_cell, run_local
from routecraft.data.collect.multitask import llmrouter_queries, parse_llmrouter_spec
from routecraft.data.collect.ray import run_with_ray
from routecraft.data.collect.store import ROW_COLUMNS, Cell, CollectionStore, hardware_tag
from routecraft.data.importers import gsm8k_questions
from routecraft.data.schema import DEFAULT, validate_queries
from routecraft.pool.client import ChatClient
from routecraft.strategies import get_strategy, strategies_for
from routecraft.strategies.graders import grade

#: what ``strategies`` may be: names for every query, "auto" / "auto:<names>", or task -> names
StrategySpec = Union[str, Sequence[str], Mapping[str, Sequence[str]]]


def strategies_per_task(spec: StrategySpec, task: str) -> list[str]:
    """The strategies a query of ``task`` runs under ``spec`` (see the module docstring)."""
    if isinstance(spec, str):
        head, _, names = spec.partition(":")
        if head.strip().lower() == "auto":
            auto = strategies_for(task)
            if not names.strip():
                return auto
            wanted = [n.strip().lower() for n in names.split(",") if n.strip()]
            return [n for n in wanted if n in auto]
        return [n.strip() for n in spec.split(",") if n.strip()]
    if isinstance(spec, Mapping):
        if task not in spec:
            raise ValueError(f"strategies: no entry for task {task!r} (has {', '.join(map(str, spec))})")
        return list(spec[task])
    return list(spec)


def plan_cells(query_ids: Sequence[str], models: Sequence[str], strategies: StrategySpec,
               budgets: Sequence[int | None], tasks: Sequence[str] | None = None) -> list[Cell]:
    """Cells ordered model by model (one backend busy at a time), then by query, strategy and budget.

    ``strategies``: names run for every query, or (with ``tasks``, the task of each query) ``"auto"``,
    ``"auto:<names>"`` or a mapping task -> names, resolved per query by :func:`strategies_per_task`."""
    if tasks is None:
        if isinstance(strategies, Mapping) or (isinstance(strategies, str)
                                                and strategies.strip().lower().startswith("auto")):
            raise ValueError("per-task strategies need the task of every query (tasks=...)")
        per_query = [strategies_per_task(strategies, "")] * len(query_ids)
    else:
        if len(tasks) != len(query_ids):
            raise ValueError(f"tasks: {len(tasks)} given for {len(query_ids)} queries")
        cache: dict[str, list[str]] = {}
        per_query = [cache.setdefault(t, strategies_per_task(strategies, t)) for t in tasks]
    return [Cell(q, m, s, b) for m in models for q, strats in zip(query_ids, per_query) for s in strats
            for b in budgets]


def check_strategies(cells: Sequence[Cell], tasks_of: Mapping[str, str]) -> dict[str, Any]:
    """The strategy objects of ``cells``; a ValueError names every (strategy, task) pair that cannot run (an unknown
    strategy, or one that does not apply to the task, as PAL to a code task), before any model is called."""
    objs: dict[str, Any] = {}
    bad: list[str] = []
    for s, t in sorted({(c.strategy, tasks_of[c.query_id]) for c in cells}):
        if s not in objs:
            objs[s] = get_strategy(s)
        try:
            objs[s].instruction(t)
        except ValueError as exc:
            bad.append(f"{s} on {t}: {exc}")
    if bad:
        raise ValueError("strategies that cannot run on their queries: " + "; ".join(bad[:10])
                         + " (strategies 'auto' runs on each task the strategies that apply to it)")
    return objs


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


def collect(pool: Any, queries: pd.DataFrame, models: Sequence[str], strategies: StrategySpec,
            budgets: Sequence[int | None], out: str | Path, concurrency: int = 2, flush_every: int = 8,
            executor: str = "local", progress: Callable[[int, int, dict | None], None] | None = None,
            endpoints: dict[str, str] | None = None, ray_address: str | None = None, chunk_size: int = 16,
            timeout_s: float = 600.0) -> dict:
    """Run every missing cell; return counts. ``endpoints`` maps model name -> base_url (defaults to the pool's).
    ``strategies``: names for every query, or per task (``"auto"``, ``"auto:<names>"``, a mapping task -> names)."""
    unknown = [m for m in models if m not in {pm.name for pm in pool.models}]
    if unknown:
        raise ValueError(f"models {unknown} are not in pool {pool.name!r} ({[m.name for m in pool.models]})")
    queries = validate_queries(queries, file="<collection queries>")
    # refuse a strategy that cannot run on its queries before anything is written
    check_strategies(plan_cells(queries["query_id"].tolist(), models, strategies, budgets,
                                tasks=queries["task"].tolist()), dict(zip(queries["query_id"], queries["task"])))
    store = CollectionStore(out)
    asked = set(queries["query_id"])
    # the folder keeps every query it has seen (earlier runs' too); this run plans the queries asked for
    queries = store.init_queries(queries)
    tasks_of = dict(zip(queries["query_id"], queries["task"]))
    planned = queries[queries["query_id"].isin(asked)]
    cells = plan_cells(planned["query_id"].tolist(), models, strategies, budgets, tasks=planned["task"].tolist())
    strat_objs = check_strategies(cells, tasks_of)
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
            "strategies": list(dict.fromkeys(c.strategy for c in cells)),
            "budgets": [b if b is not None else DEFAULT for b in budgets]}
    if isinstance(strategies, (str, Mapping)):
        meta["strategies_spec"] = strategies if isinstance(strategies, str) else "per task"
        meta["strategies_per_task"] = {t: strategies_per_task(strategies, t) for t in dict.fromkeys(tasks_of.values())}
    rd = store.compact(meta={"last_run": meta})
    return {"cells": total, "skipped": skipped, "ran": len(todo) - len(failures), "failed": len(failures),
            "failures": failures[:20], "elapsed_s": elapsed,
            "outcomes": len(rd.outcomes), "out": str(store.root)}


def gsm8k_queries(split: str = "test", limit: int | None = None, offset: int = 0, path: str | Path | None = None
                  ) -> pd.DataFrame:
    """GSM8K questions with gold answers (RouteLLM's copy; ids as ZeroEval's: gsm8k-main-<split>-#i)."""
    df = gsm8k_questions(split, path=path)
    return df.iloc[offset: None if limit is None else offset + limit].reset_index(drop=True)


def load_queries(spec: str, limit: int | None = None, offset: int = 0, *, per_task: int | None = None,
                 seed: int = 0, tasks: Sequence[str] | None = None) -> pd.DataFrame:
    """``gsm8k-test`` / ``gsm8k-train``; ``llmrouter-train`` / ``llmrouter-test`` (LLMRouter's 14 tasks, see
    ``multitask``), ``llmrouter-train:N`` = N per task (or ``per_task=N``) drawn with ``seed``, ``tasks`` = only
    these; or a JSONL/CSV/Parquet file with query_id, text, task (and gold). ``offset``/``limit`` apply last."""
    multi = parse_llmrouter_spec(spec)
    if multi is None and (per_task is not None or tasks is not None):
        raise ValueError(f"--data {spec!r}: sampling per task and choosing tasks work for llmrouter-train/-test only")
    if spec in ("gsm8k-test", "gsm8k-train"):
        return gsm8k_queries(spec.split("-")[1], limit=limit, offset=offset)
    if multi is not None:
        split, n = multi
        if n is not None and per_task is not None and n != per_task:
            raise ValueError(f"--data {spec!r} says {n} per task, per_task says {per_task}")
        df = llmrouter_queries(split, per_task=n or per_task, seed=seed, tasks=tasks)
        return df.iloc[offset: None if limit is None else offset + limit].reset_index(drop=True)
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"--data {spec!r}: not 'gsm8k-test', 'gsm8k-train', 'llmrouter-train[:N]', "
                                f"'llmrouter-test[:N]' or an existing file")
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


__all__ = ["QUEUE_AHEAD", "ROW_COLUMNS", "Cell", "CollectionStore", "check_strategies", "collect", "gsm8k_queries",
           "hardware_tag", "llmrouter_queries", "load_queries", "parse_budgets", "plan_cells", "run_cell",
           "strategies_per_task"]
