"""Generation throughput of the local pool on this machine, through routecraft's own client.

For each local model: start a private llama.cpp server (time to /health ok = "start"), one warm-up call, then
``--reps`` greedy chat calls of exactly ``--tokens`` output tokens (ignore_eos). Prints, per model, the median of:
end-to-end tok/s (output tokens / client latency, prompt processing included), decode tok/s (llama.cpp's own
timings.predicted_per_second) and prompt tok/s.

    python benchmarks/pool_throughput.py [--models smollm2-135m,...] [--tokens 128] [--reps 3] [--threads 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

from routecraft.pool.client import ChatClient
from routecraft.pool.config import load_pool
from routecraft.pool.server import serve_local

PROMPT = [{"role": "user", "content": "Write a detailed essay about the history of computing, from the abacus "
                                      "to modern processors."}]


async def measure(model, base_url: str, tokens: int, reps: int) -> dict:
    async with ChatClient(model, base_url, timeout=600) as c:
        await c.chat(PROMPT, max_tokens=8, ignore_eos=True)  # warm-up
        e2e, decode, prompt = [], [], []
        for _ in range(reps):
            r = await c.chat(PROMPT, max_tokens=tokens, temperature=0.0, ignore_eos=True, cache_prompt=False)
            e2e.append(r.output_tokens / r.latency_s)
            t = r.raw.get("timings") or {}
            decode.append(t.get("predicted_per_second", float("nan")))
            prompt.append(t.get("prompt_per_second", float("nan")))
        return {"output_tokens": r.output_tokens, "input_tokens": r.input_tokens,
                "e2e_tok_s": statistics.median(e2e), "decode_tok_s": statistics.median(decode),
                "prompt_tok_s": statistics.median(prompt)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default="local")
    ap.add_argument("--models", default=None, help="comma-separated (default: all local models of the pool)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="0 = the server default (half the logical cores)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    pool = load_pool(args.pool)
    names = args.models.split(",") if args.models else [m.name for m in pool.models if m.local]
    rows = []
    print(f"cores={os.cpu_count()} threads={args.threads or 'default'} tokens={args.tokens} reps={args.reps} "
          f"load={os.getloadavg()[0]:.2f}", file=sys.stderr)
    for name in names:
        model = pool.get(name)
        t0 = time.perf_counter()
        with serve_local(model, threads=args.threads, ctx=2048) as srv:
            start_s = time.perf_counter() - t0
            res = asyncio.run(measure(model, srv.base_url, args.tokens, args.reps))
        res.update(model=name, start_s=start_s, threads=srv.threads, load=os.getloadavg()[0])
        rows.append(res)
        print(f"{name:20s} start {start_s:5.1f}s  e2e {res['e2e_tok_s']:6.1f} tok/s  decode "
              f"{res['decode_tok_s']:6.1f} tok/s  prompt {res['prompt_tok_s']:6.1f} tok/s  "
              f"({res['input_tokens']} in, {res['output_tokens']} out, {srv.threads} thr, load {res['load']:.1f})",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
