"""Collect outcomes with real models: every (query, model, strategy, budget) cell is run, graded, and appended.

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
import json
import logging
import os
import platform
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from routecraft.data.schema import DEFAULT, RoutingData, validate_outcomes, validate_queries

log = logging.getLogger(__name__)

#: requests kept waiting in a backend's queue beyond ``concurrency`` (see _run_local)
QUEUE_AHEAD = 1

ROW_COLUMNS = ["query_id", "model", "strategy", "budget", "score", "input_tokens", "output_tokens",
               "tokens_estimated", "cost_usd", "latency_s", "response", "prediction", "finish_reason", "error",
               "hardware", "collected_at"]


@dataclass(frozen=True)
class Cell:
    query_id: str
    model: str
    strategy: str
    budget: int | None

    @property
    def key(self) -> tuple:
        return (self.query_id, self.model, self.strategy, -1 if self.budget is None else int(self.budget))


def _row_key(r: dict | pd.Series) -> tuple:
    b = r["budget"]
    return (r["query_id"], r["model"], r["strategy"] or DEFAULT, -1 if b is None or pd.isna(b) else int(b))


def hardware_tag() -> str:
    """What the rows were produced on, e.g. 'cpu:2:x86_64' or 'gpu:NVIDIA H100' (ROUTECRAFT_HARDWARE overrides)."""
    if os.environ.get("ROUTECRAFT_HARDWARE"):
        return os.environ["ROUTECRAFT_HARDWARE"]
    return f"cpu:{os.cpu_count()}:{platform.machine()}"


class CollectionStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.shards = self.root / "shards"

    # -- queries ----------------------------------------------------------------------------------------------
    def init_queries(self, queries: pd.DataFrame) -> pd.DataFrame:
        """Merge ``queries`` into the stored ones (a later run may add queries; existing ones must not change)."""
        queries = validate_queries(queries, file="<collection queries>")
        self.root.mkdir(parents=True, exist_ok=True)
        f = self.root / "queries.parquet"
        if f.exists():
            old = validate_queries(pd.read_parquet(f), file=str(f))
            merged = old.merge(queries, on="query_id", how="inner", suffixes=("", "_new"))
            changed = merged[merged["text"] != merged["text_new"]]
            if len(changed):
                raise ValueError(f"{f}: query {changed['query_id'].iloc[0]!r} already collected with another text; "
                                 "use a new --out folder for a different query set")
            queries = pd.concat([old, queries[~queries["query_id"].isin(old["query_id"])]], ignore_index=True)
        tmp = f.with_suffix(".tmp")
        queries.to_parquet(tmp, index=False)
        os.replace(tmp, f)
        return queries

    def queries(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / "queries.parquet")

    # -- rows -------------------------------------------------------------------------------------------------
    def shard_files(self) -> list[Path]:
        return sorted(self.shards.glob("part-*.parquet")) if self.shards.exists() else []

    def rows(self) -> pd.DataFrame:
        """Every collected row: the compacted table first, then the shards, each key once."""
        parts = []
        base = self.root / "outcomes.parquet"
        if base.exists():
            parts.append(pd.read_parquet(base))
        parts += [pd.read_parquet(f) for f in self.shard_files()]
        if not parts:
            return pd.DataFrame(columns=ROW_COLUMNS)
        df = pd.concat(parts, ignore_index=True)
        keys = pd.Series([_row_key(r) for r in df[["query_id", "model", "strategy", "budget"]].to_dict("records")])
        return df[~keys.duplicated().to_numpy()].reset_index(drop=True)

    def done_keys(self) -> set[tuple]:
        df = self.rows()
        return {_row_key(r) for r in df[["query_id", "model", "strategy", "budget"]].to_dict("records")}

    def append(self, rows: list[dict]) -> Path | None:
        if not rows:
            return None
        self.shards.mkdir(parents=True, exist_ok=True)
        df = pd.DataFrame(rows, columns=ROW_COLUMNS)
        df["budget"] = df["budget"].astype("Int64")
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.shards / (name + ".tmp")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, self.shards / name)
        return self.shards / name

    def compact(self, meta: dict | None = None) -> RoutingData:
        """Fold the shards into outcomes.parquet (+ meta.json), then delete the folded shards."""
        q = validate_queries(self.queries(), file=str(self.root / "queries.parquet"))
        folded = self.shard_files()
        o = self.rows()
        o = validate_outcomes(o, file=str(self.shards), query_ids=set(q["query_id"]))
        o = o.sort_values(["query_id", "model", "strategy", "budget"], na_position="first").reset_index(drop=True)
        o.to_parquet(self.root / "outcomes.parquet.tmp", index=False, compression="zstd")
        os.replace(self.root / "outcomes.parquet.tmp", self.root / "outcomes.parquet")
        for f in folded:
            f.unlink(missing_ok=True)
        old = json.loads((self.root / "meta.json").read_text()) if (self.root / "meta.json").exists() else {}
        old.update(meta or {})
        old["n_outcomes"] = int(len(o))
        (self.root / "meta.json").write_text(json.dumps(old, indent=2, default=str))
        return RoutingData(q, o, old)


# ---- running one cell ----------------------------------------------------------------------------------------
async def run_cell(cell: Cell, query: dict, client: Any, strategy: Any, grade: Callable[[str, Any, Any], float],
                   hardware: str) -> dict:
    """Run one cell on its backend and grade it. Errors become a row with score 0 and the error text, so a
    cell that fails for a reason of the model's (not a transport fault) is recorded rather than retried forever."""
    t0 = time.perf_counter()
    choices = query.get("choices")
    run = await strategy.run(client, query["text"], task=query["task"], budget=cell.budget,
                             **({"choices": choices} if choices is not None else {}))
    score = float(grade(query["task"], run.answer, query.get("gold")))
    return {"query_id": cell.query_id, "model": cell.model, "strategy": cell.strategy, "budget": cell.budget,
            "score": score, "input_tokens": int(run.input_tokens), "output_tokens": int(run.output_tokens),
            "tokens_estimated": False, "cost_usd": float(client.model.cost(run.input_tokens, run.output_tokens)),
            "latency_s": float(time.perf_counter() - t0), "response": run.text,
            "prediction": None if run.answer is None else str(run.answer),
            "finish_reason": getattr(run, "finish_reason", None), "error": getattr(run, "error", None),
            "hardware": hardware, "collected_at": pd.Timestamp.now(tz="UTC").isoformat()}


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


async def _run_local(cells: list[Cell], queries: dict[str, dict], clients: dict[str, Any],
                     strategies: dict[str, Any], grade, store: CollectionStore, concurrency: int,
                     flush_every: int, on_done: Callable[[dict], None], failures: list[str]) -> int:
    from routecraft.pool.client import BackendError

    # one request more than the server runs at once waits in its queue, so a slot is refilled the moment a cell
    # finishes instead of idling while that cell is graded or its PAL program runs (measured: 0.89 -> see RESULTS)
    sem = asyncio.Semaphore(concurrency + QUEUE_AHEAD)
    buf: list[dict] = []
    n = 0
    hw = hardware_tag()

    async def one(cell: Cell) -> dict | None:
        async with sem:
            try:
                return await run_cell(cell, queries[cell.query_id], clients[cell.model], strategies[cell.strategy],
                                      grade, hw)
            except BackendError as exc:
                # the backend failed after its retries: no answer to record; the cell stays missing and the next
                # run retries it
                failures.append(f"{cell.query_id} {cell.model} {cell.strategy} {cell.budget}: {exc}")
                log.warning("cell failed, left for the next run: %s", failures[-1])
                return None

    pending: set = set()

    async def harvest() -> None:
        nonlocal pending, buf, n
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for d in done:
            row = d.result()
            if row is None:
                continue
            buf.append(row)
            on_done(row)
            n += 1
        if len(buf) >= flush_every:
            store.append(buf)
            buf = []

    current = None
    for cell in cells:
        if cell.model != current:
            # a backend's cells all finish before the next backend's start: local llama.cpp servers share the CPU,
            # and two of them decoding at once put 4 busy threads on 2 cores (seen in the collection at every switch
            # of model, for as long as the previous model's slowest cell ran)
            while pending:
                await harvest()
            current = cell.model
        pending.add(asyncio.ensure_future(one(cell)))
        # keep at most 2×concurrency tasks scheduled so a kill loses little and memory stays flat
        if len(pending) >= 2 * concurrency:
            await harvest()
    while pending:
        await harvest()
    store.append(buf)
    return n


def collect(pool: Any, queries: pd.DataFrame, models: Sequence[str], strategies: Sequence[str],
            budgets: Sequence[int | None], out: str | Path, concurrency: int = 2, flush_every: int = 8,
            executor: str = "local", progress: Callable[[int, int, dict | None], None] | None = None,
            endpoints: dict[str, str] | None = None, ray_address: str | None = None, chunk_size: int = 16,
            timeout_s: float = 600.0) -> dict:
    """Run every missing cell; return counts. ``endpoints`` maps model name -> base_url (defaults to the pool's)."""
    from routecraft.evaluate.graders import grade
    from routecraft.strategies import get_strategy

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
            from routecraft.pool.client import ChatClient

            # generous timeout: on a loaded CPU a 512-token generation can take minutes, and a timed-out request
            # retried only adds load
            clients = {m: ChatClient(pool.get(m), base_url=(endpoints or {}).get(m), timeout=timeout_s)
                       for m in models}
            asyncio.run(_run_local(todo, qmap, clients, strat_objs, grade, store, concurrency, flush_every, on_done,
                                   failures))
        elif executor == "ray":
            from routecraft.data.collect_ray import run_with_ray

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
    from routecraft.data.importers import gsm8k_questions

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


__all__ = ["Cell", "CollectionStore", "collect", "hardware_tag", "load_queries", "parse_budgets", "plan_cells",
           "run_cell"]
