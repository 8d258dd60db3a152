"""One llama.cpp OpenAI-compatible server process (xllamacpp), started by routecraft.pool.server.

Run as ``python -m routecraft.pool._worker --model PATH --alias NAME --ready-file FILE [...]``. It loads the model,
listens on 127.0.0.1 (port 0 = the OS picks a free one), writes its address to the ready file, and serves until
SIGTERM/SIGINT (or, with --parent-pid, until that process is gone).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_threads() -> int:
    """Half the logical cores (at least 1). On a shared 2-core machine one llama.cpp thread measured 4-5x faster
    than two (threads spinning at barriers lose to other processes); half the logical cores ~ the physical ones."""
    return max(1, (os.cpu_count() or 2) // 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m routecraft.pool._worker")
    ap.add_argument("--model", required=True)
    ap.add_argument("--alias", required=True)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--poll", type=int, default=0, help="llama.cpp busy-wait level 0-100 (0: sleep, shares CPU)")
    ap.add_argument("--parent-pid", type=int, default=0, help="exit when this process is gone (private servers)")
    args = ap.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())

    import xllamacpp as xlc

    threads = args.threads
    if threads <= 0:
        threads = int(os.environ.get("ROUTECRAFT_THREADS") or 0) or default_threads()
    p = xlc.CommonParams()
    p.model.path = args.model
    p.model_alias = {args.alias}
    p.hostnames = [args.host]
    p.port = args.port
    p.n_parallel = max(1, args.parallel)
    p.n_ctx = args.ctx * p.n_parallel  # llama.cpp splits n_ctx across slots: give each slot args.ctx
    p.n_batch = args.batch
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.cpuparams.poll = args.poll
    p.cpuparams_batch.poll = args.poll
    p.endpoint_metrics = True
    t0 = time.perf_counter()
    server = xlc.Server(p)
    address = server.listening_address
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"address": address, "pid": os.getpid(), "load_s": time.perf_counter() - t0,
                   "threads": threads}, f)
    os.replace(tmp, args.ready_file)
    print(f"routecraft worker: {args.alias} listening on {address}", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        if args.parent_pid and not _alive(args.parent_pid):
            print("routecraft worker: parent process is gone; stopping", file=sys.stderr, flush=True)
            break
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
