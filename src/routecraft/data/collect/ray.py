"""``routecraft collect --executor ray``: the same cells, spread over a Ray cluster.

Each Ray task runs one chunk of cells with the same async worker as the local executor, against the endpoints it is
given (each node must reach them: a pool whose endpoints are on every node, or a shared inference service). The
driver writes each finished chunk as a shard, so resumption works exactly as for the local executor.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from routecraft.data.collect.local import QUEUE_AHEAD, run_cell
from routecraft.data.collect.store import Cell, CollectionStore, hardware_tag
from routecraft.pool.client import ChatClient
from routecraft.strategies import get_strategy
from routecraft.strategies.graders import grade


def _run_chunk(cells: list[Cell], queries: dict[str, dict], pool: Any, endpoints: dict[str, str],
               concurrency: int, timeout_s: float = 600.0) -> list[dict]:
    clients = {m: ChatClient(pool.get(m), base_url=endpoints.get(m), timeout=timeout_s)
               for m in {c.model for c in cells}}
    strategies = {s: get_strategy(s) for s in {c.strategy for c in cells}}
    hw = hardware_tag()

    async def main() -> list[dict]:
        sem = asyncio.Semaphore(concurrency + QUEUE_AHEAD)

        async def one(cell: Cell) -> dict:
            async with sem:
                return await run_cell(cell, queries[cell.query_id], clients[cell.model], strategies[cell.strategy],
                                      grade, hw)

        return list(await asyncio.gather(*(one(c) for c in cells)))

    return asyncio.run(main())


def run_with_ray(cells: list[Cell], queries: dict[str, dict], pool: Any, endpoints: dict[str, str],
                 store: CollectionStore, concurrency: int, chunk_size: int, on_done: Callable[[dict], None],
                 address: str | None = None, max_in_flight: int | None = None, timeout_s: float = 600.0) -> int:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise RuntimeError("--executor ray needs Ray: pip install 'routecraft[ray]'") from exc

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    try:
        remote = ray.remote(_run_chunk)
        chunks = [cells[i:i + chunk_size] for i in range(0, len(cells), chunk_size)]
        limit = max_in_flight or max(2, int(ray.cluster_resources().get("CPU", 2)))
        pending: list = []
        n = 0
        it = iter(chunks)
        for chunk in it:
            needed = {c.query_id for c in chunk}
            pending.append(remote.remote(chunk, {q: queries[q] for q in needed}, pool, endpoints, concurrency,
                                         timeout_s))
            if len(pending) >= limit:
                done, pending = ray.wait(pending, num_returns=1)
                n += _drain(ray.get(done), store, on_done)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            n += _drain(ray.get(done), store, on_done)
        return n
    finally:
        if started_here:
            ray.shutdown()


def _drain(results: list[list[dict]], store: CollectionStore, on_done: Callable[[dict], None]) -> int:
    n = 0
    for rows in results:
        store.append(rows)
        for r in rows:
            on_done(r)
        n += len(rows)
    return n
