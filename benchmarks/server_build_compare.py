"""Decode speed of xllamacpp's prebuilt server against another llama.cpp `llama-server` binary (e.g. a native
build), one server at a time, same model, threads, prompt and length.

    python benchmarks/server_build_compare.py --model smollm2-135m --bin /path/to/llama-server [--rounds 2 --reps 3]

Each round starts the binary, generates --reps times (greedy, --tokens tokens, EOS ignored, no prompt cache), stops
it, then does the same with xllamacpp through routecraft's pool. Prints llama.cpp's own decode tok/s per rep.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time

import httpx


def _gen(url: str, n: int) -> float:
    r = httpx.post(url + "/v1/completions", json={"prompt": "Once upon a time", "max_tokens": n, "temperature": 0,
                                                  "ignore_eos": True, "cache_prompt": False}, timeout=600).json()
    return float(r["timings"]["predicted_per_second"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--bin", required=True, help="path of a llama-server binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from routecraft.pool.models import install
    from routecraft.pool.server import serve_local

    path = install(args.model)[args.model]
    for rnd in range(args.rounds):
        port = _free_port()
        p = subprocess.Popen([args.bin, "-m", str(path), "--port", str(port), "-t", str(args.threads), "-c", "2048",
                              "-np", "1", "--host", "127.0.0.1", "--poll", "0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            other = [_gen(url, args.tokens) for _ in range(args.reps)]
        finally:
            p.terminate()
            p.wait()
        with serve_local(args.model, ctx=2048, parallel=1, threads=args.threads) as srv:
            xl = [_gen(srv.root_url, args.tokens) for _ in range(args.reps)]
        print(f"round {rnd} {args.model}: {os.path.basename(args.bin)} {[round(x, 1) for x in other]} tok/s, "
              f"xllamacpp {[round(x, 1) for x in xl]} tok/s, load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
