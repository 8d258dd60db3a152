"""The local executor of ``routecraft collect``: asyncio, one backend busy at a time, a bounded queue per backend.

:func:`run_cell` runs and grades one cell (the Ray executor uses it too); :func:`run_local` runs a list of cells and
appends their rows to the store in shards as they finish.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Callable

import pandas as pd

from routecraft.data.collect.store import Cell, CollectionStore, hardware_tag
from routecraft.data.query_text import query_choices
from routecraft.pool.client import BackendError
from routecraft.strategies.answers import task_kind

log = logging.getLogger(__name__)

#: requests kept waiting in a backend's queue beyond ``concurrency`` (see run_local)
QUEUE_AHEAD = 1


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _runs_code(task: str, metric: str | None) -> bool:
    if metric is not None:
        return metric in ("code_eval", "code_exec")
    try:
        return task_kind(task) == "code"
    except (TypeError, ValueError):
        return False


async def run_cell(cell: Cell, query: dict, client: Any, strategy: Any, grade: Callable[..., float],
                   hardware: str, logprobs: bool = True) -> dict:
    """Run one cell on its backend and grade it. Errors become a row with score 0 and the error text, so a
    cell that fails for a reason of the model's (not a transport fault) is recorded rather than retried forever.

    The query's ``choices`` (if any) go to the strategy (listed as options) and the grader; its ``metric`` (if any:
    an LLMRouter metric name or a grader name) picks the grader instead of the task.

    The row also keeps what an observing router can see after the call: the extracted answer (``prediction``), the
    finish reason, whether a PAL program ran (``program_ok``), and the mean and minimum token log-probability of the
    output (``logprob_mean``, ``logprob_min``; asked for with ``logprobs``, empty where the backend returns none — a
    backend that refuses the field itself, a 400, is asked again without it)."""
    t0 = time.perf_counter()
    choices = query_choices(query.get("choices"))
    kw: dict[str, Any] = {"choices": choices} if choices is not None else {}
    # a backend that refuses the log-probabilities is asked again without them by the client (ChatClient._call)
    run = await strategy.run(client, query["text"], task=query["task"], budget=cell.budget,
                             **kw, **({"logprobs": True} if logprobs else {}))
    extra: dict[str, Any] = {}
    if choices is not None:
        extra["choices"] = choices
    if not _missing(query.get("metric")):
        extra["metric"] = str(query["metric"])
    if _runs_code(query["task"], extra.get("metric")):
        # the program and its tests run in the sandbox (up to its time limit): off the event loop, as PAL's run is
        score = float(await asyncio.to_thread(grade, query["task"], run.answer, query.get("gold"), **extra))
    else:
        score = float(grade(query["task"], run.answer, query.get("gold"), **extra))
    return {"query_id": cell.query_id, "model": cell.model, "strategy": cell.strategy, "budget": cell.budget,
            "score": score, "input_tokens": int(run.input_tokens), "output_tokens": int(run.output_tokens),
            "tokens_estimated": False, "cost_usd": float(client.model.cost(run.input_tokens, run.output_tokens)),
            "latency_s": float(getattr(run, "latency_s", None) or time.perf_counter() - t0), "response": run.text,
            "prediction": None if run.answer is None else str(run.answer),
            "finish_reason": getattr(run, "finish_reason", None), "error": getattr(run, "error", None),
            "program_ok": _program_ok(run), "logprob_mean": getattr(run, "logprob_mean", None),
            "logprob_min": getattr(run, "logprob_min", None),
            "hardware": hardware, "collected_at": pd.Timestamp.now(tz="UTC").isoformat()}


def _program_ok(run: Any) -> bool | None:
    """Whether the program of a PAL run ran to a value (None: no program was run)."""
    sb = getattr(getattr(run, "extraction", None), "sandbox", None)
    return None if sb is None else bool(sb.ok)


async def run_local(cells: list[Cell], queries: dict[str, dict], clients: dict[str, Any],
                    strategies: dict[str, Any], grade, store: CollectionStore, concurrency: int,
                    flush_every: int, on_done: Callable[[dict], None], failures: list[str]) -> int:
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
