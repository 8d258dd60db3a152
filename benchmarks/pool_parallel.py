"""Aggregate decode throughput of one local model with several parallel slots.

    python benchmarks/pool_parallel.py MODEL POLL THREADS SLOTS
    python benchmarks/pool_parallel.py smollm2-135m 0 2 4

Starts a private llama.cpp server, warms it up, then sends SLOTS concurrent greedy chat requests of exactly 128
output tokens and prints output tokens per second over all of them.
"""

import asyncio
import sys
import time

from routecraft.pool.client import ChatClient
from routecraft.pool.config import load_pool
from routecraft.pool.server import serve_local


def main() -> None:
    name, poll, threads, slots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    ref = load_pool("local").get(name)
    with serve_local(name, threads=threads, poll=poll, parallel=slots) as srv:
        client = ChatClient(ref, base_url=srv.base_url)

        async def go() -> None:
            msgs = [{"role": "user", "content": "Write a long story about a cat."}]
            await client.chat(msgs, max_tokens=16)
            t0 = time.perf_counter()
            rs = await asyncio.gather(*[client.chat(msgs, max_tokens=128, ignore_eos=True) for _ in range(slots)])
            dt = time.perf_counter() - t0
            print(f"{name} poll={poll} threads={threads} slots={slots} "
                  f"aggregate {sum(r.output_tokens for r in rs) / dt:.1f} tok/s")

        asyncio.run(go())


if __name__ == "__main__":
    main()
